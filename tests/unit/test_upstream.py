"""upstream.Prefetched: an answer the wire path hands to the exchange."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict

from edgeproxy.collapse import Flights, Released
from edgeproxy.errors import EdgeError
from edgeproxy.pool import Pool
from edgeproxy.upstream import Prefetched, Trip


class Answer:
    """An UpstreamResponse stand-in that records its release."""

    status = 200
    headers: CIMultiDict[str] = CIMultiDict()
    content_length = 0

    def __init__(self) -> None:
        self.released = 0

    def release(self) -> None:
        self.released += 1

    def close(self) -> None:
        self.release()


FIELDS = CIMultiDict([("If-None-Match", '"v1"'), ("X-Request-Id", "r")])


def prefetched(answer: Answer | EdgeError, pool: Pool | None = None) -> Prefetched:
    trip = Trip()
    if pool is not None:
        pool.acquire("http://o")
        trip.slot = (pool, "http://o")
    return Prefetched(("GET", "/a?b", CIMultiDict(FIELDS)), answer, trip, (1.0, 2.0), "r")  # type: ignore[arg-type]


def test_matches_only_the_very_same_request() -> None:
    pre = prefetched(Answer())
    assert pre.matches("GET", "/a?b", CIMultiDict(FIELDS))
    other = CIMultiDict(FIELDS)
    other["X-Request-Id"] = "s"
    for method, target, fields in [
        ("HEAD", "/a?b", FIELDS),
        ("GET", "/a", FIELDS),
        ("GET", "/a?b", other),
        ("GET", "/a?b", CIMultiDict([("If-None-Match", '"v1"')])),
    ]:
        assert not pre.matches(method, target, CIMultiDict(fields))


def test_discard_gives_back_the_response_and_its_pool_server() -> None:
    pool = Pool(("http://o",))
    answer = Answer()
    pre = prefetched(answer, pool)
    pre.discard()
    pre.discard()  # once only
    assert answer.released == 1
    with pytest.raises(ValueError, match="release without acquire"):
        pool.release("http://o")  # the count is back to zero: released once


async def test_discard_frees_the_waiters_of_a_flight_nobody_took() -> None:
    flights = Flights()
    flight = flights.lead("k", 1024, None)
    pre = prefetched(EdgeError("refused"))
    pre.lead((flights, flight))
    flight.waiters += 1
    waiting = asyncio.ensure_future(flight.wait(5))
    await asyncio.sleep(0)
    pre.discard()
    assert await asyncio.wait_for(waiting, 1) == Released()
    assert flights.get("k") is None and flight.landed
