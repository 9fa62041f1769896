"""The Store protocol: a narrow async seam with no HTTP types beyond `Entry`.

Contract (tests/contract runs it against every implementation):
- `lookup(key)` returns the stored variants of a primary key; unreadable ones
  are dropped (and removed), never raised.
- `open_writer(key)` streams a body to a temporary place; only `commit`
  makes it visible, atomically with its metadata; `abort` leaves nothing.
- `open_body(entry)` returns the body, or None when it is gone or damaged:
  the caller then treats the entry as a miss.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Protocol

from edgeproxy.policy.entry import Entry


class StoreError(Exception):
    """The store can't do what was asked (disk full, unwritable, ...)."""


@dataclass(frozen=True, slots=True)
class Body:
    """A stored body: in memory when small, an open file when large.

    The file is opened at lookup so that eviction (an unlink) can't pull it
    away mid-response; whoever reads it closes it.
    """

    size: int
    data: bytes | None = None
    file: IO[bytes] | None = None


class BodyWriter(Protocol):
    @property
    def size(self) -> int: ...

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self, entry: Entry) -> Entry:
        """Make the body and `entry` visible together; returns the stored entry."""
        ...

    async def abort(self) -> None: ...


class Store(Protocol):
    async def lookup(self, key: str) -> list[Entry]: ...

    def open_writer(self, key: str) -> BodyWriter: ...

    async def open_body(self, entry: Entry) -> Body | None: ...

    def read_body(self, body: Body, chunk_size: int = 65536) -> AsyncIterator[bytes]: ...

    async def update(self, entry: Entry) -> bool:
        """Replace a variant's metadata (after a 304); False if it is gone."""
        ...

    async def delete(self, key: str) -> int:
        """Remove every variant of a primary key; returns how many."""
        ...

    async def delete_variant(self, entry: Entry) -> None: ...

    async def stats(self) -> dict[str, int]: ...

    async def close(self) -> None: ...
