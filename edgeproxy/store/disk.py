"""The diskcache-backed store: SQLite index plus files, shared by worker processes.

Layout, all in one diskcache directory:
- `i:<primary key>`: the JSON list of that URL's variants (Entry metadata);
- `b:<variant id>`: the body, inline in SQLite when small, a file when large.

Index changes happen inside `Cache.transact()` (SQLite BEGIN IMMEDIATE), so
several processes can share the directory. diskcache never decides HTTP
freshness: no `expire=` is set; it only evicts by size. Every diskcache call
runs on a small thread pool, never on the event loop.

Eviction works per diskcache key: when a body is evicted, its index row is
found dangling at lookup and dropped (a miss); an evicted index row orphans
its body until size-based eviction takes it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar

import diskcache

from edgeproxy.policy.entry import CorruptEntry, Entry, entry_from_dict
from edgeproxy.store.base import Body, StoreError

log = logging.getLogger("edgeproxy.store")

T = TypeVar("T")

INDEX = "i:"
BODY = "b:"
MAX_VARIANTS = 32  # per URL; the oldest goes first beyond this


class DiskStore:
    def __init__(
        self,
        cache: diskcache.Cache,
        directory: str,
        executor: ThreadPoolExecutor,
        spill_threshold: int,
    ) -> None:
        self._cache = cache
        self._directory = directory
        self._tmp = os.path.join(directory, "tmp")
        self._executor = executor
        self.spill_threshold = spill_threshold

    @classmethod
    async def open(
        cls,
        directory: str,
        size_limit: int = 1 << 30,
        spill_threshold: int = 256 * 1024,
        eviction_policy: str = "least-recently-stored",
        threads: int = 4,
    ) -> DiskStore:
        executor = ThreadPoolExecutor(threads, thread_name_prefix="edgeproxy-store")

        def _open() -> diskcache.Cache:
            os.makedirs(os.path.join(directory, "tmp"), exist_ok=True)
            return diskcache.Cache(
                directory,
                size_limit=size_limit,
                eviction_policy=eviction_policy,
                disk_min_file_size=32 * 1024,
            )

        loop = asyncio.get_running_loop()
        cache = await loop.run_in_executor(executor, _open)
        return cls(cache, directory, executor, spill_threshold)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    # -- index helpers (called on the pool) --------------------------------

    def _read_index(self, key: str) -> list[Entry]:
        raw = self._cache.get(INDEX + key)
        if raw is None:
            return []
        try:
            items = json.loads(raw)
            if not isinstance(items, list):
                raise CorruptEntry("index is not a list")
            return [entry_from_dict(d) for d in items]
        except (ValueError, CorruptEntry) as e:
            log.warning("dropping unreadable index for %s: %s", key, e)
            self._cache.delete(INDEX + key)
            return []

    def _write_index(self, key: str, entries: list[Entry]) -> None:
        if entries:
            raw = json.dumps([e.to_dict() for e in entries], separators=(",", ":")).encode()
            self._cache.set(INDEX + key, raw)
        else:
            self._cache.delete(INDEX + key)

    # -- Store protocol ------------------------------------------------------

    async def lookup(self, key: str) -> list[Entry]:
        try:
            return await self._run(self._read_index, key)
        except (OSError, diskcache.Timeout) as e:
            log.warning("lookup failed for %s: %s", key, e)
            return []

    def open_writer(self, key: str) -> DiskWriter:
        return DiskWriter(self, key)

    async def open_body(self, entry: Entry) -> Body | None:
        try:
            return await self._run(self._open_body, entry)
        except (OSError, diskcache.Timeout) as e:
            log.warning("body of %s unreadable: %s", entry.key, e)
            return None

    def _open_body(self, entry: Entry) -> Body | None:
        value = self._cache.get(BODY + entry.variant, read=True)
        if value is None:
            body = None
        elif isinstance(value, bytes):
            body = Body(len(value), data=value)
        else:
            size = os.fstat(value.fileno()).st_size
            body = Body(size, file=value)
        if body is None or body.size != entry.body_size:
            # Gone or damaged: a miss, and the dangling variant goes (6 in models.md).
            if body is not None and body.file is not None:
                body.file.close()
            log.warning("dropping damaged entry %s variant %s", entry.key, entry.variant)
            self._delete_variant(entry)
            return None
        return body

    async def read_body(self, body: Body, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        if body.data is not None:
            if body.data:
                yield body.data
            return
        assert body.file is not None
        f = body.file
        try:
            while True:
                chunk = await self._run(f.read, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            await self._run(f.close)

    async def update(self, entry: Entry) -> bool:
        return await self._run(self._update, entry)

    def _update(self, entry: Entry) -> bool:
        with self._cache.transact():
            entries = self._read_index(entry.key)
            for i, e in enumerate(entries):
                if e.variant == entry.variant:
                    entries[i] = entry
                    self._write_index(entry.key, entries)
                    return True
        return False

    async def delete(self, key: str) -> int:
        return await self._run(self._delete, key)

    def _delete(self, key: str) -> int:
        with self._cache.transact():
            entries = self._read_index(key)
            self._cache.delete(INDEX + key)
            for e in entries:
                self._cache.delete(BODY + e.variant)
        return len(entries)

    async def delete_variant(self, entry: Entry) -> None:
        await self._run(self._delete_variant, entry)

    def _delete_variant(self, entry: Entry) -> None:
        with self._cache.transact():
            entries = [e for e in self._read_index(entry.key) if e.variant != entry.variant]
            self._write_index(entry.key, entries)
            self._cache.delete(BODY + entry.variant)

    def _commit(self, entry: Entry, data: bytes | None, tmp: IO[bytes] | None) -> None:
        if tmp is not None:
            tmp.flush()
            tmp.seek(0)
            self._cache.set(BODY + entry.variant, tmp, read=True)
        else:
            self._cache.set(BODY + entry.variant, data or b"")
        with self._cache.transact():
            entries = self._read_index(entry.key)
            # A new response replaces the stored one it would be selected
            # instead of: same Vary names and values (RFC 9111 section 4.1).
            replaced = [
                e for e in entries if (e.vary, e.secondary) == (entry.vary, entry.secondary)
            ]
            kept = [e for e in entries if e not in replaced]
            kept.append(entry)
            while len(kept) > MAX_VARIANTS:
                replaced.append(kept.pop(0))
            self._write_index(entry.key, kept)
            for e in replaced:
                self._cache.delete(BODY + e.variant)

    async def stats(self) -> dict[str, int]:
        def _stats() -> dict[str, int]:
            return {"objects": len(self._cache), "bytes": int(self._cache.volume())}

        return await self._run(_stats)

    async def close(self) -> None:
        await self._run(self._cache.close)
        # Joining the pool's threads blocks: do it off the loop too.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, functools.partial(self._executor.shutdown, wait=True))


class DiskWriter:
    """Tee target for one response body: memory first, a temp file past the threshold."""

    def __init__(self, store: DiskStore, key: str) -> None:
        self._store = store
        self._key = key
        self._buf = bytearray()
        self._tmp: IO[bytes] | None = None
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._tmp is None and self._size <= self._store.spill_threshold:
            self._buf += chunk
            return
        try:
            if self._tmp is None:
                self._tmp = await self._store._run(self._spill)
            await self._store._run(self._tmp.write, chunk)
        except OSError as e:
            await self.abort()
            raise StoreError(f"writing body: {e}") from e

    def _spill(self) -> IO[bytes]:
        f = tempfile.NamedTemporaryFile(dir=self._store._tmp, prefix="body-")  # noqa: SIM115 (closed by abort)
        f.write(self._buf)
        self._buf = bytearray()
        return f

    async def commit(self, entry: Entry) -> Entry:
        if self._done:
            raise StoreError("writer already closed")
        stored = entry.with_changes(key=self._key, variant=uuid.uuid4().hex, body_size=self._size)
        data = None if self._tmp is not None else bytes(self._buf)
        try:
            await self._store._run(self._store._commit, stored, data, self._tmp)
        except (OSError, diskcache.Timeout) as e:
            raise StoreError(f"committing {self._key}: {e}") from e
        finally:
            await self.abort()
        return stored

    async def abort(self) -> None:
        self._done = True
        self._buf = bytearray()
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            with contextlib.suppress(OSError):
                await self._store._run(tmp.close)  # delete=True unlinks it
