"""Admin brute-force limiting: a table of attempts against the pure limiter."""

from __future__ import annotations

import pytest

from edgeproxy.ratelimit import FailureLimiter


@pytest.mark.parametrize(
    ("failures_at", "asked_at", "retry_after"),
    [
        ([], 0.0, None),  # nobody failed
        ([0.0] * 9, 1.0, None),  # under the limit
        ([float(i) for i in range(10)], 10.0, 59.0),  # the 10th failure locks for 60 s
        ([float(i) for i in range(10)], 69.0, None),  # the lockout is over
        ([0.0] * 5 + [100.0] * 5, 101.0, None),  # spread beyond the window: no lock
    ],
)
def test_lockout(failures_at: list[float], asked_at: float, retry_after: float | None) -> None:
    limiter = FailureLimiter(max_failures=10, window=60.0, lockout=60.0)
    for t in failures_at:
        limiter.failed("10.0.0.1", t)
    assert limiter.retry_after("10.0.0.1", asked_at) == retry_after
    assert limiter.retry_after("10.0.0.2", asked_at) is None  # per address


def test_success_clears_the_record() -> None:
    limiter = FailureLimiter(max_failures=3)
    limiter.failed("a", 0.0)
    limiter.failed("a", 1.0)
    limiter.succeeded("a")
    limiter.failed("a", 2.0)
    limiter.failed("a", 3.0)
    assert limiter.retry_after("a", 3.0) is None


def test_memory_is_bounded() -> None:
    limiter = FailureLimiter(max_tracked=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) == 100
