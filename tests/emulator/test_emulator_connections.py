"""The emulator's port under idle and slow connections (docs/threat-model.md, actor 5): no
token is needed to open one, so none may hold the server for long, nor shut the API out."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx
import pytest
from _waiting import closed_by_peer

from flyjobs.emulator import RunningEmulator

pytestmark = pytest.mark.anyio

SUPPORT = Path(__file__).resolve().parents[1] / "_support"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _port(emulator: RunningEmulator) -> int:
    return urlsplit(emulator.url).port or 80


def _get(emulator: RunningEmulator, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {emulator.token}\r\n\r\n"
    ).encode()


async def test_a_connection_that_never_sends_its_request_is_closed(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = make_emulator(head_timeout_s=0.2)
    async with await anyio.connect_tcp("127.0.0.1", _port(emulator)) as silent:
        assert await closed_by_peer(silent)


async def test_a_slowloris_head_is_closed_however_often_it_sends(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    """A head sent a few bytes at a time never completes: the connection is closed at the
    head timeout, however recently its last byte came."""
    emulator = make_emulator(head_timeout_s=0.3)
    async with await anyio.connect_tcp("127.0.0.1", _port(emulator)) as slow:
        await slow.send(b"GET /v1/apps HTTP/1.1\r\n")
        closed = False
        for _ in range(200):  # 20 s of trickling at most
            try:
                await slow.send(b"X-A: b\r\n")
            except (anyio.BrokenResourceError, OSError):
                closed = True
                break
            with anyio.move_on_after(0.1):
                try:
                    await slow.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    pass
                closed = True
            if closed:
                break
        assert closed


async def test_a_kept_alive_connection_serves_again_then_is_closed_when_idle(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = make_emulator(keep_alive_s=0.3)
    async with await anyio.connect_tcp("127.0.0.1", _port(emulator)) as stream:
        for _ in range(2):  # two requests, one connection
            await stream.send(_get(emulator, "/v1/apps?org_slug=personal"))
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive()
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            head, _, body = answer.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += await stream.receive()
        assert await closed_by_peer(stream)


async def test_silent_connections_beyond_the_cap_never_shut_out_the_api(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = make_emulator(max_connections=8)
    headers = {"Authorization": f"Bearer {emulator.token}"}
    async with contextlib.AsyncExitStack() as stack:
        silent = [
            await stack.enter_async_context(await anyio.connect_tcp("127.0.0.1", _port(emulator)))
            for _ in range(30)
        ]
        async with httpx.AsyncClient(base_url=emulator.url, headers=headers) as client:
            answer = await client.get("/v1/apps", params={"org_slug": "personal"})
        assert answer.status_code == 200
        closed = [await closed_by_peer(s) for s in silent[:20]]
        assert all(closed), "the oldest silent connections were not evicted"


async def test_refused_connections_are_logged_once_per_interval(
    make_emulator: Callable[..., RunningEmulator], caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    emulator = make_emulator(max_connections=2, head_timeout_s=1.0, clock=lambda: now[0])

    async def evict(count: int) -> None:
        # Each connection past the cap evicts the oldest silent one, which is then closed.
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(
                    await anyio.connect_tcp("127.0.0.1", _port(emulator))
                )
                for _ in range(count + 2)
            ]
            for stream in streams[:count]:
                assert await closed_by_peer(stream)

    with caplog.at_level(logging.WARNING, logger="flyjobs.emulator"):
        await evict(10)
        assert len(caplog.records) == 1
        now[0] += 10
        await evict(1)
    assert len(caplog.records) == 2
    assert "similar messages were not logged" in caplog.records[-1].getMessage()


ATTACKER = """
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
held = []
for _ in range(1100):
    try:
        held.append(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5))
    except OSError:
        pass  # the kernel's queue is full while the emulator evicts: not needed to hold 1,100
print("holding", len(held), flush=True)
sys.stdin.readline()
"""

CALLER = """
import sys
sys.path.insert(0, {support!r})
import remote_funcs
print("result", remote_funcs.add.remote(1, 2), flush=True)
"""


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.mark.slow  # several seconds: three processes and 1,100 connections
def test_an_emulator_limited_to_1024_descriptors_serves_calls_past_1100_idle_connections(
    tmp_path: Path,
) -> None:
    """1,100 idle connections to an emulator limited to 1,024 descriptors: a flyjobs call
    through it still works, and its refusals are logged a few times, not once per attempt."""
    token = "connections-test-token-0123456789"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    stderr_path = tmp_path / "emulator.err"
    with stderr_path.open("w") as stderr:
        emulator = subprocess.Popen(
            [sys.executable, "-m", "flyjobs", "dev", "--port", "0", "--token", token],
            env=env,
            preexec_fn=_limit_descriptors,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    attacker: subprocess.Popen[str] | None = None
    try:
        assert emulator.stdout is not None
        line = emulator.stdout.readline()
        assert "listening on " in line, stderr_path.read_text()[-3000:]
        url = line.rsplit("listening on ", 1)[1].split()[0]
        port = str(urlsplit(url).port)
        attacker = subprocess.Popen(
            [sys.executable, "-c", ATTACKER, port],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert attacker.stdout is not None
        assert attacker.stdout.readline().startswith("holding ")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
            app = {"app_name": "conn-app", "org_slug": "personal"}
            assert api.post("/v1/apps", json=app).is_success
            secret = {"value": "connections-result-key"}
            assert api.post("/v1/apps/conn-app/secrets/FLYJOBS_RESULT_KEY", json=secret)
        caller_env = env | {
            "FLY_API_TOKEN": token,
            "FLY_API_HOSTNAME": url,
            "FLY_APP": "conn-app",
            "FLYJOBS_IMAGE": "registry.fly.io/conn-app:latest",
            "FLYJOBS_INBOX_HOST": "127.0.0.1",
            "FLYJOBS_RESULT_KEY": "connections-result-key",
        }
        caller = subprocess.run(
            [sys.executable, "-c", CALLER.format(support=str(SUPPORT))],
            env=caller_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "result 3" in caller.stdout, caller.stderr[-3000:]
    finally:
        for process in (attacker, emulator):
            if process is not None:
                process.kill()
                process.communicate()
    logged = stderr_path.read_text()
    assert logged.count("the emulator") < 20, logged[-3000:]
    assert "Traceback" not in logged, logged[-3000:]
