"""`billfold gateway` as a user runs it: its own process (uvicorn), the
database from BILLFOLD_DATABASE_URL, provider keys from OPENAI_API_KEY and
ANTHROPIC_API_KEY, the official SDKs pointed at it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from billfold import Billfold, limits
from billfold.observability import logging_dict_config
from tests.live import BIN, ROOT, billfold, create_org, free_port, server_env, servers
from tests.llm_support import fake_upstream, holds, llm_customer

HI = [{"role": "user", "content": "hi"}]
READY_TIMEOUT_S = 60


@contextlib.contextmanager
def gateway_process(database_url: str, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`billfold gateway` serving (its URL), stopped with SIGTERM afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "billfold"), "gateway", "--port", str(port), *args],
        env=server_env(
            database_url, OPENAI_API_KEY="sk-operator-openai", ANTHROPIC_API_KEY="sk-operator-an"
        ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "billfold gateway did not start"
            time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
        if process.stderr is not None:
            process.stderr.close()


def test_the_gateway_command_serves_both_providers(database_url: str) -> None:
    api_key = create_org(database_url)
    with fake_upstream() as upstream, servers(database_url) as [api]:
        with Billfold(api_key, base_url=api.base_url) as client:
            customer = llm_customer(client)
            key = client.customers.gateway_keys.create(customer)["key"]
        with gateway_process(
            database_url,
            "--upstream-openai",
            upstream.base_url,
            "--upstream-anthropic",
            upstream.base_url,
        ) as (url, _):
            with openai.OpenAI(api_key=key, base_url=url + "/v1", max_retries=0) as chat:
                parts = chat.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
                assert "".join(p.choices[0].delta.content or "" for p in parts)
            with anthropic.Anthropic(api_key=key, base_url=url, max_retries=0) as claude:
                answer = claude.messages.create(
                    model="claude-sonnet-4-6", max_tokens=10, messages=HI
                )
                assert answer.content
            heads = [seen.headers for seen in upstream.requests]
            assert heads[0]["authorization"] == "Bearer sk-operator-openai"
            assert heads[1]["x-api-key"] == "sk-operator-an"
        # Stopping the gateway lets it finish settling what it answered.
        assert [row[0] for row in holds(database_url)] == ["captured", "captured"]


def test_the_gateway_commands_settler_process_settles_calls_while_it_runs(
    database_url: str,
) -> None:
    api_key = create_org(database_url)
    with fake_upstream() as upstream, servers(database_url) as [api]:
        with Billfold(api_key, base_url=api.base_url) as client:
            customer = llm_customer(client)
            key = client.customers.gateway_keys.create(customer)["key"]
        with gateway_process(database_url, "--upstream-openai", upstream.base_url) as (url, _):
            with openai.OpenAI(api_key=key, base_url=url + "/v1", max_retries=0) as chat:
                for _ in range(3):
                    chat.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
            # The server process leaves fresh events to the settler; only it
            # can settle them this soon.
            deadline = time.monotonic() + limits.gateway_settlement_stale_s - 2
            while [row[0] for row in holds(database_url)] != ["captured"] * 3:
                assert time.monotonic() < deadline, holds(database_url)
                time.sleep(0.1)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_the_settler_process_does_not_outlive_a_killed_gateway(database_url: str) -> None:
    with (
        fake_upstream() as upstream,
        gateway_process(database_url, "--upstream-openai", upstream.base_url) as (_, process),
    ):
        children = _children(process.pid)
        # The gateway serves only once its settler is ready.
        [settler] = [p for p in children if "spawn_main" in _cmdline(p)]
        process.kill()  # no chance to stop its children
        process.wait(30)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{settler}").exists() and "spawn_main" in _cmdline(settler):
            assert time.monotonic() < deadline, "the settler outlived its gateway"
            time.sleep(0.1)
    finally:
        # Whatever the server (uvicorn's worker processes, with --workers)
        # does after a SIGKILL, this test leaves no process behind.
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_a_stopped_gateway_exits_after_its_settler(database_url: str) -> None:
    with (
        fake_upstream() as upstream,
        gateway_process(database_url, "--upstream-openai", upstream.base_url) as (_, process),
    ):
        [settler] = [p for p in _children(process.pid) if "spawn_main" in _cmdline(p)]
        process.terminate()
        assert process.wait(30) == 0
        # It stopped its settler (which ingests what is queued) and waited for it.
        assert "spawn_main" not in _cmdline(settler)


def test_the_gateway_command_needs_an_upstream(database_url: str) -> None:
    done = billfold(database_url, "gateway", "--port", str(free_port()))
    assert done.returncode != 0
    assert "--upstream-openai" in done.stderr


@pytest.mark.parametrize("policy", ["never"])
def test_the_gateway_command_checks_its_policy(database_url: str, policy: str) -> None:
    done = billfold(
        database_url, "gateway", "--upstream-openai", "http://x", "--on-provider-error", policy
    )
    assert done.returncode != 0
    assert "charge_input" in done.stderr


def test_a_server_log_line_is_one_json_object_without_uvicorns_coloured_copy() -> None:
    handler = logging.StreamHandler(io.StringIO())
    config = logging_dict_config("INFO")
    formatter = config["formatters"]["json"]
    handler.setFormatter(
        formatter["()"](formatter["fmt"], rename_fields=formatter["rename_fields"])
    )
    handler.addFilter(config["filters"]["request_id"]["()"]())
    record = logging.makeLogRecord(
        {
            "name": "uvicorn.error",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "Uvicorn running on %s",
            "args": ("http://127.0.0.1:8090",),
            "color_message": "Uvicorn running on \x1b[1m%s\x1b[0m",
        }
    )
    handler.handle(record)
    line = json.loads(handler.stream.getvalue())
    assert line["message"] == "Uvicorn running on http://127.0.0.1:8090"
    assert line["logger"] == "uvicorn.error"
    assert "color_message" not in line


def test_server_access_logs_go_nowhere() -> None:
    """Our own request logs carry the request id. uvicorn composes its access
    line whenever its logger has somewhere to go: it has nowhere."""
    loggers = logging_dict_config("INFO")["loggers"]
    for name in ("uvicorn.access", "granian.access"):
        assert loggers[name]["handlers"] == []
        assert loggers[name]["propagate"] is False
