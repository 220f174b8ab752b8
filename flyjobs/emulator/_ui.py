"""The dev dashboard (``flyjobs dev --ui``): server-rendered HTML at ``/ui/``, refreshed by polling.

It reads the emulator's own state: apps; machines with state, batch, function and age; each
machine's events and logs; flyjobs batches with their progress in inputs (done and failed, told
by the workers' call marks and error lines, out of the batch's size when its map knew it) and
machines; scheduled machines (Fly's schedules and flyjobs' cron residents) with their last runs,
each run's status read from its worker's run record (`flyjobs._ui_outcomes`). No build
step and no script library: each page reloads its ``#content`` from ``?fragment=1`` every
`REFRESH_MS` milliseconds with a few lines of plain JavaScript.

The dashboard is read-only and sits outside the API's token check, behind a key of its own:
``/ui/?key=KEY`` (the URL ``flyjobs dev --ui`` prints) sets a cookie for the other pages.
"""

from __future__ import annotations

import hmac
import html
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .._wire.metadata import (
    META_BATCH_ID,
    META_BATCH_SIZE,
    META_CALL_ID,
    META_FUNCTION,
    META_SCHEDULE,
    META_SCHEDULE_SPEC,
)
from ._machine import MachineRecord
from ._state import Emulator
from ._ui_outcomes import Outcomes

__all__ = ("REFRESH_MS", "build_ui")

#: Milliseconds between refreshes of an open page.
REFRESH_MS = 1000
_COOKIE = "flyjobs_ui"
_MACHINE_ROWS = 300
_LOG_LINES = 500
_FINISHED = frozenset({"stopped", "destroyed", "failed"})

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; text-align: left; }
th { border-bottom: 1px solid #999; } tr:nth-child(even) td { background: #f4f4f6; }
code, pre { font: 12px ui-monospace, monospace; } pre { background: #111; color: #ddd;
  padding: .8em; max-height: 40em; overflow: auto; }
.state { padding: 0 .5em; border-radius: .6em; color: #fff; background: #888; }
.started, .starting { background: #1f7a3a; } .created { background: #6a5acd; }
.stopped { background: #555; } .destroyed, .destroying { background: #999; }
.failed { background: #b3261e; }
.bar { display: inline-block; width: 12em; height: .8em; background: #ddd; }
.bar span { display: block; height: 100%; background: #1f7a3a; }
.muted { color: #777; } .bad { color: #b3261e; }
"""

_SCRIPT = f"""
setInterval(async () => {{
  const url = new URL(location.href); url.searchParams.set("fragment", "1");
  const response = await fetch(url, {{credentials: "same-origin"}});
  if (response.ok) document.getElementById("content").innerHTML = await response.text();
}}, {REFRESH_MS});
"""


def build_ui(emulator: Emulator, key: str) -> Starlette:
    """The dashboard's ASGI app, for requests whose path starts with ``/ui``."""

    def guarded(render: Callable[[Request], tuple[str, str]]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            given = request.query_params.get("key")
            if given is not None and hmac.compare_digest(given, key):
                response = RedirectResponse(request.url.remove_query_params("key"), 303)
                response.set_cookie(_COOKIE, key, httponly=True, samesite="strict")
                return response
            if not hmac.compare_digest(request.cookies.get(_COOKIE, ""), key):
                return HTMLResponse(
                    "<p>Open the dashboard through the URL <code>flyjobs dev --ui</code>"
                    " printed (it carries the key).</p>",
                    403,
                )
            title, body = render(request)
            if request.query_params.get("fragment"):
                return HTMLResponse(body)
            return HTMLResponse(_page(title, body))

        return endpoint

    outcomes = Outcomes()

    def overview(_request: Request) -> tuple[str, str]:
        return "overview", _overview(emulator, time.time(), outcomes)

    def machine_page(request: Request) -> tuple[str, str]:
        machine = emulator.machines.get(request.path_params["machine_id"])
        if machine is None:
            return "machine", "<p>No such machine (destroyed machines are kept a while).</p>"
        return f"machine {machine.id}", _machine_detail(machine, time.time())

    return Starlette(
        routes=[
            Route("/ui", guarded(overview)),
            Route("/ui/", guarded(overview)),
            Route("/ui/machines/{machine_id}", guarded(machine_page)),
        ]
    )


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1><a href='/ui/'>flyjobs dev</a>"
        f" <span class='muted'>{_e(title)}</span></h1><div id='content'>{body}</div>"
        f"<script>{_SCRIPT}</script></body></html>"
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], empty: str, ident: str) -> str:
    rendered = ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    if not rendered:
        return f"<p id='{ident}' class='muted'>{_e(empty)}</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table id='{ident}'><tr>{head}</tr>{''.join(rendered)}</table>"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _state(state: str) -> str:
    return f"<span class='state {_e(state)}'>{_e(state)}</span>"


def _meta(machine: MachineRecord, key: str) -> str:
    value = (machine.config.get("metadata") or {}).get(key, "")
    return value if isinstance(value, str) else ""


def _overview(emulator: Emulator, now: float, outcomes: Outcomes) -> str:
    machines = sorted(emulator.machines.values(), key=lambda m: m.created_at, reverse=True)
    outcomes.forget_others(machines)
    return "".join(
        [
            f"<p class='muted'>updated {time.strftime('%H:%M:%S', time.localtime(now))}</p>",
            "<h2>Apps</h2>",
            _apps(emulator, machines),
            "<h2>Batches</h2>",
            _batches(machines, outcomes),
            "<h2>Schedules</h2>",
            _schedules(machines, now, outcomes),
            "<h2>Machines</h2>",
            _machines(machines[:_MACHINE_ROWS], now),
        ]
    )


def _apps(emulator: Emulator, machines: list[MachineRecord]) -> str:
    total = Counter(m.app_name for m in machines)
    live = Counter(m.app_name for m in machines if m.state not in _FINISHED)
    rows = (
        (_e(name), str(live[name]), str(total[name]), _e(app.org_slug))
        for name, app in sorted(emulator.apps.items())
    )
    return _table(("app", "live machines", "machines", "org"), rows, "no apps yet", "apps")


def _batches(machines: list[MachineRecord], outcomes: Outcomes) -> str:
    batches: dict[str, list[MachineRecord]] = {}
    for machine in machines:
        batch = _meta(machine, META_BATCH_ID)
        if batch:
            batches.setdefault(batch, []).append(machine)
    rows = []
    for batch, members in batches.items():
        counts = outcomes.batch(members)
        size = _meta(members[0], META_BATCH_SIZE)
        total = int(size) if size.isdigit() and int(size) > 0 else None
        if total is not None:
            percent = min(100, 100 * counts.done // total)
            progress = f"<span class='bar'><span style='width:{percent}%'></span></span> "
        else:
            progress = ""  # a map of an iterable with no len(): no total to measure against
        progress += f"{counts.done}/{total if total is not None else '?'} inputs"
        finished = sum(1 for m in members if m.state in _FINISHED)
        failed = str(counts.failed) if not counts.failed else f"<b class='bad'>{counts.failed}</b>"
        rows.append(
            (
                f"<code>{_e(batch)}</code>",
                _e(_meta(members[0], META_FUNCTION)),
                str(counts.done),
                progress,
                failed,
                str(len(members) - finished),
                f"{finished}/{len(members)}",
            )
        )
    headers = (
        "batch", "function", "inputs done", "progress", "inputs failed", "machines running",
        "machines finished",
    )  # fmt: skip
    return _table(headers, rows, "no batches", "batches")


def _schedules(machines: list[MachineRecord], now: float, outcomes: Outcomes) -> str:
    rows = []
    for machine in machines:
        # Fly's schedules, and flyjobs' cron residents (no config.schedule: always running).
        schedule = machine.config.get("schedule") or _meta(machine, META_SCHEDULE_SPEC)
        if not schedule:
            continue
        recorded = outcomes.runs(machine)
        if recorded:
            # The run's own record: a function that raised exits 0, and is a failed run.
            last = ", ".join(
                f"{_age(max(now - run.at_ms / 1000, 0))} ago ({run.status}"
                + (f": {run.error}" if run.error else "")
                + ")"
                for run in recorded
            )
        else:
            runs = [e for e in machine.events if e.get("type") == "exit"][:5]
            last = ", ".join(
                f"{_age(now - e['timestamp'] / 1000)} ago (exit {_exit_of(e)})" for e in runs
            )
        rows.append(
            (
                _machine_link(machine),
                _e(machine.app_name),
                _e(_meta(machine, META_SCHEDULE) or _meta(machine, META_FUNCTION) or machine.name),
                _e(schedule),
                _state(machine.state),
                _e(last) or "<span class='muted'>no run yet</span>",
            )
        )
    headers = ("machine", "app", "function", "schedule", "state", "last runs")
    return _table(headers, rows, "no scheduled machines", "schedules")


def _machines(machines: list[MachineRecord], now: float) -> str:
    rows = (
        (
            _machine_link(m),
            _e(m.name),
            _e(m.app_name),
            _state(m.state),
            f"<code>{_e(_meta(m, META_BATCH_ID) or '-')}</code>",
            _e(_meta(m, META_FUNCTION) or "-"),
            _e(m.region),
            _age(now - m.created_at),
        )
        for m in machines
    )
    headers = ("machine", "name", "app", "state", "batch", "function", "region", "age")
    return _table(headers, rows, "no machines yet", "machines")


def _machine_link(machine: MachineRecord) -> str:
    return f"<a href='/ui/machines/{_e(machine.id)}'><code>{_e(machine.id)}</code></a>"


def _exit_of(event: dict[str, Any]) -> str:
    code = ((event.get("request") or {}).get("exit_event") or {}).get("exit_code")
    return "?" if code is None else str(code)


def _machine_detail(machine: MachineRecord, now: float) -> str:
    facts = (
        ("state", _state(machine.state)),
        ("app", _e(machine.app_name)),
        ("name", _e(machine.name)),
        ("call", _e(_meta(machine, META_CALL_ID) or "-")),
        ("batch", _e(_meta(machine, META_BATCH_ID) or "-")),
        ("function", _e(_meta(machine, META_FUNCTION) or "-")),
        ("image", _e(machine.config.get("image", ""))),
        ("region", _e(machine.region)),
        ("age", _age(now - machine.created_at)),
    )
    events = (
        (
            _e(e.get("type", "")),
            _e(e.get("status", "")),
            _e(e.get("source", "")),
            _e(time.strftime("%H:%M:%S", time.localtime(e.get("timestamp", 0) / 1000))),
            _e(_exit_of(e)) if e.get("type") == "exit" else "",
        )
        for e in machine.events
    )
    return "".join(
        [
            _table(("", ""), ((f"<b>{k}</b>", v) for k, v in facts), "", "machine"),
            "<h2>Events</h2>",
            _table(("type", "status", "source", "time", "exit code"), events, "none", "events"),
            f"<h2>Logs <span class='muted'>(last {_LOG_LINES} lines)</span></h2>",
            f"<pre id='logs'>{_e(_log_tail(machine))}</pre>",
        ]
    )


def _log_tail(machine: MachineRecord) -> str:
    lines, _ = machine.output.read(None, machine.output.max_bytes)
    return "\n".join(line.text for line in lines[-_LOG_LINES:])
