"""The ASGI entry point for servers: `billfold.api.asgi:app`."""

from billfold.api.app import create_app
from billfold.observability import configure_logging
from billfold.config import Settings

configure_logging(Settings.from_env().log_level)
app = create_app()
