"""Runtime settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from billfold import limits

DEFAULT_DATA_DIR = Path(".billfold")


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    log_level: str
    run_worker_in_server: bool
    # How far back an ingested event's timestamp may be (the same for every
    # organization of the deployment).
    event_backfill_window_s: int = limits.event_backfill_window_default_s
    # Whether the wallet writer batches holds, captures and releases per wallet
    # (one lock, one commit for many). Off, each request is its own
    # transaction: the naive path, kept for benchmarks and for comparison.
    authorization_batching: bool = True

    @classmethod
    def from_env(cls) -> Settings:
        url = os.environ.get("BILLFOLD_DATABASE_URL", "").strip()
        if not url:
            DEFAULT_DATA_DIR.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{(DEFAULT_DATA_DIR / 'billfold.db').resolve()}"
        return cls(
            database_url=url,
            log_level=os.environ.get("BILLFOLD_LOG_LEVEL", "INFO").upper(),
            run_worker_in_server=os.environ.get("BILLFOLD_SERVE_WORKER", "1") != "0",
            event_backfill_window_s=_event_backfill_window_s(
                os.environ.get("BILLFOLD_EVENT_BACKFILL_WINDOW_S", "")
            ),
            authorization_batching=os.environ.get("BILLFOLD_AUTHORIZATION_BATCHING", "1") != "0",
        )


def _event_backfill_window_s(value: str) -> int:
    if not value.strip():
        return limits.event_backfill_window_default_s
    if not value.strip().isdigit() or not 0 < int(value) <= limits.event_backfill_window_max_s:
        raise ValueError(
            "BILLFOLD_EVENT_BACKFILL_WINDOW_S is a number of seconds from 1 to "
            f"{limits.event_backfill_window_max_s}."
        )
    return int(value)
