"""The gateway's ASGI entry point for servers: `billfold.gateway.asgi:app`.

`billfold gateway` passes its options to each server process through these
environment variables: `BILLFOLD_GATEWAY_UPSTREAM_OPENAI`,
`BILLFOLD_GATEWAY_UPSTREAM_ANTHROPIC`, `BILLFOLD_GATEWAY_HOLD_AMOUNT`,
`BILLFOLD_GATEWAY_ON_PROVIDER_ERROR`, `BILLFOLD_GATEWAY_LOOKUP_TTL_S`,
`BILLFOLD_GATEWAY_SETTLER_PROCESS`
(`1`: the command runs the settler process); provider keys come from
`OPENAI_API_KEY` and `ANTHROPIC_API_KEY`.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from billfold import limits
from billfold.api.context import AppContext
from billfold.config import Settings
from billfold.gateway.app import GatewayConfig, Upstream, create_gateway_app
from billfold.observability import configure_logging
from billfold.serving import settle_garbage_collector


def config_from_env() -> GatewayConfig:
    def upstream(url_variable: str, key_variable: str) -> Upstream | None:
        url = os.environ.get(url_variable, "").strip()
        return Upstream(url, os.environ.get(key_variable) or None) if url else None

    return GatewayConfig(
        openai=upstream("BILLFOLD_GATEWAY_UPSTREAM_OPENAI", "OPENAI_API_KEY"),
        anthropic=upstream("BILLFOLD_GATEWAY_UPSTREAM_ANTHROPIC", "ANTHROPIC_API_KEY"),
        hold_amount=os.environ.get("BILLFOLD_GATEWAY_HOLD_AMOUNT") or None,
        on_provider_error=os.environ.get("BILLFOLD_GATEWAY_ON_PROVIDER_ERROR", "release"),
        settler_process=os.environ.get("BILLFOLD_GATEWAY_SETTLER_PROCESS") == "1",
        lookup_ttl_s=float(
            os.environ.get("BILLFOLD_GATEWAY_LOOKUP_TTL_S") or limits.gateway_lookup_ttl_s
        ),
    )


def build() -> Starlette:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_gateway_app(AppContext.create(settings), config_from_env())


app = build()
settle_garbage_collector()  # a server process from here on
