"""Request collapsing: concurrent misses of one cache key make one origin request.

The first request that must go upstream for a key (a miss, or a stale entry
to revalidate) becomes the *leader*: it registers a `Flight` and goes
upstream as usual. Requests for the same key that arrive meanwhile become
*waiters*: they wait, woken by the leader (an asyncio.Event replaced on every
change, never polling), for the flight's `Outcome`:

- `Streaming`: the response is storable. The leader appends each body chunk
  to the flight as it tees it to its client and the store; waiters stream
  it from offset 0 while it is still arriving. The first `buffer_limit` bytes
  are kept in memory; past that, if anyone is waiting, the rest goes to an
  unnamed temp file in the cache directory (so memory stays bounded whatever
  the body size and however slow a waiter's client is); if nobody is, the
  flight stops taking waiters (no copy is made) and late arrivals wait for it
  to land, then look up the store again.
- `Refreshed`: a 304 validated the stored response; it was merged and stored,
  and waiters answer from the store.
- `Released`: nothing to share (the response was not storable, or the leader
  failed). Waiters go upstream on their own at once; after an origin error
  (`error`) they answer that error, or stale-if-error, instead of sending the
  failing origin one more request each.

A waiter waits at most `collapse_wait` seconds for the outcome, then goes on
its own; at most `collapse_max_waiters` wait per key, the others go on their
own. A key whose response was not storable for a reason of the response
(private, no-store, Set-Cookie, ...) is remembered for `hit_for_pass`
seconds (Varnish's hit-for-pass): its requests skip collapsing, so
uncacheable traffic is never serialised. They still try to store the answer.

The leader's client is not a reader of the flight: the leader writes to it
directly, so a lone miss costs one small object and two dict operations.
When the leader's client disconnects mid-body, the leader keeps filling if
anyone waits (the fill completes for them and is stored), and aborts as before
if nobody does.

Scope: one process. Workers sharing a cache directory each collapse their own
requests; a cross-process lock in the store is not done (at most one origin
request per key per worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from edgeproxy.errors import EdgeError
from edgeproxy.frozen import set_fields
from edgeproxy.policy.entry import Entry

_NATIVE = __file__.endswith(".so")  # compiled (edgeproxy/frozen.py)

log = logging.getLogger("edgeproxy.collapse")

T = TypeVar("T")

MAX_PASS_KEYS = 10_000  # hit-for-pass memory: the oldest marks go first beyond this


class FlightBroken(Exception):
    """The leader's body ended uncleanly: a waiter must abort its client too."""


@dataclass(frozen=True, slots=True)
class Streaming:
    """The response is being stored; its body streams through the flight."""

    entry: Entry  # as it will be stored (body_size unknown until the end)
    length: int | None  # Content-Length, when the origin sent one

    def __init__(self, entry: Entry, length: int | None) -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(self, ("entry", "length"), (entry, length))
            return
        self.entry = entry  # type: ignore[misc]
        self.length = length  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Refreshed:
    """A 304 freshened the stored response (merged, stored): answer from the store."""

    entry: Entry

    def __init__(self, entry: Entry) -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(self, ("entry",), (entry,))
            return
        self.entry = entry  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Released:
    """Nothing to share: each waiter goes on its own.

    `error`: the leader's request failed (no response); `status`: the
    origin's status when one came. Either lets a waiter try stale-if-error.
    """

    error: EdgeError | None = None
    status: int | None = None

    def __init__(self, error: EdgeError | None = None, status: int | None = None) -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(self, ("error", "status"), (error, status))
            return
        self.error = error  # type: ignore[misc]
        self.status = status  # type: ignore[misc]


Outcome = Streaming | Refreshed | Released


class Flight:
    """One origin request in progress for a key, and what its waiters need."""

    def __init__(
        self, key: str, buffer_limit: int, spill_dir: str | None, started_at: float = 0.0
    ) -> None:
        self.key = key
        self.started_at = started_at  # the leader's request_time clock
        self.outcome: Outcome | None = None
        self.waiters = 0  # registered waiters (waiting or streaming)
        self.landed = False  # out of the registry: no new waiters
        self._limit = buffer_limit
        self._spill_dir = spill_dir
        self._mem: list[bytes] = []
        self._mem_size = 0
        self._size = 0  # bytes appended in all (memory, then file)
        self._file: IO[bytes] | None = None
        self._done = False
        self._broken = False
        self._closed = False  # the buffer was dropped: nobody may join
        self._event: asyncio.Event | None = None  # made by the first waiter

    # -- the leader's side --------------------------------------------------------

    @property
    def joinable(self) -> bool:
        return not self._closed and not self.landed

    def resolve(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self._wake()

    async def append(self, chunk: bytes) -> None:
        """The next body chunk (Streaming flights)."""
        if self._closed or self._broken:
            return
        n = len(chunk)
        if self._file is None:
            if self._mem_size + n <= self._limit:
                self._mem.append(chunk)
                self._mem_size += n
                self._size += n
                self._wake()
                return
            if self.waiters == 0:
                # Nobody to copy for: stop buffering, keep no copy.
                self._closed = True
                self._mem = []
                return
            try:
                self._file = await _run(_temp_file, self._spill_dir)
            except OSError as e:
                log.warning("collapsing %s: cannot spill the body: %s", self.key, e)
                self._break()
                return
        try:
            await _run(_pwrite_all, self._file.fileno(), chunk, self._size - self._mem_size)
        except OSError as e:
            log.warning("collapsing %s: spilling the body failed: %s", self.key, e)
            self._break()
            return
        self._size += n
        self._wake()

    def finish(self) -> None:
        """The body ended cleanly."""
        self._done = True
        self._wake()

    def abandon(self) -> None:
        """The leader is gone: release waiters still waiting, break open bodies."""
        if self.outcome is None:
            self.resolve(Released())
        elif isinstance(self.outcome, Streaming) and not self._done:
            self._break()

    def _break(self) -> None:
        self._broken = True
        self._wake()

    # -- the waiters' side ----------------------------------------------------------

    async def wait(self, seconds: float) -> Outcome | None:
        """The outcome, or None when it takes longer than `seconds`."""
        # Not `if self.outcome is None:` around the loop: mypy then takes the
        # attribute for None inside it, across the await, and mypyc's
        # compiled read of it there failed once the leader had set it.
        outcome = self.outcome
        if outcome is not None:
            return outcome
        try:
            async with asyncio.timeout(seconds):
                while self.outcome is None:
                    await self._changed()
        except TimeoutError:
            return None
        return self.outcome

    async def wait_landed(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                while not self.landed:
                    await self._changed()
        except TimeoutError:
            return False
        return True

    def body(self, chunk_size: int) -> AsyncIterator[bytes]:
        """The body from offset 0, as it arrives; FlightBroken if it breaks off."""
        return _Body(self, chunk_size)

    async def leave(self) -> None:
        self.waiters -= 1
        await self._drop_file()

    # -- internals ------------------------------------------------------------------

    async def _drop_file(self) -> None:
        if self.landed and self.waiters == 0 and self._file is not None:
            f, self._file = self._file, None
            with contextlib.suppress(OSError):
                await _run(f.close)

    def _wake(self) -> None:
        ev = self._event
        if ev is not None:
            self._event = None
            ev.set()

    async def _changed(self) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()


class _Body:
    """Flight.body's iterator: a class, not an async generator, which mypyc
    (edgeproxy/compiled.py) does not compile."""

    __slots__ = ("_chunk_size", "_flight", "_i", "_pos")

    def __init__(self, flight: Flight, chunk_size: int) -> None:
        self._flight = flight
        self._chunk_size = chunk_size
        self._i = 0  # the next chunk in memory
        self._pos = 0  # body bytes handed out

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        f = self._flight
        while True:
            if self._i < len(f._mem):
                chunk = f._mem[self._i]
                self._i += 1
                self._pos += len(chunk)
                return chunk
            if self._pos < f._size:
                assert f._file is not None  # joined before the buffer could close
                n = min(self._chunk_size, f._size - self._pos)
                data = await _run(os.pread, f._file.fileno(), n, self._pos - f._mem_size)
                if not data:
                    raise FlightBroken("spilled body is short")
                self._pos += len(data)
                return data
            if f._broken:
                raise FlightBroken(f"the origin response for {f.key} broke off")
            if f._done:
                raise StopAsyncIteration
            await f._changed()


class Flights:
    """The flights of one process, by cache key, and the hit-for-pass marks."""

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}
        self._passing: dict[str, float] = {}
        self.last_purge = 0.0  # issue time of the newest purge this process applied

    def note_purge(self, issued_at: float) -> None:
        """A purge was issued: flights that began before it may not be joined
        by later requests (they would be served the purged content)."""
        self.last_purge = max(self.last_purge, issued_at)

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: str) -> Flight | None:
        return self._flights.get(key)

    def joinable_after_purge(self, flight: Flight) -> bool:
        return flight.started_at >= self.last_purge

    def waiting(self) -> dict[str, int]:
        """Keys in flight and how many requests wait on each (stats, tests)."""
        return {key: f.waiters for key, f in self._flights.items()}

    def lead(
        self, key: str, buffer_limit: int, spill_dir: str | None, started_at: float = 0.0
    ) -> Flight:
        flight = Flight(key, buffer_limit, spill_dir, started_at)
        self._flights[key] = flight
        return flight

    def land(self, flight: Flight) -> None:
        """Out of the registry: later requests look up the store again."""
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        flight.landed = True
        flight._wake()

    async def close(self, flight: Flight) -> None:
        """The leader is done with it, whichever way it went."""
        if self.close_now(flight):
            await flight._drop_file()

    def close_now(self, flight: Flight) -> bool:
        """`close` without its await: True when a spilled buffer is left to
        drop (then `close` as well: landing and releasing twice is harmless),
        as on few flights."""
        self.land(flight)
        flight.abandon()
        return flight._file is not None

    def passing(self, key: str, now: float) -> bool:
        """Is `key` marked hit-for-pass at `now`?"""
        until = self._passing.get(key)
        if until is None:
            return False
        if until > now:
            return True
        del self._passing[key]
        return False

    def mark_pass(self, key: str, now: float, seconds: float) -> None:
        if seconds <= 0:
            return
        if len(self._passing) >= MAX_PASS_KEYS:
            for k in [k for k, until in self._passing.items() if until <= now]:
                del self._passing[k]
            while len(self._passing) >= MAX_PASS_KEYS:
                del self._passing[next(iter(self._passing))]
        self._passing.pop(key, None)  # re-inserted last: the newest mark
        self._passing[key] = now + seconds


def _temp_file(directory: str | None) -> IO[bytes]:
    # Unnamed (unlinked at once): nothing is left behind, even after a crash.
    return tempfile.TemporaryFile(dir=directory, prefix="flight-")


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


async def _run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
