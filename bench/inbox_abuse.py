"""Can someone who reads the app's machine configs starve a call's result inbox?

A caller process (in Fly mode, pointed at an emulator this script runs) spawns one call whose
function waits for a file. This script then reads the call's result URL from the machine's
config, as anyone with a read token can, and attacks that URL: 300 uploads that each send a
body byte every 5 s, and 16 uploads of 60 MB bodies that are never finished, each reopened
whenever the inbox closes it. Once the attack is under way the function is let go, and its
genuine delivery has to get through.

Goal: the call returns its value and the caller's peak RSS (``VmHWM``) stays <= 200 MB
(before the inbox refused uploads from their request head, the trickles held all 256
connection slots and the call failed; 16 unfinished 60 MB uploads took the caller from 54 MB
to 1.2 GB).

Every loop is bounded: the attack stops when the call ends, or after ``--timeout`` seconds. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgpack  # type: ignore[import-untyped]

from flyjobs.emulator import EmulatorConfig, serve_in_thread

HERE = Path(__file__).resolve().parent
APP = "bench-inbox-abuse"
RESULT_KEY = "bench-inbox-abuse-result-key-0123456789"
TRICKLES = 300
HUGE = 16
HUGE_BYTES = 60 * 1024 * 1024
TRICKLE_EVERY_S = 5.0
#: Seconds an attacker waits before it reopens an upload the inbox closed.
REOPEN_S = 0.5
#: Seconds the attack runs before the function is let go.
ATTACK_LEAD_S = 3.0

CALLER = """
import sys
sys.path.insert(0, {here!r})
from _trivial import wait_for_file

def rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0

print("before", rss_kb("VmRSS:"), flush=True)
import time
call = wait_for_file.spawn({go!r})
deadline = time.monotonic() + 60
while call.machine_id is None and time.monotonic() < deadline:
    time.sleep(0.01)
print("machine", call.machine_id, flush=True)
try:
    print("result", call.result(timeout_s=120), flush=True)
except Exception as exc:
    print("error", type(exc).__name__, str(exc).replace("\\n", " "), flush=True)
print("peak", rss_kb("VmHWM:"), flush=True)
"""


class Attack:
    """The hostile uploads to one URL, and what became of them."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.target = f"{parts.path}?{parts.query}"
        self.stop = asyncio.Event()
        self.opened = 0
        self.answers: dict[str, int] = {}

    def _head(self, length: int) -> bytes:
        return (
            f"PUT {self.target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/msgpack\r\nContent-Length: {length}\r\n\r\n"
        ).encode()

    async def _upload(self, length: int, send_body: object) -> None:
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await self._pause(REOPEN_S)
                continue
            self.opened += 1
            answer = b""
            try:
                writer.write(self._head(length))
                sender = asyncio.ensure_future(send_body(writer))  # type: ignore[operator]
                reading = asyncio.ensure_future(reader.read(256))
                stopping = asyncio.ensure_future(self.stop.wait())
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for task in (sender, stopping):
                    task.cancel()
                if reading.done() and not reading.cancelled() and reading.exception() is None:
                    answer = reading.result()
                else:
                    reading.cancel()
            except OSError:
                pass
            finally:
                writer.close()
            status = answer.split(b" ", 2)[1].decode() if answer.count(b" ") >= 2 else "closed"
            self.answers[status] = self.answers.get(status, 0) + 1
            await self._pause(REOPEN_S)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            pass

    async def _trickle(self, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(TRICKLE_EVERY_S)
        except OSError:
            pass

    async def _huge(self, writer: asyncio.StreamWriter) -> None:
        chunk = b"x" * (1024 * 1024)
        try:
            for _ in range(HUGE_BYTES // len(chunk) - 1):  # never the last MiB
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass

    async def run(self) -> None:
        uploads = [self._upload(1000, self._trickle) for _ in range(TRICKLES)]
        uploads += [self._upload(HUGE_BYTES, self._huge) for _ in range(HUGE)]
        await asyncio.gather(*uploads)


def _result_url(http: httpx.Client, machine_id: str) -> str:
    machine = http.get(f"/v1/apps/{APP}/machines/{machine_id}").json()
    raw = machine["config"]["files"][0]["raw_value"]
    envelope = msgpack.unpackb(base64.b64decode(raw), raw=False)
    url: str = envelope["result_url"]
    return url


async def _attack_while(
    caller: subprocess.Popen[str], url: str, go: Path, timeout_s: float
) -> Attack:
    attack = Attack(url)
    running = asyncio.ensure_future(attack.run())
    await asyncio.sleep(ATTACK_LEAD_S)
    await asyncio.to_thread(go.touch)
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(caller.wait, timeout_s)
    attack.stop.set()
    await running
    return attack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="flyjobs-inbox-abuse-") as folder,
        serve_in_thread(EmulatorConfig(tokens=["bench-inbox-abuse-token"])) as emulator,
        httpx.Client(
            base_url=emulator.url, headers={"Authorization": f"Bearer {emulator.token}"}
        ) as http,
    ):
        http.post("/v1/apps", json={"app_name": APP, "org_slug": "personal"}).raise_for_status()
        secret = {"value": RESULT_KEY}
        http.post(f"/v1/apps/{APP}/secrets/FLYJOBS_RESULT_KEY", json=secret).raise_for_status()
        go = Path(folder) / "go"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
        env |= {
            "FLY_API_TOKEN": emulator.token,
            "FLY_API_HOSTNAME": emulator.url,
            "FLY_APP": APP,
            "FLYJOBS_IMAGE": f"registry.fly.io/{APP}:latest",
            "FLYJOBS_INBOX_HOST": "127.0.0.1",
            "FLYJOBS_RESULT_KEY": RESULT_KEY,
        }
        script = CALLER.format(here=str(HERE), go=str(go))
        caller = subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert caller.stdout is not None
            before_kb = int(caller.stdout.readline().split()[1])
            machine_line = caller.stdout.readline().split()
            if machine_line[:1] != ["machine"]:
                raise SystemExit(f"the caller failed: {caller.communicate()[1][-2000:]}")
            url = _result_url(http, machine_line[1])
            attack = asyncio.run(_attack_while(caller, url, go, args.timeout))
            out, err = caller.communicate(timeout=30)
        finally:
            if caller.poll() is None:
                caller.kill()
                caller.communicate()
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    peak_mb = int(lines.get("peak", "0")) / 1024
    result = {
        "call_succeeded": lines.get("result") == "REAL",
        "call_outcome": lines.get("result") or lines.get("error", err[-500:]),
        "caller_rss_before_mb": round(before_kb / 1024, 1),
        "caller_peak_rss_mb": round(peak_mb, 1),
        "peak_rss_goal_mb": 200,
        # Comparable across runs as the other benches' ratios are: goal <= 1.
        "peak_rss_vs_goal_ratio": round(peak_mb / 200, 3),
        "hostile_uploads_opened": attack.opened,
        "hostile_upload_answers": attack.answers,
    }
    print(
        f"call {'succeeded' if result['call_succeeded'] else 'FAILED'};"
        f" caller peak RSS {peak_mb:.0f} MB (goal <= 200);"
        f" {attack.opened} hostile uploads opened, answered {attack.answers}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
