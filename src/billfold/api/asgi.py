"""The ASGI entry point for servers: `billfold.api.asgi:app`."""

from billfold.api.app import create_app
from billfold.config import Settings
from billfold.observability import configure_logging
from billfold.serving import settle_garbage_collector

configure_logging(Settings.from_env().log_level)
app = create_app()
settle_garbage_collector()  # a server process from here on
