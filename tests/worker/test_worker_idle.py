"""A machine waiting for its next input ends itself within its idle period plus a grace, even
when the caller holds the connection and never answers (a caller gone silent, as across a
network): the worker enforces this itself, whatever the call's own deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_harness import run_worker_process

from flyjobs._wire.call_envelope import encode_call
from flyjobs._wire.machine import EXIT_DEADLINE, IDLE_EXIT_GRACE_S, PAYLOAD_GUEST_PATH

pytestmark = pytest.mark.anyio

IDLE_S = 0.5


@pytest.fixture
def silent_inbox() -> Iterator[tuple[int, list[bytes]]]:
    """A listener that reads each request and never answers; (port, what it received)."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            received.append(conn.recv(65536))
            held.append(conn)  # open, unanswered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], received
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.slow
async def test_an_unanswered_wait_for_the_next_input_ends_the_machine(
    machine_root: Path, silent_inbox: tuple[int, list[bytes]]
) -> None:
    port, received = silent_inbox
    payload = encode_call(
        "builtins:abs",
        (-3,),
        call_id="c1",
        deadline=time.time() + 600,  # far away: only the idle bound can end the worker
        result_url=f"http://127.0.0.1:{port}/results/c1/t",
        pulls=True,
        idle_s=IDLE_S,
    )
    (machine_root / PAYLOAD_GUEST_PATH.lstrip("/")).write_bytes(payload)
    # The harness's time limit is the bound under test (plus the interpreter's start).
    run = await run_worker_process(machine_root, timeout_s=IDLE_S + IDLE_EXIT_GRACE_S + 3)
    assert run.returncode == EXIT_DEADLINE, run.stderr
    assert received and received[0].startswith(b"PUT /results/c1/t")
