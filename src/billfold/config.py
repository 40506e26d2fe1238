"""Runtime settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path(".billfold")


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    log_level: str
    run_worker_in_server: bool

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
        )
