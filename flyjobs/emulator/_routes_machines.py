"""Routes under ``/v1/apps/{app}/machines``: thin handlers over `Emulator`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._errors import ErrorReply, bad_request, conflict, machine_not_found, not_found
from ._http import (
    decode_cursor,
    emulator_of,
    encode_cursor,
    json_response,
    nonce_of,
    query_bool,
    query_int,
    read_json,
)
from ._leases import DEFAULT_TTL_S, acquire, lease_not_found, release
from ._machine import SHOWN_EVENTS, WAITABLE_STATES, MachineRecord
from ._ps import SORT_KEYS, process_stats
from ._validate import STOP_SIGNALS, parse_duration_s, parse_signal

__all__ = ("MACHINE_ROUTES",)

_OK = b'{"ok":true}'
_MAX_WAIT_S = 60


async def list_machines(request: Request) -> Response:
    """``GET …/machines`` with ``include_deleted``, ``state``, ``region``, ``metadata.K``,
    ``summary``, ``include_leases``, and ``limit``/``cursor`` pages (``fly-next-cursor``)."""
    emulator = emulator_of(request)
    app_name = request.path_params["app_name"]
    emulator.app(app_name)
    params = request.query_params
    machines = emulator.app_machines(
        app_name, include_deleted=query_bool(request, "include_deleted")
    )
    states = {s for s in params.get("state", "").split(",") if s}
    region = params.get("region")
    wanted_metadata = {
        k[len("metadata.") :]: v for k, v in params.items() if k.startswith("metadata.")
    }
    selected = [
        m
        for m in machines
        if (not states or m.state in states)
        and (not region or m.region == region)
        and all((m.config.get("metadata") or {}).get(k) == v for k, v in wanted_metadata.items())
    ]
    # Pages follow creation order; a cursor names the last machine of the previous page by its
    # place in that order, so a page still follows when that machine has since gone.
    limit = query_int(request, "limit", 0, 1, 1000)
    cursor = params.get("cursor")
    if cursor:
        if not limit:
            raise bad_request("invalid_argument: cursor requires limit")
        after = decode_cursor(cursor)
        selected = [m for m in selected if (m.created_at, m.id) > after]
    headers = {}
    if limit and len(selected) > limit:
        selected = selected[:limit]
        headers["fly-next-cursor"] = encode_cursor((selected[-1].created_at, selected[-1].id))
    summary = query_bool(request, "summary")
    leases = query_bool(request, "include_leases")
    body = b"[" + b",".join(m.json(summary=summary, include_lease=leases) for m in selected) + b"]"
    return json_response(body, headers=headers)


async def create_machine(request: Request) -> Response:
    """``POST …/machines``: 200 with the machine (``nonce`` too when ``lease_ttl`` is set)."""
    body = await read_json(request)
    return json_response(emulator_of(request).create_machine(request.path_params["app_name"], body))


async def get_machine(request: Request) -> Response:
    """``GET …/machines/{id}``, or one of its earlier versions with ``?version=``."""
    machine = emulator_of(request).machine(
        request.path_params["app_name"], request.path_params["machine_id"]
    )
    version = request.query_params.get("version")
    if version and version != machine.version:
        if version not in dict(machine.versions):
            raise not_found(f"machine {machine.id} has no version {version}")
        return json_response(machine.to_dict(version=version))
    return json_response(machine.json(include_lease=query_bool(request, "include_leases")))


async def update_machine(request: Request) -> Response:
    """``POST …/machines/{id}``: the whole config; the new version starts unless
    ``skip_launch``."""
    body = await read_json(request)
    answer = await emulator_of(request).update_machine(
        request.path_params["app_name"], request.path_params["machine_id"], body, nonce_of(request)
    )
    return json_response(answer)


async def delete_machine(request: Request) -> Response:
    """``DELETE …/machines/{id}``; ``force=true`` (spec) or ``kill=true`` (fly-go) kills it."""
    force = query_bool(request, "force") or query_bool(request, "kill")
    await emulator_of(request).delete_machine(
        request.path_params["app_name"],
        request.path_params["machine_id"],
        force=force,
        nonce=nonce_of(request),
    )
    return json_response(_OK)


async def stop_machine(request: Request) -> Response:
    """``POST …/stop`` with an optional ``{signal, timeout}``: signal now, SIGKILL after
    ``timeout`` (a zero or missing one: the machine's ``stop_config``, else the default)."""
    body = await read_json(request, required=False)
    machine = _live(request)
    signum = parse_signal(body["signal"], allowed=STOP_SIGNALS) if body.get("signal") else None
    # fly-go always sends a timeout, "0s" when its caller gave none: zero means the default.
    timeout_s = parse_duration_s(body["timeout"]) if body.get("timeout") not in (None, "") else None
    emulator_of(request).lifecycle.stop(machine, signum, timeout_s or None)
    return json_response(_OK)


async def start_machine(request: Request) -> Response:
    """``POST …/start``: 200 with ``previous_state``."""
    previous = emulator_of(request).start(
        request.path_params["app_name"], request.path_params["machine_id"], nonce_of(request)
    )
    return json_response({"previous_state": previous, "migrated": False, "new_host": ""})


async def restart_machine(request: Request) -> Response:
    """``POST …/restart?signal=&timeout=``: stop the run and start a new one."""
    machine = _live(request)
    if machine.config.get("schedule"):
        raise bad_request(f"machine {machine.id} has a schedule and cannot be restarted")
    params = request.query_params
    signum = parse_signal(params["signal"], allowed=STOP_SIGNALS) if params.get("signal") else None
    timeout_s = parse_duration_s(params["timeout"]) if params.get("timeout") else None
    emulator_of(request).lifecycle.restart(machine, signum, timeout_s)
    return json_response(_OK)


async def signal_machine(request: Request) -> Response:
    """``POST …/signal`` with ``{signal}``: deliver it to the machine's processes."""
    body = await read_json(request)
    machine = _live(request)
    if not body.get("signal"):
        raise bad_request("signal is required")
    signum = parse_signal(body["signal"])
    if machine.handle is None:
        raise conflict(f"machine {machine.id} is {machine.state}, not started")
    machine.handle.signal(signum)
    return json_response(_OK)


async def suspend_machine(request: Request) -> Response:
    """``POST …/suspend``: freeze a started machine; ``start`` resumes it."""
    emulator_of(request).lifecycle.suspend(_live(request))
    return json_response(_OK)


async def cordon_machine(request: Request) -> Response:
    """``POST …/cordon``: mark the machine as taking no traffic (``cordoned: true``)."""
    _set_cordoned(_live(request), True)
    return json_response(_OK)


async def uncordon_machine(request: Request) -> Response:
    """``POST …/uncordon``: ``cordoned: false`` again."""
    _set_cordoned(_live(request), False)
    return json_response(_OK)


def _set_cordoned(machine: MachineRecord, cordoned: bool) -> None:
    # The emulator routes no traffic to machines: cordoning is only recorded and shown.
    machine.cordoned = cordoned
    machine.touch()


async def list_processes(request: Request) -> Response:
    """``GET …/ps?sort_by=&order=asc|desc``: the machine's processes (400 unless it runs)."""
    machine = emulator_of(request).machine(
        request.path_params["app_name"], request.path_params["machine_id"]
    )
    sort_by = request.query_params.get("sort_by") or "pid"
    order = request.query_params.get("order") or "asc"
    if sort_by not in SORT_KEYS:
        keys = ", ".join(sorted(SORT_KEYS))
        raise bad_request(f"invalid_argument: sort_by must be one of {keys}")
    if order not in ("asc", "desc"):
        raise bad_request("invalid_argument: order must be asc or desc")
    if machine.handle is None or machine.state not in ("started", "suspended"):
        raise bad_request(f"machine {machine.id} is {machine.state}: no processes to list")
    stats = sorted(process_stats(machine.handle.pid), key=lambda stat: stat[sort_by])
    return json_response(stats[::-1] if order == "desc" else stats)


async def wait_machine(request: Request) -> Response:
    """``GET …/wait``: block (1–60 s, default 60) until a state is reached; 408 on timeout."""
    machine = emulator_of(request).machine(
        request.path_params["app_name"], request.path_params["machine_id"]
    )
    params = request.query_params
    states = frozenset(s for value in params.getlist("state") for s in value.split(",") if s)
    unknown = states - WAITABLE_STATES
    if unknown:
        raise bad_request(f"invalid_argument: unknown state {sorted(unknown)[0]!r}")
    timeout_s = _wait_timeout_s(params.get("timeout"))
    reached = await machine.wait_for(
        states or frozenset({"started"}),
        version=params.get("version") or params.get("instance_id") or None,
        from_event_id=params.get("from_event_id") or None,
        timeout_s=timeout_s,
    )
    event_id = machine.events[0]["id"] if machine.events else ""
    return json_response(
        {"ok": True, "state": reached, "version": machine.version, "event_id": event_id}
    )


async def list_events(request: Request) -> Response:
    """``GET …/events?limit=`` (default 20, at most 50), newest first."""
    machine = emulator_of(request).machine(
        request.path_params["app_name"], request.path_params["machine_id"]
    )
    limit = query_int(request, "limit", 20, 1, SHOWN_EVENTS)
    return json_response(machine.events[:limit])


async def list_versions(request: Request) -> Response:
    """``GET …/versions``: every config version, newest first."""
    machine = emulator_of(request).machine(
        request.path_params["app_name"], request.path_params["machine_id"]
    )
    return json_response([{"version": v, "user_config": c} for v, c in reversed(machine.versions)])


async def exec_machine(request: Request) -> Response:
    """``POST …/exec``: run a command in the machine's environment (200 even if it fails)."""
    body = await read_json(request)
    machine = emulator_of(request).machine(
        request.path_params["app_name"], request.path_params["machine_id"]
    )
    result = await emulator_of(request).exec_command(
        machine,
        command=body.get("command"),
        cmd=body.get("cmd"),
        stdin=body.get("stdin"),
        timeout_s=body.get("timeout"),
    )
    return json_response(result)


async def get_metadata(request: Request) -> Response:
    """``GET …/metadata``: the whole map."""
    machine = emulator_of(request).machine(
        request.path_params["app_name"], request.path_params["machine_id"]
    )
    return json_response(machine.config.get("metadata") or {})


async def patch_metadata(request: Request) -> Response:
    """``PATCH``/``PUT …/metadata``: set several keys (null or "" removes); 412 on a stale
    ``machine_version``. Metadata writes need no lease nonce (fly-go's ``SetMetadata`` and
    ``DeleteMetadata`` send none, and flyctl calls them while it holds the lease)."""
    body = await read_json(request)
    machine = _existing(request)
    expected = body.get("machine_version")
    if expected not in (None, "") and expected != machine.version:
        raise ErrorReply(
            412, f"machine {machine.id} is at version {machine.version}, not {expected}"
        )
    changes = body.get("metadata") or {}
    if not isinstance(changes, dict) or not all(
        v is None or isinstance(v, str) for v in changes.values()
    ):
        raise bad_request("metadata must map keys to strings (or null to remove)")
    _write_metadata(machine, changes)
    return Response(status_code=204)


async def get_metadata_key(request: Request) -> Response:
    """``GET …/metadata/{key}``: ``{"value": …}`` or 404."""
    machine = emulator_of(request).machine(
        request.path_params["app_name"], request.path_params["machine_id"]
    )
    key = request.path_params["key"]
    metadata = machine.config.get("metadata") or {}
    if key not in metadata:
        raise not_found(f"metadata key {key!r} not found")
    return json_response({"value": metadata[key]})


async def set_metadata_key(request: Request) -> Response:
    """``POST …/metadata/{key}`` with ``{value}``: 204."""
    body = await read_json(request)
    machine = _existing(request)
    value = body.get("value")
    if not isinstance(value, str):
        raise bad_request("value is required and must be a string")
    _write_metadata(machine, {request.path_params["key"]: value})
    return Response(status_code=204)


async def delete_metadata_key(request: Request) -> Response:
    """``DELETE …/metadata/{key}``: 204."""
    machine = _existing(request)
    _write_metadata(machine, {request.path_params["key"]: None})
    return Response(status_code=204)


async def acquire_lease(request: Request) -> Response:
    """``POST …/lease`` with ``{ttl, description}`` or ``?ttl=``: 201 in Fly's envelope;
    with the current nonce in ``fly-machine-lease-nonce`` it refreshes the lease."""
    body = await read_json(request, required=False)
    machine = _existing(request)
    ttl = body.get("ttl", request.query_params.get("ttl") or DEFAULT_TTL_S)
    try:
        ttl_s = int(ttl)
    except (TypeError, ValueError):
        raise bad_request("invalid ttl: must be a number of seconds") from None
    lease = acquire(
        machine,
        ttl_s=ttl_s,
        description=str(body.get("description") or ""),
        nonce=nonce_of(request),
        owner=emulator_of(request).config.lease_owner,
    )
    return json_response({"status": "success", "data": lease.to_dict()}, 201)


async def get_lease(request: Request) -> Response:
    """``GET …/lease``: the live lease in Fly's envelope, or 404 "lease not found" (a
    destroyed machine holds none)."""
    lease = _lease_holder(request).live_lease()
    if lease is None:
        raise lease_not_found()
    return json_response({"status": "success", "data": lease.to_dict()})


async def release_lease(request: Request) -> Response:
    """``DELETE …/lease`` with the nonce header; 404 "lease not found" when none is live
    (flyctl releases its lease after destroying the machine, and expects that answer)."""
    release(_lease_holder(request), nonce_of(request))
    return json_response(_OK)


def _lease_holder(request: Request) -> MachineRecord:
    machine = emulator_of(request).machine(
        request.path_params["app_name"], request.path_params["machine_id"]
    )
    if machine.state in ("destroying", "destroyed"):
        machine.lease = None  # a destroyed machine's lease went with it
    return machine


def _wait_timeout_s(raw: str | None) -> float:
    """Seconds of a wait's ``timeout``: integer seconds (the spec) or a Go duration ("30s")."""
    if raw in (None, ""):
        return _MAX_WAIT_S
    try:
        timeout_s = float(int(raw))
    except ValueError:
        timeout_s = parse_duration_s(raw)
    if not 1 <= timeout_s <= _MAX_WAIT_S:
        raise bad_request(f"invalid_argument: timeout must be between 1s and {_MAX_WAIT_S}s")
    return timeout_s


def _existing(request: Request) -> MachineRecord:
    machine = emulator_of(request).machine(
        request.path_params["app_name"], request.path_params["machine_id"]
    )
    if machine.state in ("destroying", "destroyed"):
        raise machine_not_found()
    return machine


def _live(request: Request) -> MachineRecord:
    return emulator_of(request).live_machine(
        request.path_params["app_name"], request.path_params["machine_id"], nonce_of(request)
    )


def _write_metadata(machine: MachineRecord, changes: dict[str, Any]) -> None:
    # Metadata lives in the config but, as on Fly, changing it makes no new version.
    metadata = dict(machine.config.get("metadata") or {})
    for key, value in changes.items():
        if value in (None, ""):
            metadata.pop(key, None)
        else:
            metadata[key] = value
    machine.config = {**machine.config, "metadata": metadata}
    machine.versions[-1] = (machine.version, machine.config)
    machine.touch()


_M = "/v1/apps/{app_name}/machines"
_ID = _M + "/{machine_id}"
MACHINE_ROUTES = [
    Route(_M, list_machines, methods=["GET"]),
    Route(_M, create_machine, methods=["POST"]),
    Route(_ID, get_machine, methods=["GET"]),
    Route(_ID, update_machine, methods=["POST"]),
    Route(_ID, delete_machine, methods=["DELETE"]),
    Route(_ID + "/stop", stop_machine, methods=["POST"]),
    Route(_ID + "/start", start_machine, methods=["POST"]),
    Route(_ID + "/restart", restart_machine, methods=["POST"]),
    Route(_ID + "/signal", signal_machine, methods=["POST"]),
    Route(_ID + "/wait", wait_machine, methods=["GET"]),
    Route(_ID + "/suspend", suspend_machine, methods=["POST"]),
    Route(_ID + "/cordon", cordon_machine, methods=["POST"]),
    Route(_ID + "/uncordon", uncordon_machine, methods=["POST"]),
    Route(_ID + "/ps", list_processes, methods=["GET"]),
    Route(_ID + "/events", list_events, methods=["GET"]),
    Route(_ID + "/versions", list_versions, methods=["GET"]),
    Route(_ID + "/exec", exec_machine, methods=["POST"]),
    Route(_ID + "/metadata", get_metadata, methods=["GET"]),
    Route(_ID + "/metadata", patch_metadata, methods=["PATCH", "PUT"]),
    Route(_ID + "/metadata/{key}", get_metadata_key, methods=["GET"]),
    Route(_ID + "/metadata/{key}", set_metadata_key, methods=["POST"]),
    Route(_ID + "/metadata/{key}", delete_metadata_key, methods=["DELETE"]),
    Route(_ID + "/lease", acquire_lease, methods=["POST"]),
    Route(_ID + "/lease", get_lease, methods=["GET"]),
    Route(_ID + "/lease", release_lease, methods=["DELETE"]),
]
