"""dispatch: pull jobs from the lanes, run their steps through the executor, publish status and log events."""
