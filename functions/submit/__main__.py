"""``python -m functions.submit``: serve the submit API (port ``HADES_SUBMIT_PORT``, default 8080)."""

from functions.submit.handlers import create_app
from runtime import entry

if __name__ == "__main__":
    entry.serve("submit", create_app, lambda settings: settings.http.submit_port, uvloop=True)
