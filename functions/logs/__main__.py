"""``python -m functions.logs``: collect job records and logs, serve them (port ``HADES_LOGS_PORT``, default 8081)."""

from functions.logs.handlers import create_app
from runtime import entry

if __name__ == "__main__":
    entry.serve("logs", create_app, lambda settings: settings.http.logs_port)
