"""``python -m functions.dispatch``: run the dispatch loop (health and metrics on ``HADES_DISPATCH_PORT``, 8082)."""

from functions.dispatch.handlers import create_app
from runtime import entry

if __name__ == "__main__":
    entry.serve("dispatch", create_app, lambda settings: settings.http.dispatch_port)
