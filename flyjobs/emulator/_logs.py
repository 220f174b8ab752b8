"""Fly's logs API shape (``GET /api/v1/apps/{app}/logs``) over each machine's captured output.

Fly serves logs from api.fly.io, not from the Machines API; the emulator serves the same path
so a client can read what a machine printed, destroyed ones included while retained. Without
``next_token`` the answer starts at the oldest retained line (the emulator keeps the last
``log_max_bytes`` of each machine's output; Fly keeps a recent window), at most
``log_page_lines`` of them; ``meta.next_token`` continues from where the answer ended, and a
machine the token has not seen yet is read from its first line. Where lines a reader has not
seen are no longer kept, it gets one line saying how many were dropped, and why
(`flyjobs._wire.log_lines.log_gap_line`; Fly has no such line). A line's timestamp is when the
emulator read it from the machine's output pipe (`MachineOutput`); a token counts lines, not
bytes.

The token stays small however many machines the app has had: machines that are destroyed and
read to the end are named by their creation ``serial``, as a count below which all are done
plus a bit set of those done above it; only the others carry their line number.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._errors import bad_request, not_found
from ._http import emulator_of, json_response
from ._machine import MachineRecord
from ._output import LogLine

__all__ = ("LOG_ROUTES",)


async def app_logs(request: Request) -> Response:
    """``GET /api/v1/apps/{app}/logs?instance=&region=&next_token=``."""
    emulator = emulator_of(request)
    app_name = request.path_params["app_name"]
    emulator.app(app_name)
    params = request.query_params
    machines = emulator.app_machines(app_name, include_deleted=True)
    if params.get("instance"):
        machines = [m for m in machines if m.id == params["instance"]]
        if not machines:
            raise not_found(f"machine {params['instance']} not found")
    if params.get("region"):
        machines = [m for m in machines if m.region == params["region"]]
    position = _Position.decode(params.get("next_token"))
    budget = emulator.config.log_page_lines
    entries: list[dict[str, Any]] = []
    for machine in machines:
        if position.done(machine.serial):
            continue
        lines, position.offsets[machine.id] = machine.output.read(
            position.offsets.get(machine.id), budget - len(entries)
        )
        entries.extend(_entry(machine, line) for line in lines)
    token = position.compact(emulator.app_machines(app_name, include_deleted=True)).encode()
    return json_response({"data": entries, "meta": {"next_token": token}})


def _entry(machine: MachineRecord, line: LogLine) -> dict[str, Any]:
    at = dt.datetime.fromtimestamp(line.at_ms / 1000, dt.UTC)
    return {
        "id": f"{machine.id}-{line.seq}",
        "type": "logs",
        "attributes": {
            "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "message": line.text,
            "level": "info",
            "instance": machine.id,
            "region": machine.region,
            "meta": {},
        },
    }


class _Position:
    """Where a reader of an app's logs is: ``below`` (every machine whose serial is lower is
    done), ``above`` (serials done above it), and each other machine's next line number."""

    def __init__(self, below: int, above: set[int], offsets: dict[str, int]) -> None:
        self.below = below
        self.above = above
        self.offsets = offsets

    def done(self, serial: int) -> bool:
        return serial < self.below or serial in self.above

    def compact(self, machines: list[MachineRecord]) -> _Position:
        """Mark done each destroyed machine read to its end; advance ``below`` over them."""
        alive = set()
        for machine in machines:
            if self.done(machine.serial):
                continue
            read = self.offsets.get(machine.id, 0)
            if machine.state == "destroyed" and read >= machine.output.next_seq:
                self.above.add(machine.serial)
                self.offsets.pop(machine.id, None)
            else:
                alive.add(machine.serial)
        # A serial no longer listed is a machine forgotten after its retention: done too.
        top = max((m.serial for m in machines), default=-1)
        while self.below <= top and (self.below in self.above or self.below not in alive):
            self.above.discard(self.below)
            self.below += 1
        return self

    def encode(self) -> str:
        bits = bytearray((max(self.above, default=self.below) - self.below) // 8 + 1)
        for serial in self.above:
            offset = serial - self.below
            bits[offset // 8] |= 1 << (offset % 8)
        body = {"b": self.below, "a": base64.b64encode(bytes(bits)).decode(), "o": self.offsets}
        return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()

    @classmethod
    def decode(cls, token: str | None) -> _Position:
        if not token:
            return cls(0, set(), {})
        try:
            body = json.loads(base64.urlsafe_b64decode(token.encode()))
            below, bits, offsets = body["b"], base64.b64decode(body["a"]), body["o"]
        except (binascii.Error, ValueError, TypeError, KeyError):
            raise bad_request("invalid next_token") from None
        if (
            not isinstance(below, int)
            or below < 0
            or not isinstance(offsets, dict)
            or not all(isinstance(v, int) and v >= 0 for v in offsets.values())
        ):
            raise bad_request("invalid next_token")
        above = {
            below + i * 8 + b for i, byte in enumerate(bits) for b in range(8) if byte >> b & 1
        }
        return cls(below, above, {str(k): v for k, v in offsets.items()})


LOG_ROUTES = [Route("/api/v1/apps/{app_name}/logs", app_logs, methods=["GET"])]
