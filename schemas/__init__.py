"""Data package: the job JSON Schema and example payloads (read through ``runtime.schemas``)."""
