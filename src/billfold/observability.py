"""JSON logs that carry the request id, and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

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
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our own access log carries the request id; uvicorn's would repeat it without.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
