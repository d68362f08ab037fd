"""One logging set-up for all three functions: plain, one line per record, prefixed with the function name."""

from __future__ import annotations

import logging.config


def configure_logging(service: str, level: str) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {
                    "format": f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
                    "datefmt": "%Y-%m-%dT%H:%M:%S",
                }
            },
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
            "root": {"handlers": ["stderr"], "level": level.upper()},
            # Access logs of every probe and scrape would drown the job lines.
            "loggers": {"aiohttp.access": {"level": "WARNING"}},
        }
    )
