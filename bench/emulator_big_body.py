"""Does a huge request body stall the emulator's other clients?

Baseline: the slowest Get App request over a 3 s window of back-to-back requests on an idle
emulator. Then the same window while another client keeps sending 100 MB create bodies, once
with a ``Content-Length`` and once chunked (the emulator refuses both with 413, the first before
reading any of it, the second after ``max_body_bytes``). ``*_stall_ratio`` is the slowest
request under upload over the baseline's slowest. Goal: <= 10 (a 100 MB body used to be read,
parsed and decoded on the event loop, stalling other clients for seconds).

Every loop is bounded (a fixed duration). The last line is one JSON object.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx

from flyjobs.emulator import EmulatorConfig, serve_in_thread

#: Seconds of back-to-back Get App requests per measurement (long enough to span an upload).
_WINDOW_S = 3.0
_BODY_BYTES = 100 * 1024 * 1024
_APP = "bench-app"


def _slowest_get(client: httpx.Client) -> float:
    slowest = 0.0
    until = time.perf_counter() + _WINDOW_S
    while time.perf_counter() < until:
        start = time.perf_counter()
        client.get(f"/v1/apps/{_APP}").raise_for_status()
        slowest = max(slowest, time.perf_counter() - start)
    return slowest


def _upload_with_length(host: str, port: int, token: str, done: threading.Event) -> None:
    head = (
        f"POST /v1/apps/{_APP}/machines HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {_BODY_BYTES}\r\n\r\n"
    ).encode()
    chunk = b"a" * (1024 * 1024)
    while not done.is_set():
        with socket.create_connection((host, port)) as upload:
            upload.sendall(head + b'{"config": {"image": "x", "env": {"A": "')
            try:
                for _ in range(_BODY_BYTES // len(chunk)):
                    upload.sendall(chunk)
            except OSError:  # refused early: the server closed the connection
                pass


def _upload_chunked(url: str, token: str, done: threading.Event) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"config": {"image": "x", "env": {"A": "'
        for _ in range(100):
            yield b"a" * (1024 * 1024)

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        while not done.is_set():
            client.post(f"/v1/apps/{_APP}/machines", content=body())


def main() -> None:
    with serve_in_thread(EmulatorConfig(tokens=["bench"])) as emu:
        host, port = emu.url.removeprefix("http://").rsplit(":", 1)
        headers = {"Authorization": f"Bearer {emu.token}"}
        with httpx.Client(base_url=emu.url, headers=headers) as client:
            client.post("/v1/apps", json={"app_name": _APP, "org_slug": "personal"})
            baseline_s = _slowest_get(client)
            results = {"baseline_slowest_get_s": round(baseline_s, 5)}
            uploads = {
                "content_length": lambda done: _upload_with_length(host, int(port), "bench", done),
                "chunked": lambda done: _upload_chunked(emu.url, "bench", done),
            }
            for name, upload in uploads.items():
                done = threading.Event()
                thread = threading.Thread(target=upload, args=(done,), daemon=True)
                thread.start()
                time.sleep(0.2)  # let the upload start
                slowest_s = _slowest_get(client)
                done.set()
                thread.join(timeout=60)
                results[f"{name}_slowest_get_s"] = round(slowest_s, 5)
                results[f"{name}_stall_ratio"] = round(slowest_s / baseline_s, 2)
                print(f"{name}: slowest GET {slowest_s * 1000:.1f} ms under a 100 MB upload")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
