"""A scheduled function's runs inside its machine: no caller, outcomes written to the log.

``python -m flyjobs.worker`` comes here when its payload has a ``schedule`` (see
`flyjobs._wire.call_envelope`). Nobody waits for the result, so each run's outcome is one line of
the machine's log, `RUN_RECORD_PREFIX` then a JSON object, which ``flyjobs schedule ls`` reads back
later through the logs API::

    {"fn": "module:qualname",
     "status": "ok" | "failed" | "timeout" | "skipped" | "crashed" | "pending" | "running",
     "tick": float,          # the schedule tick the run belongs to (unix s, scaled clock)
     "started": float,       # when it started (unix s, scaled clock); = tick for a skip
     "duration_s": float,    # real seconds it ran
     "error": None | {"type": str, "message": str, "traceback": str},
     "value": None | str,    # repr of the returned value, cut to 200 characters
     "next_due": None | float, "attempt": int, "machine": str}

(``pending``, written by a cron resident before it sleeps, is no run: it names the next tick;
``running``, written as a run starts, tells ``flyjobs schedule check`` that the tick is being
run, not late.)

- A Fly-scheduled machine (``{"every": "hourly"}``...) runs the function once per start and
  exits. The function's own exception is a recorded outcome (exit 0); a run that cannot import
  the function or dies exits non-zero, and Fly's ``on-failure`` restart policy
  (``max_retries`` = the function's ``retries``) runs it again. While a run outlasts its
  interval, each tick it covers is recorded as skipped: Fly does not start a running machine.
- A cron machine (``{"cron": ..., "tz": ...}``) is resident: it sleeps until each tick, runs the
  function in a child worker (the same mode, one run), runs it again after a crash up to
  ``retries`` times, then records every tick that fell due during the run as skipped and waits
  for the first tick after now (`flyjobs._declare.schedule.cron_ticks`, which alone imports
  ``cronsim`` on a machine). It notes each tick it takes in a state file of its root; when its
  root is kept (``rootfs.persist``, with ``alert_url`` or ``catch_up="latest"``) and it comes
  back from a stop or crash, it records the ticks that fell meanwhile as ``missed`` and alerts
  them once, or, with ``catch_up="latest"``, runs the most recent of them at once.

Under the emulator's ``--time-scale`` the clock runs ``FLYJOBS_TIME_SCALE`` times as fast from
``FLYJOBS_TIME_ORIGIN``, as the emulator's schedules do. Standard library and msgpack only
(besides cronsim for cron), as for the worker.
"""

from __future__ import annotations

import _thread
import os
import sys
import time

from flyjobs._declare.schedule import cron_ticks
from flyjobs._machine_side.code import Bundles, CodeRefused
from flyjobs._machine_side.drift import explain_missing
from flyjobs._machine_side.run import TAIL_CHARS, call, from_user_code, import_function
from flyjobs._machine_side.shared import EventLoop, capture_output
from flyjobs._wire.log_lines import ERROR_TRACEBACK_CHARS, RUN_RECORD_PREFIX, error_line
from flyjobs._wire.machine import (
    DEFAULT_TIMEOUT_S,
    EXIT_BAD_PAYLOAD,
    EXIT_DEADLINE,
    EXIT_IMPORT_FAILED,
    EXIT_OK,
    MACHINE_ROOT_ENV,
    SCHEDULE_INTERVALS_S,
    TIME_ORIGIN_ENV,
    TIME_SCALE_ENV,
    WORKER_MODULE,
)
from flyjobs._wire.seal import RESULT_KEY_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from flyjobs._wire.call_envelope import CallEnvelope

__all__ = ("Clock", "run_scheduled")

#: Set in a cron resident's child worker: the tick it runs, on the scaled clock.
_TICK_ENV = "FLYJOBS_SCHEDULED_TICK"
#: Set in a cron resident's child worker: which attempt of the tick this is (1-based).
_ATTEMPT_ENV = "FLYJOBS_SCHEDULED_ATTEMPT"
#: Most skipped ticks recorded one by one after a long run (the rest are counted in one line).
_MAX_SKIP_RECORDS = 50
#: Characters of a returned value's repr kept in its record.
_VALUE_CHARS = 200
#: Seconds a cron resident's child gets past its timeout before it is killed (and more when
#: it may have an alert to send: `flyjobs._machine_side.alerts` bounds its tries to about 17 s).
_CHILD_GRACE_S = 10.0
_ALERT_GRACE_S = 20.0
#: Where a cron resident keeps the last tick it took, under its root filesystem (which outlives
#: its stops and restarts when deployed with ``rootfs.persist = "always"``).
_STATE_PATH = "/var/lib/flyjobs/schedule-state.json"


class Clock:
    """Unix time, running ``FLYJOBS_TIME_SCALE`` times as fast from ``FLYJOBS_TIME_ORIGIN``."""

    def __init__(self, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
        self.scale = float(environ.get(TIME_SCALE_ENV) or 1.0)
        self.origin = float(environ.get(TIME_ORIGIN_ENV) or 0.0)

    def now(self) -> float:
        return self.origin + (time.time() - self.origin) * self.scale

    def real_seconds(self, scaled_s: float) -> float:
        """Real seconds that `scaled_s` seconds of this clock take."""
        return scaled_s / self.scale

    def sleep_until(self, at: float) -> None:
        while (left := self.real_seconds(at - self.now())) > 0:
            time.sleep(min(left, 60.0))


def _record(**fields: Any) -> None:
    """Write one run record to the machine's log (stderr, unbuffered past this line)."""
    fields.setdefault("machine", os.environ.get("FLY_MACHINE_ID", ""))
    stream = sys.__stderr__
    if stream is not None:
        error = fields.get("error")
        line = error_line(RUN_RECORD_PREFIX, fields, error if isinstance(error, dict) else None)
        stream.write(line + "\n")
        stream.flush()


def _record_skip(
    fn: str, skipped: float, *, next_due: float | None, reason: str, status: str = "skipped"
) -> None:
    """Record the tick ``skipped`` (unix s, scaled clock) of function ``fn`` as not run, with
    ``status`` (``skipped``, or ``missed`` for a tick that passed while the scheduler was down)."""
    _record(
        fn=fn,
        status=status,
        tick=skipped,
        started=skipped,
        duration_s=0.0,
        error=None,
        value=None,
        next_due=next_due,
        attempt=0,
        reason=reason,
    )


def _alert(spec: dict[str, Any], **fields: Any) -> None:
    """Send the schedule's alert, if it has an ``alert_url`` (never raises)."""
    url = spec.get("alert_url")
    if url:
        from flyjobs._machine_side.alerts import send_alert  # lazy: only a failure pays it

        send_alert(str(url), **fields)


def _error(exc: BaseException) -> dict[str, str]:
    import traceback  # lazy: keeps machines light

    # The frames of flyjobs that led to the function are cut: its own frames come first.
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        if not os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(package):
            break
        tb = tb.tb_next
    exc = exc.with_traceback(tb)
    kind = type(exc)
    # The last characters of the traceback: its innermost frames, and the line a log keeps.
    trace = "".join(traceback.format_exception(exc))[-ERROR_TRACEBACK_CHARS:]
    return {
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(exc),
        "traceback": trace,
    }


def run_scheduled(call: CallEnvelope, payload: str) -> int:
    """Run a scheduled payload: a cron resident's loop, or one run; return the exit code."""
    spec = call.schedule or {}
    if "cron" in spec and _TICK_ENV not in os.environ:
        return _Resident(call, spec, payload).loop()
    clock = Clock()
    tick = float(os.environ.get(_TICK_ENV) or clock.now())
    attempt = int(os.environ.get(_ATTEMPT_ENV) or 1)
    return _Run(call, spec, clock, tick, attempt).run()


def _no_fetch(url: str) -> bytes:
    # A scheduled function's bundle is a file of its machine's config: a URL would expire.
    raise OSError("a scheduled function's code bundle travels in its machine's config")


class _Run:
    """One run of the function, recorded."""

    def __init__(
        self, call: CallEnvelope, spec: dict[str, Any], clock: Clock, tick: float, attempt: int
    ) -> None:
        self.call = call
        self.spec = spec
        self.clock = clock
        self.tick = tick
        self.attempt = attempt
        self.started = clock.now()
        self.started_real = time.time()
        self.interval_s = SCHEDULE_INTERVALS_S.get(spec.get("every", ""))
        # A cron resident runs a crashed, timed-out or unimportable run again up to `retries`
        # times: only the last attempt's failure is alerted. (Fly's own restarts are unseen.)
        self.last_attempt = _TICK_ENV not in os.environ or attempt > int(spec.get("retries") or 0)

    def failed(self, status: str, error: dict[str, str], *, final: bool) -> None:
        """Record a run that did not succeed, and alert it when no attempt follows."""
        self.record(status, error=error)
        if final:
            _alert(
                self.spec,
                schedule=self.call.fn,
                status=status,
                tick=self.tick,
                started=self.started,
                attempt=self.attempt,
                error=error,
            )

    def record(self, status: str, **fields: Any) -> None:
        if self.interval_s:
            next_due: float | None = self.tick + self.interval_s
        else:
            next_due = next(cron_ticks(self.spec, self.tick), None)
        _record(
            fn=self.call.fn,
            status=status,
            tick=self.tick,
            started=self.started,
            duration_s=round(time.time() - self.started_real, 6),
            next_due=next_due,
            attempt=self.attempt,
            **{"error": None, "value": None, **fields},
        )

    def run(self) -> int:
        _thread.start_new_thread(
            self._deadline, (float(self.spec.get("timeout_s") or DEFAULT_TIMEOUT_S),)
        )
        if self.interval_s:
            _thread.start_new_thread(self._skips, (self.interval_s,))
        sys.path[:0] = self.call.sys_path
        if self.call.code is not None:
            try:
                Bundles(os.environ.get(RESULT_KEY_ENV), _no_fetch).use(
                    self.call.call_id, self.call.code
                )
            except CodeRefused as exc:
                self.record("failed", error=_error(exc))
                return EXIT_BAD_PAYLOAD

        # What the function prints that would read as a run record is written as its line.
        for tail in capture_output(TAIL_CHARS):
            tail.start(0, self.call.call_id)

        self.record("running")
        fn: Callable[..., Any]
        try:
            fn = import_function(self.call.fn)
        except (Exception, SystemExit) as exc:
            requires = (self.call.code or {}).get("requires", [])
            self.failed("failed", _error(explain_missing(exc, requires)), final=self.last_attempt)
            return EXIT_IMPORT_FAILED
        try:
            args, kwargs = self.call.arguments()
        except Exception as exc:
            self.failed("failed", _error(exc), final=self.last_attempt)
            return EXIT_BAD_PAYLOAD
        try:
            value = call(fn, args, kwargs, EventLoop())
        except (Exception, SystemExit) as exc:
            # The function's own exception is its run's outcome, not a crash to run again.
            self.failed("failed", _error(from_user_code(exc)), final=True)
            return EXIT_OK
        self.record("ok", value=repr(value)[:_VALUE_CHARS])
        return EXIT_OK

    def _deadline(self, timeout_s: float) -> None:
        time.sleep(timeout_s)
        error = {"type": "TimeoutError", "message": f"timeout_s={timeout_s:g}"}
        self.failed("timeout", error, final=self.last_attempt)
        os._exit(EXIT_DEADLINE)

    def _skips(self, interval_s: float) -> None:
        # Fly's next tick comes one interval after this run's; it is skipped while we still run.
        skipped = self.tick
        while True:
            skipped += interval_s
            time.sleep(max(self.clock.real_seconds(skipped - self.clock.now()), 0.0))
            _record_skip(
                self.call.fn,
                skipped,
                next_due=skipped + interval_s,
                reason=f"the run of {self.tick:.0f} was still going",
            )


class _Resident:
    """A cron schedule's resident loop: wait for each tick, run it in a child, record skips."""

    def __init__(self, call: CallEnvelope, spec: dict[str, Any], payload: str) -> None:
        self.call = call
        self.spec = spec
        self.payload = payload
        self.clock = Clock()
        self.retries = int(spec.get("retries") or 0)
        self.timeout_s = float(spec.get("timeout_s") or DEFAULT_TIMEOUT_S)
        self.state_path = os.environ.get(MACHINE_ROOT_ENV, "") + _STATE_PATH
        # What the state is valid for: a changed schedule starts afresh.
        self.state_of = {"fn": call.fn, "cron": spec.get("cron"), "tz": spec.get("tz")}

    def ticks_after(self, after: float) -> Iterator[float]:
        return cron_ticks(self.spec, after)

    def loop(self) -> int:
        tick = self.come_back(self.clock.now())
        after = self.clock.now()
        while True:
            if tick is None:
                tick = next(self.ticks_after(after))
                # So that `schedule ls` can tell when the next run is due before it happens.
                _record(fn=self.call.fn, status="pending", tick=tick, started=tick, next_due=tick)
                self.clock.sleep_until(tick)
            # Taken before it runs: a resident that dies during the run never runs it again.
            self.save(tick)
            self.run_tick(tick)
            now = self.clock.now()
            upcoming = self.ticks_after(tick)
            skipped = 0
            for later in upcoming:
                if later > now:
                    break
                skipped += 1
                if skipped <= _MAX_SKIP_RECORDS:
                    reason = f"the run of {tick:.0f} was still going"
                    _record_skip(self.call.fn, later, next_due=None, reason=reason)
            if skipped > _MAX_SKIP_RECORDS:
                reason = f"{skipped - _MAX_SKIP_RECORDS} more ticks skipped"
                _record_skip(self.call.fn, now, next_due=None, reason=reason)
            # Strictly after both: the tick just run and every tick recorded as skipped.
            after = max(tick, now)
            self.save(after)
            tick = None

    def come_back(self, now: float) -> float | None:
        """Record (and alert) the ticks that fell while this resident was down, since the last
        tick it took (its state file); return the tick to run now, if it catches one up."""
        last = self.load()
        self.save(now)
        if last is None:
            return None  # its first start, or its root was not kept: nothing to tell
        missed = []
        for tick in self.ticks_after(last):
            if tick > now:
                break
            missed.append(tick)
        # catch_up="latest": the most recent missed tick runs now, once (it is taken, and
        # saved as taken, before it runs); the others are told as missed.
        catch_up = missed.pop() if missed and self.spec.get("catch_up") == "latest" else None
        if not missed:
            return catch_up
        reason = "the scheduler was down"
        for tick in missed[-_MAX_SKIP_RECORDS:]:
            _record_skip(self.call.fn, tick, next_due=None, reason=reason, status="missed")
        ticks = "tick" if len(missed) == 1 else "ticks"
        _alert(
            self.spec,
            schedule=self.call.fn,
            status="missed",
            tick=missed[-1],
            error={"type": "MissedTicks", "message": f"{len(missed)} {ticks} missed: {reason}"},
            missed_ticks=missed[-_MAX_SKIP_RECORDS:],
        )
        return catch_up

    def load(self) -> float | None:
        """The last tick this resident took, from its state file, if it is this schedule's."""
        import json  # lazy: keeps machines light

        try:
            with open(self.state_path, encoding="utf-8") as file:
                state = json.load(file)
            if state.get("of") == self.state_of:
                return float(state["after"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass  # none yet, or unreadable: as on a first start
        return None

    def save(self, after: float) -> None:
        """Note that every tick up to ``after`` (unix s, scaled clock) was taken."""
        import json  # lazy: keeps machines light

        folder = os.path.dirname(self.state_path)
        temporary = f"{self.state_path}.{os.getpid()}"
        try:
            os.makedirs(folder, exist_ok=True)
            with open(temporary, "w", encoding="utf-8") as file:
                json.dump({"of": self.state_of, "after": after}, file)
            os.replace(temporary, self.state_path)
        except OSError:
            pass  # a read-only root: the resident runs on, as one whose root is not kept

    def run_tick(self, tick: float) -> None:
        import subprocess  # lazy: keeps machines light

        started, started_real = self.clock.now(), time.time()
        code = 0
        for attempt in range(1, self.retries + 2):
            env = {**os.environ, _TICK_ENV: repr(tick), _ATTEMPT_ENV: str(attempt)}
            argv = [sys.executable, "-m", WORKER_MODULE, "--payload", self.payload]
            grace = _CHILD_GRACE_S + (_ALERT_GRACE_S if self.spec.get("alert_url") else 0.0)
            try:
                code = subprocess.run(
                    argv, env=env, timeout=self.timeout_s + grace, check=False
                ).returncode
            except subprocess.TimeoutExpired:
                code = EXIT_DEADLINE
            if code == EXIT_OK:
                return
        if code in (EXIT_DEADLINE, EXIT_IMPORT_FAILED, EXIT_BAD_PAYLOAD):
            return  # the child recorded why
        error = {"type": "MachineCrashedError", "message": f"the run exited with code {code}"}
        _record(
            fn=self.call.fn,
            status="crashed",
            tick=tick,
            started=started,
            duration_s=round(time.time() - started_real, 6),
            error=error,
            value=None,
            next_due=None,
            attempt=self.retries + 1,
        )
        _alert(
            self.spec,
            schedule=self.call.fn,
            status="crashed",
            tick=tick,
            started=started,
            attempt=self.retries + 1,
            error=error,
        )
