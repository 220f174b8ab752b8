"""Client-side token buckets that follow Fly's published Machines API rate limits.

Fly limits each *action* (create, start, get, ...) per machine, or per app for app-wide actions:
1 request/s with bursts of 3, except Get Machine at 5/s with bursts of 10, and app deletion at
100/minute. Pacing a burst of work here costs the same wall time as Fly's 429s would, without the
failed round trips or a retry budget spent on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import anyio

__all__ = ("Rate", "RateLimiter", "RateLimits")


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket: ``per_s`` requests per second on average, ``burst`` at once."""

    per_s: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_s <= 0 or self.burst < 1:
            raise ValueError("Rate needs per_s > 0 and burst >= 1")


_FLY_OVERRIDES: Mapping[str, Rate] = MappingProxyType(
    {"get_machine": Rate(5.0, 10), "delete_app": Rate(100 / 60, 100)}
)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Which bucket each request draws from.

    Buckets are keyed by action name and scope (the machine id, or the app name for app-wide
    actions). ``wait`` long-polls draw from their own per-machine bucket like any other action:
    a wait that blocks for up to a minute never comes near the limit, and a wait that returns at
    once is paced like the rest.

    :param default: the bucket of every action not in ``overrides`` (Fly: 1/s, burst 3).
    :param overrides: per-action buckets (Fly: ``get_machine`` 5/s burst 10, ``delete_app``
        100/minute).
    :param margin: fraction of each rate left unused. Requests paced exactly at Fly's rate
        reach it with network jitter, and one that arrives a little early is refused.
    """

    default: Rate = Rate(1.0, 3)
    overrides: Mapping[str, Rate] = field(default_factory=lambda: _FLY_OVERRIDES)
    margin: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise ValueError("RateLimits.margin must be in [0, 1)")

    def rate(self, action: str) -> Rate:
        """The bucket of ``action``, its rate reduced by ``margin``."""
        published = self.overrides.get(action, self.default)
        return Rate(published.per_s * (1 - self.margin), published.burst)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Paces requests so that none goes out faster than its `RateLimits` bucket allows.

    Each caller reserves a token at once (the balance may go negative) and sleeps off the
    deficit, so concurrent callers are served in arrival order without a lock. A 429 from the
    API (`penalize`) empties a bucket for as long as the API asks, and the requests behind it
    wait in line.

    :param adaptive: pace a bucket only once the API has throttled it (`penalize`): until
        then its requests go at once. For an API on this host, which rarely limits: when it
        does, requests back off and are then paced as on Fly instead of retried at once.
    """

    #: Buckets kept before idle (full) ones are forgotten.
    MAX_BUCKETS = 10_000

    def __init__(self, limits: RateLimits, *, adaptive: bool = False) -> None:
        self.limits = limits
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        #: the buckets paced so far, when adaptive (None: all of them)
        self._paced: set[tuple[str, str]] | None = set() if adaptive else None

    async def acquire(self, action: str, scope: str) -> None:
        """Wait until a request for ``action`` on ``scope`` may be sent."""
        if self._paced is not None and (action, scope) not in self._paced:
            return
        delay_s = self.reserve(action, scope, anyio.current_time())
        if delay_s <= 0:
            return
        try:
            await anyio.sleep(delay_s)
        except BaseException:
            bucket = self._buckets.get((action, scope))
            if bucket is not None:
                bucket.tokens += 1  # the request is not sent after all: give its token back
            raise

    def reserve(self, action: str, scope: str, now: float) -> float:
        """Take a token for a request at time ``now`` (seconds, monotonic); return how many
        seconds the request must wait before it is sent."""
        rate = self.limits.rate(action)
        bucket = self._buckets.get((action, scope))
        if bucket is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._forget_idle(now)
            bucket = self._buckets[(action, scope)] = _Bucket(float(rate.burst), now)
        else:
            refill = (now - bucket.updated) * rate.per_s
            bucket.tokens = min(float(rate.burst), bucket.tokens + refill)
            bucket.updated = now
        bucket.tokens -= 1
        return max(0.0, -bucket.tokens / rate.per_s)

    def penalize(self, action: str, scope: str, wait_s: float, now: float) -> None:
        """The API throttled a request for ``action`` on ``scope`` at time ``now`` (monotonic
        seconds): nothing more is sent from that bucket for ``wait_s`` seconds (its
        ``Retry-After``, or a backoff), then requests are paced at its rate."""
        if self._paced is not None:
            self._paced.add((action, scope))
        self.reserve(action, scope, now)  # refill the bucket to now
        bucket = self._buckets[(action, scope)]
        # Give back the token just taken, with the debt of wait_s seconds: the next
        # reservation waits at least that long.
        rate = self.limits.rate(action)
        bucket.tokens = min(bucket.tokens + 1, 1 - wait_s * rate.per_s)

    def _forget_idle(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            rate = self.limits.rate(key[0])
            if bucket.tokens + (now - bucket.updated) * rate.per_s >= rate.burst:
                del self._buckets[key]
                if self._paced is not None:
                    self._paced.discard(key)  # throttled long ago: unpaced again
