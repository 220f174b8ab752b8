"""The retry budget and backoff of `MachinesClient`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ("RetryPolicy",)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a request is retried.

    Retried outcomes: 429 (waiting at least ``Retry-After``), 408, the statuses in
    ``retry_statuses`` and network failures, within ``max_attempts`` attempts in all. Backoff
    doubles from ``base_s`` up to ``max_s`` seconds with "equal jitter" (a delay ``d`` becomes a
    random value in ``[d/2, d]``), so clients that failed together do not retry together.
    Which requests may be repeated at all is decided per endpoint; see `MachinesClient`.

    :param max_attempts: attempts per call, first one included (1 disables retries).
    :param base_s: delay before the first retry, in seconds (before jitter).
    :param max_s: cap of the exponential delay, in seconds.
    :param max_retry_after_s: a ``Retry-After`` longer than this is not waited for; the
        `RateLimitedError` is raised at once.
    :param retry_statuses: 5xx statuses that are retried. 500 is included: Fly answers it for
        transient faults too, and a request that is unsafe to repeat is not repeated anyway.
    """

    max_attempts: int = 5
    base_s: float = 0.2
    max_s: float = 10.0
    max_retry_after_s: float = 60.0
    retry_statuses: frozenset[int] = field(default=frozenset({500, 502, 503, 504}))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.base_s < 0 or self.max_s < self.base_s:
            raise ValueError("RetryPolicy needs 0 <= base_s <= max_s")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)

    def delay_s(self, retry: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to sleep before retry number ``retry`` (1 for the first retry).

        A server's ``Retry-After`` is a floor: the jittered backoff is added on top of nothing
        shorter than it.
        """
        ceiling = min(self.max_s, self.base_s * 2.0 ** (retry - 1))
        delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s + rng.uniform(0, self.base_s))
        return delay
