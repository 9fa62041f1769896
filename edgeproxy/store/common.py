"""The small classes every store shares, built on every miss: a store's
health, a stored body, and the copy a wrapper store keeps of a body as it
is written. Their own module so they compile (edgeproxy/compiled.py; base.py,
with the runtime-checkable protocols, cannot), re-exported by base.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Literal

from mypy_extensions import mypyc_attr

from edgeproxy.frozen import set_fields

if TYPE_CHECKING:
    from edgeproxy.store.base import BodyWriter

_NATIVE = __file__.endswith(".so")  # compiled (edgeproxy/frozen.py)


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Whether a store takes writes, for /healthz and metrics.

    Degraded: a write failed on a disk fault; responses pass through
    unstored, and a write is tried again once `retry_in` seconds passed
    (the back-off doubles on each failed try). `hits` is False while the
    store answers every lookup with a miss: a purge or invalidation it could
    not apply is kept (`pending`) and applied first when the disk recovers,
    and nothing it should have removed is served meanwhile; or the cache
    could not be opened at all.
    """

    state: Literal["ok", "degraded"] = "ok"
    reason: str = ""  # the last disk fault, while degraded
    write_failures: int = 0  # writes failed on a disk fault since start
    retry_in: float | None = None  # seconds until writes are tried again
    hits: bool = True
    pending: int = 0  # purges/invalidations waiting for the disk

    def __init__(
        self,
        state: Literal["ok", "degraded"] = "ok",
        reason: str = "",
        write_failures: int = 0,
        retry_in: float | None = None,
        hits: bool = True,
        pending: int = 0,
    ) -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(
                self,
                ("state", "reason", "write_failures", "retry_in", "hits", "pending"),
                (state, reason, write_failures, retry_in, hits, pending),
            )
            return
        self.state = state  # type: ignore[misc]
        self.reason = reason  # type: ignore[misc]
        self.write_failures = write_failures  # type: ignore[misc]
        self.retry_in = retry_in  # type: ignore[misc]
        self.hits = hits  # type: ignore[misc]
        self.pending = pending  # type: ignore[misc]

    @property
    def writable(self) -> bool:
        """Whether a write would be tried now: ok, or the back-off is over."""
        return self.state == "ok" or not self.retry_in


def health_of(store: object) -> StoreHealth:
    """`store.health()`, or ok for a store that doesn't report (a test double)."""
    # Not isinstance(store, Reporting): a runtime Protocol check costs more
    # than the rest of this call, and it runs on every response (fill.py).
    health = getattr(store, "health", None)
    if not callable(health):
        return StoreHealth()
    result: StoreHealth = health()
    return result


@dataclass(frozen=True, slots=True)
class Body:
    """A stored body: in memory when small, an open file when large.

    The file is opened at lookup so that eviction (an unlink) can't pull it
    away mid-response; whoever reads it closes it.
    """

    size: int
    data: bytes | None = None
    file: IO[bytes] | None = None

    def __init__(self, size: int, data: bytes | None = None, file: IO[bytes] | None = None) -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(self, ("size", "data", "file"), (size, data, file))
            return
        self.size = size  # type: ignore[misc]
        self.data = data  # type: ignore[misc]
        self.file = file  # type: ignore[misc]


class BoundedCopy:
    """A copy of a body's chunks kept while the body stays within `limit` bytes.

    Store wrappers (hot tier, shared tier) keep one beside the inner writer;
    past the limit the copy is dropped and only the inner store keeps the body.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._kept = 0
        self._chunks: list[bytes] | None = []

    def add(self, chunk: bytes) -> None:
        if self._chunks is None:
            return
        self._kept += len(chunk)
        if self._kept > self._limit:
            self._chunks = None
        else:
            self._chunks.append(bytes(chunk))  # bytes(b) is b: no copy

    def take(self) -> list[bytes] | None:
        """The chunks (None when it grew too big); the copy is empty after."""
        chunks, self._chunks = self._chunks, None
        return chunks

    def drop(self) -> None:
        self._chunks = None


@mypyc_attr(allow_interpreted_subclasses=True)  # shared.SharedWriter is plain
class CopyingWriter:
    """A wrapper store's writer: the inner writer, plus a BoundedCopy of the
    body for the wrapper's own tier. Subclasses implement `commit`."""

    def __init__(self, inner: BodyWriter, limit: int) -> None:
        self._inner = inner
        self._copy = BoundedCopy(limit)

    @property
    def size(self) -> int:
        return self._inner.size

    async def write(self, chunk: bytes) -> None:
        await self._inner.write(chunk)
        self._copy.add(chunk)

    async def abort(self) -> None:
        self._copy.drop()
        await self._inner.abort()
