"""Endpoints that act on or observe a machine: stop, start, restart, signal, exec, wait,
events."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final, Literal

import anyio
import httpx

from .._exceptions import NotFoundError, WaitTimeoutError
from ._config_models import StopConfig
from ._core import ClientCore, params, without_none
from ._http import parse_list, parse_model, parse_none
from ._response_models import ExecResult, MachineEvent, StartResult, WaitResult

__all__ = ("ActionsAPI", "WaitState")

#: States `MachinesClient.wait` can wait for.
WaitState = Literal["started", "stopped", "suspended", "destroyed", "failed", "settled"]

#: Longest wait Fly serves in one request, in seconds.
MAX_SERVER_WAIT_S: Final = 60
#: Read time a wait or exec request gets beyond its server-side timeout, in seconds.
READ_MARGIN_S: Final = 10.0
#: Exec timeout assumed for the read timeout when the caller gives none.
DEFAULT_EXEC_TIMEOUT_S: Final = 30
SIGNALS: Final = (
    "SIGABRT",
    "SIGALRM",
    "SIGFPE",
    "SIGHUP",
    "SIGILL",
    "SIGINT",
    "SIGKILL",
    "SIGPIPE",
    "SIGQUIT",
    "SIGSEGV",
    "SIGTERM",
    "SIGTRAP",
    "SIGUSR1",
    "SIGUSR2",
)


class ActionsAPI(ClientCore):
    """Stopping, starting, signalling and waiting for machines; exec and events."""

    async def stop_machine(
        self,
        app: str,
        machine_id: str,
        *,
        signal: str | None = None,
        timeout_s: float | None = None,
        nonce: str | None = None,
    ) -> None:
        """Ask the machine to stop: send ``signal`` (default: the config's ``stop_config``,
        else SIGINT), and kill it if still running after ``timeout_s`` seconds (at most 300).
        Returns once Fly accepted the request; `wait` for ``stopped`` to see it done."""
        body = StopConfig.model_validate({"signal": signal, "timeout": timeout_s}).to_api() or None
        call = self._machine_call(
            "POST", app, machine_id, "/stop", "stop_machine", json=body, nonce=nonce
        )
        await self._requester.call(call, parse_none)

    async def start_machine(
        self, app: str, machine_id: str, *, nonce: str | None = None
    ) -> StartResult:
        """Start a stopped machine (its root filesystem is reset to the image)."""
        call = self._machine_call("POST", app, machine_id, "/start", "start_machine", nonce=nonce)
        return await self._requester.call(call, parse_model(StartResult))

    async def suspend_machine(self, app: str, machine_id: str, *, nonce: str | None = None) -> None:
        """Suspend a started machine: its memory is snapshotted and it stops running until
        `start_machine` resumes it (Fly may cold-boot it instead: suspend is not durable).
        Returns once Fly accepted the request; `wait` for ``suspended`` to see it done."""
        call = self._machine_call(
            "POST", app, machine_id, "/suspend", "suspend_machine", nonce=nonce
        )
        await self._requester.call(call, parse_none)

    async def restart_machine(
        self,
        app: str,
        machine_id: str,
        *,
        signal: str | None = None,
        timeout_s: float | None = None,
        force_stop: bool = False,
        nonce: str | None = None,
    ) -> None:
        """Restart the machine: stop it with ``signal``, killing it after ``timeout_s``
        seconds, then start it. Not repeated after an unknown outcome."""
        stop = StopConfig.model_validate({"signal": signal, "timeout": timeout_s})
        query = params(timeout=stop.timeout, signal=stop.signal, force_stop=force_stop)
        call = self._machine_call(
            "POST",
            app,
            machine_id,
            "/restart",
            "restart_machine",
            safe=False,
            query=query,
            nonce=nonce,
        )
        await self._requester.call(call, parse_none)

    async def signal_machine(
        self, app: str, machine_id: str, signal: str, *, nonce: str | None = None
    ) -> None:
        """Send ``signal`` (``"SIGUSR1"``, ...) to the machine's processes. Not repeated after
        an unknown outcome."""
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {', '.join(SIGNALS)}, not {signal!r}")
        call = self._machine_call(
            "POST",
            app,
            machine_id,
            "/signal",
            "signal_machine",
            safe=False,
            json={"signal": signal},
            nonce=nonce,
        )
        await self._requester.call(call, parse_none)

    async def exec(
        self,
        app: str,
        machine_id: str,
        command: Sequence[str],
        *,
        timeout_s: int | None = None,
        stdin: str | None = None,
        nonce: str | None = None,
    ) -> ExecResult:
        """Run ``command`` (an argument list) in the running machine; return its output.

        Fly answers 200 even when the command fails: check ``ExecResult.exit_code``. Not
        repeated after an unknown outcome (the command may have run).

        :param timeout_s: seconds the command may run (the server's default when ``None``).
        """
        if isinstance(command, str) or not command:
            raise ValueError("command must be a non-empty list of arguments, not a string")
        body = without_none(command=list(command), timeout=timeout_s, stdin=stdin)
        read_s = (timeout_s or DEFAULT_EXEC_TIMEOUT_S) + READ_MARGIN_S
        call = self._machine_call(
            "POST",
            app,
            machine_id,
            "/exec",
            "exec",
            safe=False,
            json=body,
            nonce=nonce,
            read_timeout_s=read_s,
        )
        return await self._requester.call(call, parse_model(ExecResult))

    async def list_events(
        self, app: str, machine_id: str, *, limit: int | None = None
    ) -> list[MachineEvent]:
        """The machine's latest events, newest first (Fly: 20 by default, at most 50)."""
        query = params(limit=str(limit) if limit is not None else None)
        call = self._machine_call("GET", app, machine_id, "/events", "list_events", query=query)
        return await self._requester.call(call, parse_list(MachineEvent))

    async def wait(
        self,
        app: str,
        machine_id: str,
        states: WaitState | Iterable[WaitState] = ("started",),
        *,
        timeout_s: float = 60.0,
        version: str | None = None,
        from_event_id: str | None = None,
    ) -> WaitResult:
        """Block until the machine is in one of ``states``, for up to ``timeout_s`` seconds.

        Fly serves waits of at most 60 s, so a longer timeout is covered by successive waits,
        each for what remains (rounded up to whole seconds, at least 1). A 408 answer means
        "not yet". A machine that is gone (404) counts as ``destroyed``.

        :param version: wait for this version of the machine (after an update).
        :param from_event_id: only consider events after this one.
        :raises WaitTimeoutError: ``timeout_s`` passed first.
        """
        wanted = (states,) if isinstance(states, str) else tuple(states)
        if not wanted:
            raise ValueError("wait needs at least one state")
        deadline = anyio.current_time() + timeout_s
        while (remaining_s := deadline - (sent_at := anyio.current_time())) > 0:
            server_s = max(1, math.ceil(min(MAX_SERVER_WAIT_S, remaining_s)))
            result = await self._wait_once(
                app, machine_id, wanted, server_s, version, from_event_id
            )
            if result is not None:
                return result
            if anyio.current_time() - sent_at < server_s / 2:
                # A server answering 408 early must not turn this loop into a busy one.
                await anyio.sleep(min(1.0, max(0.0, deadline - anyio.current_time())))
        raise WaitTimeoutError(
            f"machine {machine_id} of app {app} did not reach {' or '.join(wanted)} "
            f"within {timeout_s:g} s"
        )

    async def _wait_once(
        self,
        app: str,
        machine_id: str,
        wanted: tuple[str, ...],
        server_s: int,
        version: str | None,
        from_event_id: str | None,
    ) -> WaitResult | None:
        query = [("state", state) for state in wanted]
        query += params(timeout=str(server_s), version=version, from_event_id=from_event_id)
        call = self._machine_call(
            "GET",
            app,
            machine_id,
            "/wait",
            "wait",
            query=query,
            long_poll=True,
            read_timeout_s=server_s + READ_MARGIN_S,
        )
        try:
            return await self._requester.call(call, _parse_wait)
        except NotFoundError:
            if "destroyed" in wanted:
                return WaitResult(ok=True, state="destroyed")
            raise


_parse_wait_result = parse_model(WaitResult)


def _parse_wait(response: httpx.Response) -> WaitResult | None:
    return None if response.status_code == 408 else _parse_wait_result(response)
