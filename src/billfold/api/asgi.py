"""The ASGI entry point for servers: `billfold.api.asgi:app`."""

import gc

from billfold.api.app import create_app
from billfold.config import Settings
from billfold.observability import configure_logging

configure_logging(Settings.from_env().log_level)
app = create_app()

# A server process from here on. Everything alive now (modules, routes,
# schemas, the mapper registry: some 200,000 objects) lives as long as it
# does: out of the collector's generations, a full collection no longer walks
# them (that walk cost ~15 us per ingested event, a quarter of the ingest
# CPU). And a young collection every 10,000 allocations rather than 700: one
# billed ingest request allocates a few hundred thousand objects.
gc.collect()
gc.freeze()
gc.set_threshold(10_000, *gc.get_threshold()[1:])
