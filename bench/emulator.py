"""Emulator speed against baselines measured in the same run.

1. Get Machine requests/s against a minimal Starlette app answering the same JSON body on the
   same server stack (flyjobs's BoundedServer over h11, same socket setup), both over one
   reused connection, sequentially. Goal: ratio >= 0.7.
2. One job cycle of an ``auto_destroy`` machine running ``python -c pass`` (create → wait
   started → wait stopped → wait destroyed) against spawning ``[sys.executable, "-c", "pass"]``
   directly, at concurrency 1 and 16. Goal: ratio <= 1.6. The cycle's client is a minimal
   HTTP/1.1 one, so the figure is the emulator's cost; the same cycle through httpx's async
   client is reported beside it (``*_httpx_ratio``, no goal): at concurrency 16 on two cores
   everything is CPU-bound and httpx's own CPU per request (0.7-1.5 ms) dominates it.

Every loop is bounded (a fixed duration or count). The last line is one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import anyio
import httpx
from anyio.abc import SocketListener
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flyjobs._aio.http_server import App, BoundedServer, RateLimitedLog, bind_listener
from flyjobs.emulator import EmulatorConfig, RunningEmulator, serve_in_thread

GET_ROUNDS = 4
GET_ROUND_S = 0.5
CYCLES = {1: 30, 16: 96}


@contextlib.contextmanager
def baseline_server(body: bytes) -> Iterator[str]:
    """A minimal Starlette app answering ``body`` on every GET, served as the emulator is
    (flyjobs._aio.http_server.BoundedServer, keeping connections alive), from a thread of its
    own."""

    async def fixed(_request: Request) -> Response:
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/v1/apps/{app}/machines/{machine_id}", fixed)])
    sock = bind_listener("127.0.0.1", 0)
    ready = threading.Event()
    stop: dict[str, Any] = {}

    async def serve() -> None:
        stop["loop"], stop["event"] = asyncio.get_running_loop(), asyncio.Event()
        log = RateLimitedLog(logging.getLogger("bench.baseline"))
        server = BoundedServer(cast(App, app), log=log, keep_alive_s=5.0, name="the baseline")
        listener = await SocketListener.from_socket(sock)
        async with anyio.create_task_group() as tasks:
            await tasks.start(server.serve, listener)
            ready.set()
            await stop["event"].wait()
            tasks.cancel_scope.cancel()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    ready.wait()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop["loop"].call_soon_threadsafe(stop["event"].set)
        thread.join()


def requests_per_s(client: httpx.Client, url: str) -> float:
    """Sequential GETs of ``url`` over the client's one connection for GET_ROUND_S."""
    count = 0
    started = time.perf_counter()
    deadline = started + GET_ROUND_S
    while time.perf_counter() < deadline:
        client.get(url).raise_for_status()
        count += 1
    return count / (time.perf_counter() - started)


def bench_get(emu: RunningEmulator) -> dict[str, float]:
    """Best of GET_ROUNDS interleaved rounds per side, so background load hits both alike."""
    headers = {"Authorization": f"Bearer {emu.token}"}
    with httpx.Client(base_url=emu.url, headers=headers) as client:
        client.post(
            "/v1/apps", json={"name": "bench-get", "org_slug": "personal"}
        ).raise_for_status()
        machine = client.post(
            "/v1/apps/bench-get/machines", json={"config": {"image": "bench"}, "skip_launch": True}
        ).json()
        path = f"/v1/apps/bench-get/machines/{machine['id']}"
        body = client.get(path).content
    emulator_rps, baseline_rps = [], []
    with (
        baseline_server(body) as base_url,
        httpx.Client(headers=headers) as emulator_client,
        httpx.Client() as baseline_client,
    ):
        for _ in range(50):  # warm up both connections
            emulator_client.get(emu.url + path).raise_for_status()
            baseline_client.get(base_url + path).raise_for_status()
        for _ in range(GET_ROUNDS):
            emulator_rps.append(requests_per_s(emulator_client, emu.url + path))
            baseline_rps.append(requests_per_s(baseline_client, base_url + path))
    return {
        "get_machine_rps": round(max(emulator_rps), 1),
        "get_baseline_rps": round(max(baseline_rps), 1),
        "get_ratio": round(max(emulator_rps) / max(baseline_rps), 3),
    }


class LeanClient:
    """A minimal keep-alive HTTP/1.1 client over one asyncio connection.

    The cycle benchmark measures the emulator, so its client must cost little: httpx's
    async client spends 0.7-1.5 ms of CPU per request here, which at concurrency 16 on two
    cores would be charged to the emulator. (`machine_cycles` reports httpx figures too.)
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._head = f"Host: bench\r\nAuthorization: Bearer {token}\r\n"

    @classmethod
    async def connect(cls, emu: RunningEmulator) -> LeanClient:
        host, port = emu.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, emu.token)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\n{self._head}Content-Length: {len(payload)}\r\n\r\n"
        self._writer.write(head.encode() + payload)
        status_line = await self._reader.readline()
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        content = await self._reader.readexactly(length)
        return int(status_line.split()[1]), json.loads(content) if content else None

    def close(self) -> None:
        self._writer.close()


CYCLE_CONFIG = {
    "image": "bench",
    "auto_destroy": True,
    "restart": {"policy": "no"},
    "init": {"exec": ["python", "-c", "pass"]},
}


async def machine_cycles(
    emu: RunningEmulator, concurrency: int, cycles: int, *, lean: bool
) -> float:
    """Mean seconds per create → started → stopped → destroyed cycle, ``concurrency`` at once."""
    app = f"bench-cycle-{concurrency}-{time.monotonic_ns()}"
    headers = {"Authorization": f"Bearer {emu.token}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=emu.url, headers=headers, limits=limits, timeout=60
    ) as client:
        (
            await client.post("/v1/apps", json={"name": app, "org_slug": "personal"})
        ).raise_for_status()

        async def httpx_request(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            r = await client.request(method, path, json=body)
            return r.status_code, r.json()

        async def worker(count: int, durations: list[float]) -> None:
            lean_client = await LeanClient.connect(emu) if lean else None
            request = lean_client.request if lean_client else httpx_request
            for _ in range(count):
                started = time.perf_counter()
                status, machine = await request(
                    "POST", f"/v1/apps/{app}/machines", {"config": CYCLE_CONFIG}
                )
                assert status == 200, machine
                for state in ("started", "stopped", "destroyed"):
                    status, _ = await request(
                        "GET", f"/v1/apps/{app}/machines/{machine['id']}/wait?state={state}"
                    )
                    assert status == 200
                durations.append(time.perf_counter() - started)
            if lean_client:
                lean_client.close()

        await worker(2, [])  # warm up
        durations: list[float] = []
        await asyncio.gather(
            *(worker(cycles // concurrency, durations) for _ in range(concurrency))
        )
    return sum(durations) / len(durations)


def spawn_cycles(concurrency: int, cycles: int) -> float:
    """Mean seconds per direct spawn-and-wait of ``python -c pass``, ``concurrency`` at once."""

    def one() -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - started

    one()
    with ThreadPoolExecutor(concurrency) as pool:
        durations = list(pool.map(lambda _: one(), range(cycles)))
    return sum(durations) / len(durations)


def main() -> None:
    figures: dict[str, Any] = {}
    with serve_in_thread(EmulatorConfig(tokens=["bench-token"], retention_s=1.0)) as emu:
        figures.update(bench_get(emu))
        print(
            f"GET machine: emulator {figures['get_machine_rps']:.0f} req/s, "
            f"baseline {figures['get_baseline_rps']:.0f} req/s, "
            f"ratio {figures['get_ratio']:.2f} (goal >= 0.7)"
        )
        for concurrency, cycles in CYCLES.items():
            spawn_s = spawn_cycles(concurrency, cycles)
            lean_s = asyncio.run(machine_cycles(emu, concurrency, cycles, lean=True))
            httpx_s = asyncio.run(machine_cycles(emu, concurrency, cycles, lean=False))
            prefix = f"cycle_c{concurrency}"
            figures[f"{prefix}_spawn_ms"] = round(spawn_s * 1000, 2)
            figures[f"{prefix}_machine_ms"] = round(lean_s * 1000, 2)
            figures[f"{prefix}_ratio"] = round(lean_s / spawn_s, 3)
            figures[f"{prefix}_machine_httpx_ms"] = round(httpx_s * 1000, 2)
            figures[f"{prefix}_httpx_ratio"] = round(httpx_s / spawn_s, 3)
            print(
                f"cycle at concurrency {concurrency}: direct spawn {spawn_s * 1000:.1f} ms, "
                f"machine {lean_s * 1000:.1f} ms (ratio {lean_s / spawn_s:.2f}, goal <= 1.6), "
                f"machine with httpx as client {httpx_s * 1000:.1f} ms "
                f"(ratio {httpx_s / spawn_s:.2f})"
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
