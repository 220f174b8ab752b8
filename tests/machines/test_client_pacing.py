"""Token buckets and backoff: the pure logic behind rate limiting and retries."""

from __future__ import annotations

import random

import anyio
import pytest

from flyjobs.machines import Rate, RateLimits, RetryPolicy
from flyjobs.machines._ratelimit import RateLimiter


def _delays(
    limiter: RateLimiter, times: list[float], action: str = "start", scope: str = "m1"
) -> list[float]:
    return [round(limiter.reserve(action, scope, t), 6) for t in times]


def test_burst_then_one_per_second() -> None:
    limiter = RateLimiter(RateLimits(margin=0))
    assert _delays(limiter, [0, 0, 0, 0, 0]) == [0, 0, 0, 1, 2]


def test_tokens_refill_over_time_up_to_the_burst() -> None:
    limiter = RateLimiter(RateLimits(margin=0))
    assert _delays(limiter, [0, 0, 0]) == [0, 0, 0]
    assert _delays(limiter, [100, 100, 100, 100]) == [0, 0, 0, 1]


def test_buckets_are_per_action_and_scope() -> None:
    limiter = RateLimiter(RateLimits(margin=0))
    for _ in range(3):
        limiter.reserve("start", "m1", 0)
    assert limiter.reserve("start", "m2", 0) == 0
    assert limiter.reserve("stop", "m1", 0) == 0
    assert limiter.reserve("start", "m1", 0) == 1


def test_get_machine_has_fly_s_larger_budget() -> None:
    limiter = RateLimiter(RateLimits(margin=0))
    assert _delays(limiter, [0] * 12, action="get_machine") == [0] * 10 + [0.2, 0.4]


def test_margin_leaves_part_of_the_rate_unused() -> None:
    limits = RateLimits(default=Rate(10.0, 1), margin=0.5)
    assert _delays(RateLimiter(limits), [0, 0]) == [0, 0.2]


def test_idle_buckets_are_forgotten() -> None:
    limiter = RateLimiter(RateLimits())
    limiter.MAX_BUCKETS = 3
    for scope in ("a", "b", "c"):
        limiter.reserve("start", scope, 0)
    limiter.reserve("start", "d", 100)
    assert list(limiter._buckets) == [("start", "d")]


def test_a_429_empties_the_bucket_for_its_wait_and_the_rest_queue_behind() -> None:
    limiter = RateLimiter(RateLimits(margin=0))
    assert _delays(limiter, [0]) == [0]
    limiter.penalize("start", "m1", 2.5, 0)
    # Nothing before 2.5 s, then one per second: the burst left is not spent at once.
    assert _delays(limiter, [0, 0, 0]) == [2.5, 3.5, 4.5]
    assert limiter.reserve("start", "m2", 0) == 0  # other buckets are not touched


@pytest.mark.anyio
async def test_an_adaptive_limiter_paces_a_bucket_only_after_a_429() -> None:
    limiter = RateLimiter(RateLimits(margin=0), adaptive=True)
    with anyio.fail_after(10):
        for _ in range(20):  # far past the burst: not paced
            await limiter.acquire("create_machine", "app")
    now = anyio.current_time()
    limiter.penalize("create_machine", "app", 1.0, now)
    assert limiter.reserve("create_machine", "app", now) == 1.0
    with anyio.fail_after(10):
        await limiter.acquire("create_machine", "other-app")  # still unpaced


@pytest.mark.anyio
async def test_a_cancelled_wait_gives_its_token_back() -> None:
    limiter = RateLimiter(RateLimits(default=Rate(1.0, 1), margin=0))
    await limiter.acquire("start", "m1")
    with anyio.move_on_after(0.01):
        await limiter.acquire("start", "m1")
    assert limiter._buckets[("start", "m1")].tokens == pytest.approx(0, abs=0.05)


@pytest.mark.parametrize("bad", [{"per_s": 0, "burst": 1}, {"per_s": 1, "burst": 0}])
def test_rate_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Rate"):
        Rate(**bad)  # type: ignore[arg-type]


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=4.0)
    rng = random.Random(0)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        for _ in range(50):
            assert ceiling / 2 <= policy.delay_s(retry, None, rng) <= ceiling


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(base_s=0.1, max_s=1.0)
    rng = random.Random(0)
    assert all(5.0 <= policy.delay_s(1, 5.0, rng) <= 5.1 for _ in range(50))


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"base_s": 2.0, "max_s": 1.0}])
def test_retry_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_no_retry_policy() -> None:
    assert RetryPolicy.none().max_attempts == 1
