"""A scheduled function's alerts: a signed JSON POST to its ``alert_url`` on a failed or missed run.

The machine itself sends them (nobody else is there when a run fails): the run that failed, or
a cron resident that comes back and finds it missed ticks while it was down. The body is one
JSON object::

    {"alert": "flyjobs-schedule", "id": "<schedule>@<tick>:<status>",
     "schedule": "module:qualname", "app": str, "machine": str,
     "status": "failed" | "timeout" | "crashed" | "missed",
     "tick": float, "started": float | None, "attempt": int,
     "error": {"type": str, "message": str},
     "missed_ticks": [float, ...],      # a missed alert: the ticks missed, oldest first
     "sent_at": float}

(times are unix seconds on the schedule's clock). ``Flyjobs-Signature: sha256=<hex>`` is the
HMAC-SHA256 of the exact body under the app's ``FLYJOBS_RESULT_KEY``; a receiver recomputes it
and compares in constant time, then may refuse an old ``sent_at`` and drop an ``id`` it has
seen. The key travels in no request, and without it no alert is sent (a line in the log says
so). A POST is tried `ATTEMPTS` times with backoff; a 2xx ends it, so does a refusal (a 4xx
other than 408 and 429). Nothing here raises: a dead alert URL never breaks the schedule.

Standard library only, loaded only when an alert is sent (``hashlib`` loads OpenSSL).
"""

from __future__ import annotations

import json
import os
import sys
import time

from flyjobs._wire.seal import RESULT_KEY_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("ATTEMPTS", "SIGNATURE_HEADER", "send_alert", "signature")

#: The request header that carries the body's signature.
SIGNATURE_HEADER = "Flyjobs-Signature"
#: Tries of one alert, the seconds waited before each retry, and each try's timeout (s): at
#: most about 17 s, so that a run's exit (or a resident's next tick) is not held up for long.
ATTEMPTS = 3
_BACKOFF_S = (0.5, 1.5)
_TIMEOUT_S = 5.0
#: Characters of an exception message sent.
_MESSAGE_CHARS = 2000


def signature(key: str, body: bytes) -> str:
    """The `SIGNATURE_HEADER` value of ``body``: ``sha256=`` and the hex HMAC-SHA256 under
    ``key``."""
    import hashlib  # lazy: keeps machines light
    import hmac  # lazy: keeps machines light

    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def send_alert(
    url: str,
    *,
    schedule: str,
    status: str,
    tick: float,
    started: float | None = None,
    attempt: int = 0,
    error: dict[str, Any] | None = None,
    missed_ticks: list[float] | None = None,
    now: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """POST one alert to ``url``; return whether a 2xx answered. Never raises."""
    key = os.environ.get(RESULT_KEY_ENV)
    if not key:
        _note(f"alert of {status} run not sent: no {RESULT_KEY_ENV} to sign it with")
        return False
    message = {
        "alert": "flyjobs-schedule",
        "id": f"{schedule}@{tick:.3f}:{status}",
        "schedule": schedule,
        "app": os.environ.get("FLY_APP_NAME", ""),
        "machine": os.environ.get("FLY_MACHINE_ID", ""),
        "status": status,
        "tick": tick,
        "started": started,
        "attempt": attempt,
        "error": {
            "type": str((error or {}).get("type", "")),
            "message": str((error or {}).get("message", ""))[:_MESSAGE_CHARS],
        },
        "missed_ticks": list(missed_ticks or []),
        "sent_at": time.time() if now is None else now,
    }
    body = json.dumps(message).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "flyjobs-alert",
        SIGNATURE_HEADER: signature(key, body),
    }
    why = ""
    for attempt_no in range(ATTEMPTS):
        if attempt_no:
            sleep(_BACKOFF_S[min(attempt_no - 1, len(_BACKOFF_S) - 1)])
        code, why = _post(url, body, headers)
        if 200 <= code < 300:
            return True
        if 400 <= code < 500 and code not in (408, 429):
            break
    # The URL may hold a secret (a webhook's token): the log names the failure, not the URL.
    _note(f"alert of {status} run not delivered after {attempt_no + 1} tries: {why}")
    return False


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """(the HTTP status, or 0 when no answer came; why it failed)."""
    import urllib.error  # lazy: keeps machines light
    import urllib.request  # lazy: keeps machines light

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as answer:
            return int(answer.status), f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return 0, type(exc).__name__


def _note(line: str) -> None:
    stream = sys.__stderr__
    if stream is not None:
        stream.write(f"flyjobs: {line}\n")
        stream.flush()
