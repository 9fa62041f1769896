"""Shared fixtures: an injectable clock and the blockbuster guard."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from hypothesis import strategies as st


class FakeClock:
    """A clock tests advance by hand: nothing in the suite sleeps for freshness."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session", autouse=True)
def text_strategies_ready() -> None:
    """Hypothesis works out once per checkout (then caches it in .hypothesis/)
    which characters its text strategies can draw: ~2 s on this machine.
    Done before the first test, so that a test whose first st.text() is
    drawn inside it (st.data()) isn't charged for it and failed as too slow,
    as tests/unit/policy/test_entry.py was when run alone from a fresh clone."""
    st.text().validate()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail any test whose event loop makes a blocking call (as aiohttp's suite does)."""
    if "no_blockbuster" in request.keywords:
        yield None
        return
    with blockbuster_ctx(scanned_modules=["edgeproxy"]) as bb:
        yield bb
