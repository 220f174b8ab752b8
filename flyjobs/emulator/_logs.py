"""Fly's logs API shape (``GET /api/v1/apps/{app}/logs``) over each machine's captured output.

Fly serves logs from api.fly.io, not from the Machines API; the emulator serves the same path
so a client can read what a machine printed, destroyed ones included while retained. Without
``next_token`` the answer starts at the oldest retained line (the emulator keeps the last
``log_max_bytes`` of each machine's output; Fly keeps a recent window), at most
``log_page_lines`` of them; ``meta.next_token`` continues from where the answer ended, and a
machine the token has not seen yet is read from its first line. Where lines a reader has not
seen are no longer kept, it gets one line saying how many were dropped, and why
(`flyjobs._protocol.log_gap_line`; Fly has no such line). A line's timestamp is when the
emulator read it from the machine's output pipe (`MachineOutput`); a token counts lines, not
bytes.
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
    offsets = _decode_token(params.get("next_token"))
    budget = emulator.config.log_page_lines
    entries: list[dict[str, Any]] = []
    for machine in machines:
        lines, offsets[machine.id] = machine.output.read(
            offsets.get(machine.id), budget - len(entries)
        )
        entries.extend(_entry(machine, line) for line in lines)
    return json_response({"data": entries, "meta": {"next_token": _encode_token(offsets)}})


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


def _decode_token(token: str | None) -> dict[str, int]:
    if not token:
        return {}
    try:
        offsets = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError):
        raise bad_request("invalid next_token") from None
    if not isinstance(offsets, dict) or not all(isinstance(v, int) for v in offsets.values()):
        raise bad_request("invalid next_token")
    return {str(k): v for k, v in offsets.items()}


def _encode_token(offsets: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(offsets).encode()).decode()


LOG_ROUTES = [Route("/api/v1/apps/{app_name}/logs", app_logs, methods=["GET"])]
