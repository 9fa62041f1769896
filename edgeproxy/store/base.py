"""The Store protocol: a narrow async seam with no HTTP types beyond `Entry`.

Contract (tests/contract runs it against every implementation):
- `lookup(key)` returns the stored variants of a primary key; unreadable ones
  are dropped (and removed), never raised.
- `open_writer(key)` streams a body to a temporary place; only `commit`
  makes it visible, atomically with its metadata; `abort` leaves nothing.
- `open_body(entry)` returns the body, or None when it is gone or damaged:
  the caller then treats the entry as a miss (and the variant is dropped).
- A commit replaces the stored variant with the same Vary names and values
  (RFC 9111 section 4.1) and keeps the others side by side.
- `purge` covers exactly what `edgeproxy.purge.matches` says, and records a
  ban: any later write (commit, update) of a matching entry whose
  `request_time` is before the purge's `issued_at` is refused (hard purge:
  `Banned`) or stored already `soft_purged` (soft purge).

Errors: write paths raise `StoreError` (never sqlite/diskcache errors),
`Degraded` when the disk can't take writes (see `StoreHealth`); `lookup`
and `open_body` answer a miss instead, so a broken store costs hits, never
a 500.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from edgeproxy.policy.entry import Entry
from edgeproxy.purge import Purge

# Shared by every store, and built on every miss: in a compiled module (common.py).
from edgeproxy.store.common import Body as Body
from edgeproxy.store.common import BoundedCopy as BoundedCopy
from edgeproxy.store.common import CopyingWriter as CopyingWriter
from edgeproxy.store.common import StoreHealth as StoreHealth
from edgeproxy.store.common import health_of as health_of


class StoreError(Exception):
    """The store can't do what was asked (disk full, unwritable, ...)."""


class NotOpen(OSError):
    """The cache could not be opened (yet): every use of it fails like a disk fault.
    (Here, not in the compiled disk.py: mypyc compiles no OSError subclass.)"""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EIO, reason)


class Degraded(StoreError):
    """A write refused or failed because the disk can't take writes (full,
    read-only, I/O errors, not open). The store logged the state change once:
    callers pass the response through without logging each one."""


@runtime_checkable
class Reporting(Protocol):
    def health(self) -> StoreHealth: ...


class Banned(StoreError):
    """`BodyWriter.commit` refused the entry: a matching hard purge was issued
    after its `request_time` (the fill raced the purge), or the fill is older
    than the store keeps bans for. Nothing was stored; the writer is closed.
    Callers that already ignore `StoreError` on commit need no change."""


class BodyWriter(Protocol):
    @property
    def size(self) -> int: ...

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self, entry: Entry) -> Entry:
        """Make the body and `entry` visible together; returns the stored entry
        (with `key`, `variant`, `body_size` set by the store, and `soft_purged`
        set when a soft purge raced the fill). Raises `Banned` when a hard
        purge raced it, `StoreError` on any other failure; the writer is closed
        either way."""
        ...

    async def abort(self) -> None: ...


class Store(Protocol):
    async def lookup(self, key: str) -> list[Entry]: ...

    def open_writer(self, key: str) -> BodyWriter: ...

    async def open_body(self, entry: Entry) -> Body | None: ...

    def read_body(self, body: Body, chunk_size: int = 65536) -> AsyncIterator[bytes]: ...

    async def update(self, entry: Entry) -> bool:
        """Replace a variant's metadata (after a 304); False if it is gone.

        Bans apply as for commit, on `entry.request_time`: a hard ban removes
        the variant (False), a soft one keeps it marked `soft_purged`."""
        ...

    async def delete(self, key: str) -> int:
        """Remove every variant of a primary key, and of its `key#extras` keys
        (cachekey.key_extras) as a URL purge does; returns how many. Records
        no ban (RFC 9111 section 4.4 invalidation, not a purge)."""
        ...

    async def delete_variant(self, entry: Entry) -> None: ...

    async def purge(self, purge: Purge) -> int:
        """Apply a purge; returns how many entries (variants) it matched.

        Hard: entries are deleted. Soft: marked `soft_purged` (stale, kept for
        revalidation; already-soft ones count too). dry_run: counted only, no
        ban recorded, nothing touched. It acts on the variants stored when
        it is recorded; later commits are the ban's business. The count is
        the same in all three modes (a variant matched by two of a purge's
        tags counts once). Prefix and tag purges use indexes, never a scan of
        every entry. Unless dry_run, the purge is recorded as a ban (see the
        module docstring), even when nothing matched.
        """
        ...

    async def entries(
        self, prefix: str = "", tag: str | None = None, limit: int = 100
    ) -> list[Entry]:
        """Stored variants whose key starts with `prefix` (and carrying `tag`),
        in key order (then oldest variant first), at most `limit` of them."""
        ...

    async def stats(self) -> dict[str, int]:
        """At least {"entries": variants stored, "bytes": total size}; cheap."""
        ...

    async def close(self) -> None: ...
