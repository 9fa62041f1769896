"""TieredStore: a per-process memory hot tier in front of the shared DiskStore.

The hit path is the point: `lookup` and `open_body` of a hot key are dict
lookups plus one 8-byte read of the shared generation counter, with no
thread-pool hop and no disk I/O; `open_body` returns the very
`Body(size, data=bytes)` it kept. Everything else goes to the disk store,
which stays the one truth shared by the workers:

- Reads that miss memory go to disk, then fill memory (a variant list; a body
  up to `max_object` bytes, LRU-bounded by `max_bytes` in all).
- Writes go to disk first; only when the disk transaction committed is the
  change published (store/generation.py; for commits and updates in the
  disk write's own pool job) and applied to memory. A commit
  the disk refuses (`Banned`, a fill that raced a purge) never reaches
  memory; a committed one leaves its variant list and body (if small
  enough) in memory only for a key memory holds already (a refill of a
  key being read: `TieredWriter`). A key stored for the first time comes
  in on its first read from disk, its second request: the one-hit
  wonders of a long tail (most objects, in CDN traces) never churn the
  tier, and a miss costs 10% less CPU for it (side by side, docs Run 13).
  One exception, bounded: a 304's refresh that changed nothing but Date
  and the exchange's times stays in memory while the disk's copy was
  validated at most REFRESH_LAG earlier (`update`); the disk's copy then
  reads as older, so staler, never fresher.
- Every worker reads the generation counter on each lookup and drops what
  the new records name before answering: a purge, delete, update or commit
  in any worker is invisible in every hot tier once its call returned.
  Evictions diskcache makes in a commit are published too (DiskStore's
  `on_evict` hook), so memory never serves what the disk no longer holds.

Racing fills are kept out by one rule: memory takes what was read from (or
committed to) disk only if no record naming its key was published since
just before that disk call started (`_admit`); anything doubtful is left to
the next lookup, which reads the disk again. The tier holds only what the
disk would answer (but for those bounded refreshes): the same contract
suite runs against both.

Purges other than by URL clear every hot tier (one ALL record): they are
rare, and the tier refills from disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from typing import IO, Any, TypeVar

from edgeproxy.policy.entry import Entry
from edgeproxy.policy.validation import changes_only_timing
from edgeproxy.purge import Purge, PurgeURL
from edgeproxy.store.base import Body, CopyingWriter, StoreError, StoreHealth
from edgeproxy.store.disk import DiskStore, DiskWriter
from edgeproxy.store.generation import ALL, Generation, key_hash
from edgeproxy.store.memory import MemoryTier

log = logging.getLogger("edgeproxy.store")

T = TypeVar("T")

GENERATION_FILE = "generation"  # in the disk store's directory
DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_MAX_OBJECT = 256 << 10
# How far (in validation time) the disk's copy of an entry may trail this
# tier's after 304s that changed nothing but Date (TieredStore.update): an
# entry every request revalidates (max-age=0, no-cache) is written once a
# second at most, not once a request. Another worker, or this one after a
# restart, sees it up to a second older than it is: it may revalidate that
# much sooner, or stop serving it stale that much sooner, never later.
REFRESH_LAG = 1.0


_NONE = (0, 0)
_NAMED_MAX = 65536  # hashes _admit keeps record numbers for; past it, they start over


class TieredStore:
    """The Store protocol (store/base.py) over `disk`, which it owns and closes."""

    def __init__(self, disk: DiskStore, gen: Generation, max_bytes: int, max_object: int) -> None:
        self._disk = disk
        self._gen = gen
        self._mem = MemoryTier(max_bytes, max_object)
        self._counter = gen.words  # [0]: the shared counter, read on every lookup
        self._seen = gen.current()  # the last record this tier applied
        # For _admit, from the records _sync applied after `_floor`: per key
        # hash its last two record numbers, and the last ALL record's.
        self._floor = self._seen
        self._named: dict[int, tuple[int, int]] = {}
        self._all_at = 0
        # Records this worker's own writes published whose writer has not yet
        # applied them to memory (`_published`): _sync leaves their keys be,
        # the writer replaces what it changed rather than have it dropped.
        self._applying: set[int] = set()
        self._closed = False
        self.hits = 0  # lookups answered from memory
        self.misses = 0
        disk.on_evict = self._evicted
        disk.publishing = gen.held

    @classmethod
    async def open(
        cls,
        disk: DiskStore,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_object: int = DEFAULT_MAX_OBJECT,
    ) -> TieredStore:
        """Map `<disk.directory>/generation` (off the loop); closes `disk` on failure."""
        path = os.path.join(disk.directory, GENERATION_FILE)
        loop = asyncio.get_running_loop()
        try:
            gen = await loop.run_in_executor(None, Generation.open, path)
        except BaseException as e:
            await disk.close()
            if isinstance(e, OSError):
                raise StoreError(f"opening {path}: {e}") from e
            raise
        return cls(disk, gen, max_bytes, max_object)

    @property
    def disk(self) -> DiskStore:
        return self._disk

    @property
    def max_object(self) -> int:
        return self._mem.max_object

    def health(self) -> StoreHealth:
        """The disk's: memory takes only what the disk committed, so it is
        degraded exactly when the disk is (StoreHealth)."""
        return self._disk.health()

    # -- generation records ---------------------------------------------------

    def _sync(self) -> None:
        """Apply the records published since the last call: one memory read
        when there are none (every read path starts here). A record of our
        own writes is noted but drops nothing: its writer applies it to
        memory itself (`_applying`, `_published`)."""
        current: int = self._counter[0]
        if current != self._seen:
            changes = self._gen.changes(self._seen, current)
            if changes is None:
                self._mem.clear()
                self._forget(current)
            else:
                named, applying = self._named, self._applying
                for g, h in changes:
                    if h == ALL:
                        self._mem.clear()
                        self._all_at = g
                        continue
                    if g not in applying:
                        self._mem.drop_hash(h)
                    named[h] = (g, named.get(h, _NONE)[0])
                if len(named) > _NAMED_MAX:
                    self._forget(current)
            self._seen = current

    def _forget(self, upto: int) -> None:
        """Records up to `upto` are no longer known one by one."""
        self._named.clear()
        self._floor = upto

    def _admit(self, h: int, since: int, own: int = 0) -> bool:
        """Whether memory may take what a disk call begun at record `since`
        returned for a key of hash `h`: no record but our own (`own`) that
        names it, or everything, was published since (O(1): _sync noted the
        last two records naming each key)."""
        self._sync()
        if self._seen == since:
            return True
        if since < self._floor or self._all_at > since:
            return False  # unknown, or everything changed
        latest, previous = self._named.get(h, _NONE)
        if latest <= since:
            return True
        return latest == own and previous <= since

    async def _publish(self, hashes: list[int]) -> int:
        """Publish records for these keys (blocking: off the loop), then apply them."""
        loop = asyncio.get_running_loop()
        try:
            g = await loop.run_in_executor(None, self._gen.publish, hashes)
        except OSError as e:
            self._mem.clear()  # at least this worker forgets
            raise StoreError(f"publishing a change to the other workers: {e}") from e
        self._sync()
        return g

    async def _apply(self, op: Coroutine[Any, Any, T], hashes: list[int]) -> T:
        """A disk write, then its record, even if it failed half way (a purge
        commits in batches) or the caller is cancelled meanwhile."""

        async def write() -> T:
            # Not a `finally`: edgeproxy/compiled.py, no await in a finally.
            try:
                result = await op
            except BaseException:
                await self._publish(hashes)
                raise
            await self._publish(hashes)
            return result

        return await asyncio.shield(write())

    def _published(self, published: _Publisher, applying: bool = False) -> None:
        """On the loop, after a pool job that published through `published`.
        `applying`: the caller applies that record to memory itself, at once
        (replacing what it changed, or dropping the key), rather than have
        the key dropped and put back; otherwise it is dropped here."""
        if published.error is not None:
            self._mem.clear()  # at least this worker forgets
            raise StoreError(
                f"publishing a change to the other workers: {published.error}"
            ) from published.error
        self._sync()  # our record, if not synced yet, is noted: it drops nothing
        self._applying.discard(published.number)
        if not applying and published.number:
            self._mem.drop_hash(published.key_hash)  # if a _sync left it to us

    def _evicted(self, keys: list[str]) -> None:
        # DiskStore.on_evict: on its pool thread, after the eviction committed.
        self._gen.publish(key_hash(k) for k in keys)

    # -- Store protocol: reads ----------------------------------------------

    async def lookup(self, key: str) -> list[Entry]:
        self._sync()
        found = self._mem.entries(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        since = self._seen
        found = await self._disk.lookup(key)
        if not found:
            self._mem.drop_key(key)  # bodies kept by a commit the disk no longer has
        else:
            h = key_hash(key)
            if self._admit(h, since):
                self._mem.put_entries(key, h, found)
        return found

    def hot_entries(self, key: str) -> list[Entry] | None:
        """What `lookup` would answer from memory, without waiting or
        counting; None when the key isn't hot (the wire fast path, wire.py,
        then leaves the request to the full path). Records published by any
        worker are applied first, as for every read."""
        self._sync()
        return self._mem.entries(key)

    def hot_body(self, entry: Entry) -> Body | None:
        """The body `open_body` would return from memory, or None."""
        self._sync()
        return self._mem.body(entry.key, entry.variant)

    async def open_body(self, entry: Entry) -> Body | None:
        self._sync()
        hot = self._mem.body(entry.key, entry.variant)
        if hot is not None:
            return hot
        since = self._seen
        body = await self._disk.open_body(entry)
        if body is None:
            self._mem.drop_key(entry.key)  # the disk dropped the variant
            return None
        if body.size > self._mem.max_object:
            return body
        data = body.data
        if data is None:
            assert body.file is not None
            data = await self._slurp(entry, body.file)
            if data is None:
                return None
        h = key_hash(entry.key)
        if self._admit(h, since):
            kept = self._mem.put_body(entry.key, h, entry.variant, data)
            if kept is not None:
                return kept
        return body if body.data is not None else Body(len(data), data=data)

    async def _slurp(self, entry: Entry, f: IO[bytes]) -> bytes | None:
        """A small body stored as a file, read whole (and closed) off the loop."""

        def read() -> bytes:
            with f:
                return f.read()

        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(None, read)
        except OSError as e:
            log.warning("body of %s unreadable: %s", entry.key, e)
            return None
        if len(data) != entry.body_size:
            log.warning("body of %s changed size while read; a miss", entry.key)
            return None
        return data

    def read_body(self, body: Body, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        return self._disk.read_body(body, chunk_size)

    def prebuilt(self, entry: Entry, build: Callable[[Entry], T]) -> T:
        """`build(entry)`, kept with the hot copy of `entry` while it stays
        unchanged (MemoryTier.prebuilt): for header blocks a hit would
        otherwise rebuild. Not part of the Store protocol."""
        return self._mem.prebuilt(entry, build)

    async def entries(
        self, prefix: str = "", tag: str | None = None, limit: int = 100
    ) -> list[Entry]:
        return await self._disk.entries(prefix, tag, limit)

    async def stats(self) -> dict[str, int]:
        """The shared disk's totals, as every worker sees them (memory_stats: this one's tier)."""
        return await self._disk.stats()

    def memory_stats(self) -> dict[str, int]:
        """This worker's hot tier: what it holds and how lookups fared."""
        return {
            "memory_keys": len(self._mem),
            "memory_bodies": self._mem.nbodies,
            "memory_bytes": self._mem.nbytes,
            "memory_hits": self.hits,
            "memory_misses": self.misses,
        }

    def drop_memory(self) -> None:
        """Forget this worker's hot tier (the disk is untouched)."""
        self._mem.clear()

    # -- Store protocol: writes ---------------------------------------------

    def open_writer(self, key: str) -> TieredWriter:
        # Whether memory holds the key now decides whether the commit is
        # admitted to it (TieredWriter), and whether the body is copied.
        return TieredWriter(self, self._disk.open_writer(key), key in self._mem)

    async def update(self, entry: Entry) -> bool:
        # The record is published on the pool thread right after the disk
        # transaction (even a failed one), in the same job: one hop, and a
        # cancelled caller can't skip it (the job runs to its end).
        self._sync()
        key, h = entry.key, key_hash(entry.key)
        held = self._mem.held(key, entry.variant)
        if held is not None:
            listed_entry, on_disk = held
            if entry.response_time - on_disk <= REFRESH_LAG and changes_only_timing(
                listed_entry, entry
            ):
                # Only its Date and times changed, and the disk's copy was
                # validated at most REFRESH_LAG before this: the refresh stays
                # in this tier. A reader of the disk's copy (another worker,
                # this one after eviction or a restart) judges it that much
                # older, so staler, never fresher (changes_only_timing).
                # Purges hold: any ban the disk would judge this refresh by
                # (issued after its request, so after the held entry's, which
                # changes_only_timing asks) published a record that dropped
                # the key from this tier before `held` read it.
                self._mem.refresh(key, entry, on_disk=on_disk)
                return True
        since = self._seen
        listed = self._mem.listed(key)
        unwritten = self._mem.unwritten_of(key)
        body = self._mem.body(key, entry.variant)
        published = _Publisher(self._gen, h, self._applying)
        try:
            stored = await self._disk.update_stored(entry, then=published)
        except BaseException:
            self._published(published)  # drops the key here, as in every worker
            raise
        self._published(published, applying=True)
        # The disk now holds `stored` in place of the variant it updated
        # (a 304's refresh, RFC 9111 section 4.3.4). If nobody else changed
        # the key meanwhile, this tier keeps what it held with that one
        # entry replaced, its body kept: the next hit of a revalidated key is
        # a memory hit, not two pool hops (lookup, body) back to the disk.
        # In place if the key is still there; if a read synced our record
        # first (it dropped the key), from what was held before the await.
        # Otherwise the key goes, as the record says.
        if stored is None or not self._admit(h, since, published.number):
            self._mem.drop_hash(h)
            return stored is not None
        if self._mem.refresh(key, stored):
            return True
        self._mem.drop_hash(h)
        if listed is not None and any(e.variant == stored.variant for e in listed):
            if unwritten is not None:
                unwritten.pop(stored.variant, None)  # written now
            self._mem.put_entries(
                key, h, [stored if e.variant == stored.variant else e for e in listed], unwritten
            )
            if body is not None and body.data is not None:
                self._mem.put_body(key, h, stored.variant, body.data)
        return True

    async def delete(self, key: str) -> int:
        return await self._apply(self._disk.delete(key), [key_hash(key)])

    async def delete_variant(self, entry: Entry) -> None:
        await self._apply(self._disk.delete_variant(entry), [key_hash(entry.key)])

    async def purge(self, purge: Purge) -> int:
        if purge.dry_run:
            return await self._disk.purge(purge)
        target = purge.target
        h = key_hash(target.url) if isinstance(target, PurgeURL) else ALL
        return await self._apply(self._disk.purge(purge), [h])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._disk.on_evict = None
        self._disk.publishing = None
        self._mem.clear()
        loop = asyncio.get_running_loop()
        # Not a `finally`: edgeproxy/compiled.py, no await in a finally.
        try:
            await self._disk.close()  # joins its pool: no eviction hook runs after this
        except BaseException:
            await loop.run_in_executor(None, self._gen.close)
            raise
        await loop.run_in_executor(None, self._gen.close)


class TieredWriter(CopyingWriter):
    """DiskWriter plus, for a key memory held when the writer opened (`hot`),
    a copy of the chunks while the body fits `max_object`: its commit puts
    the key's new variant list and body in memory. For any other key the
    commit leaves memory without it (dropping what a record names), and
    the key's first read from disk brings it in (`lookup`, `open_body`)."""

    def __init__(self, tier: TieredStore, inner: DiskWriter, hot: bool) -> None:
        super().__init__(inner, tier.max_object if hot else 0)
        self._tier = tier
        self._disk_writer = inner  # typed: its commit takes `then`
        self._hot = hot

    async def commit(self, entry: Entry) -> Entry:
        tier = self._tier
        tier._sync()
        done = _Committing(self, tier._seen, self._copy.take())
        inline = self._disk_writer.commit_inline(entry, done.then)
        if inline is None:
            # Shielded: once the disk may have it, the record must go out.
            return await asyncio.shield(self._commit(entry, done))
        # A body kept inline (most misses): the batch's future calls back, so
        # memory is brought up to date when the write is in, whether or not
        # this awaiter is still there; no shield, no task (~5 us a miss).
        answer: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        inline.add_done_callback(partial(done.settle, answer))
        return await answer

    async def _commit(self, entry: Entry, done: _Committing) -> Entry:
        # Banned / StoreError: memory untouched, nothing published. Committed:
        # the record goes out in the commit's own pool job (DiskWriter.commit).
        try:
            stored = await self._disk_writer.commit(entry, then=done.then)
        except BaseException:
            self._tier._published(done.published)  # a record that went out drops the key
            raise
        return done.apply(stored)


class _Committing:
    """One TieredWriter commit's memory side: `then` (on the pool thread,
    in the commit's job) publishes the key's record and keeps the listing;
    `apply` (on the loop, once committed) puts the key's variants and body
    in memory if it was hot and nothing newer came meanwhile, else drops it."""

    __slots__ = ("chunks", "listed", "published", "since", "writer")

    def __init__(self, writer: TieredWriter, since: int, chunks: list[bytes] | None) -> None:
        self.writer = writer
        self.since = since
        self.chunks = chunks
        tier = writer._tier
        self.published = _Publisher(tier._gen, key_hash(writer._disk_writer.key), tier._applying)
        self.listed: list[Entry] = []

    def then(self, variants: list[Entry]) -> None:
        self.listed[:] = variants
        self.published()

    def apply(self, stored: Entry) -> Entry:
        writer = self.writer
        tier = writer._tier
        published = self.published
        h = published.key_hash
        tier._published(published, applying=True)
        if writer._hot and tier._admit(h, self.since, published.number):
            # The key's variants as the disk now lists them: the next request
            # is a memory hit, not a lookup back to the disk (as `update`).
            key = writer._disk_writer.key
            tier._mem.put_entries(key, h, self.listed)
            if self.chunks is not None:
                tier._mem.put_body(key, h, stored.variant, b"".join(self.chunks))
        else:
            tier._mem.drop_hash(h)  # what the record says, to every worker
        return stored

    def settle(self, answer: asyncio.Future[Entry], inline: asyncio.Future[Entry]) -> None:
        """On the loop, the inline commit done: as `_commit` after its await,
        then the outcome to `answer` (unless its awaiter left)."""
        error = asyncio.CancelledError() if inline.cancelled() else inline.exception()
        if error is None:
            try:
                stored = self.apply(inline.result())
            except BaseException as e:
                error = e
            else:
                if not answer.done():
                    answer.set_result(stored)
                return
        else:
            try:
                self.writer._tier._published(self.published)
            except BaseException as e:  # as `_commit`: this one goes out instead
                error = e
        if answer.done():
            return
        if isinstance(error, asyncio.CancelledError):
            answer.cancel()
        else:
            answer.set_exception(error)


class _Publisher:
    """Publishes one key's record when called (on a pool thread, after a disk
    write); keeps the record number, noted in `applying` until the loop
    applies it (TieredStore._published), or the OSError for the loop to raise."""

    __slots__ = ("_applying", "_gen", "error", "key_hash", "number")

    def __init__(self, gen: Generation, h: int, applying: set[int]) -> None:
        self._gen = gen
        self._applying = applying
        self.key_hash = h
        self.number = 0
        self.error: OSError | None = None

    def __call__(self) -> None:
        try:
            number = self._gen.publish([self.key_hash])
        except OSError as e:
            self.error = e
            return
        # A _sync that sees the record before this note drops the key, as for
        # anyone's record: the writer then puts back what it held.
        self._applying.add(number)
        if self.number:  # called again (a failed batch's items retried alone)
            self._applying.discard(self.number)  # the writer applies the last
        self.number = number
