"""logs (collect-logs): fold status and log events into job records, serve records and logs, send callbacks."""
