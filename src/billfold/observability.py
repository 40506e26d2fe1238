"""JSON logs that carry the request id, and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

from prometheus_client import Counter, Histogram
from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("billfold_request_id", default=None)

http_requests_total = Counter(
    "billfold_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
http_request_duration_seconds = Histogram(
    "billfold_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
webhook_attempts_total = Counter(
    "billfold_webhook_attempts_total", "Webhook delivery attempts", ["outcome"]
)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        # uvicorn's terminal copy of its message, escape codes and all: the
        # JSON line has the message once already.
        record.__dict__.pop("color_message", None)
        return True


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"
_LOG_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}
# The ASGI servers' own loggers: they lose their handlers and go through ours.
_SERVER_LOGGERS = ("_granian", "granian.access", "uvicorn", "uvicorn.error", "uvicorn.access")
# Our own access log carries the request id; the servers' would repeat it without.
_SERVER_ACCESS_LOGGERS = ("granian.access", "uvicorn.access")


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(_LOG_FORMAT, rename_fields=_LOG_RENAMES))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _SERVER_LOGGERS:
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = name not in _SERVER_ACCESS_LOGGERS
    for name in _SERVER_ACCESS_LOGGERS:
        # Nowhere to go, so that uvicorn (which asks) skips composing each line.
        logging.getLogger(name).setLevel(logging.WARNING)


def logging_dict_config(level: str = "INFO") -> dict[str, Any]:
    """`configure_logging` as a `logging.config.dictConfig` dictionary, for a
    server that applies its own (granian, in its supervisor and each worker)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": _RequestIdFilter}},
        "formatters": {
            "json": {"()": JsonFormatter, "fmt": _LOG_FORMAT, "rename_fields": _LOG_RENAMES}
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            name: {"handlers": [], "propagate": name not in _SERVER_ACCESS_LOGGERS}
            | ({"level": "WARNING"} if name in _SERVER_ACCESS_LOGGERS else {})
            for name in _SERVER_LOGGERS
        },
    }
