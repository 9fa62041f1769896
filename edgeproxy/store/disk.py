"""The diskcache-backed store: SQLite index plus files, shared by worker processes.

Layout, all in one diskcache directory (one SQLite database, WAL mode):
- diskcache's own `Cache` table holds only bodies, under `b:<variant id>`:
  inline in SQLite when small, a file when large. diskcache evicts them by
  size; nothing else in it is ours.
- `edge_variants`: one row per stored variant (primary key, Vary identity,
  soft-purge mark, Entry JSON). Indexed on (key, id), so a URL's variants, a
  prefix purge and `entries(prefix)` are index range scans.
- `edge_tags(tag, key, vid)`: the surrogate-key index, many-to-many, one row
  per (tag, variant), clustered on (tag, key, vid): a tag purge or listing
  reads only that tag's rows, in key order.
- `edge_bans`: recent purges (kind, value, soft, issued_at), for ban checks.
- `edge_meta`: schema version, the variant counter, the ban horizon.

Our tables live in diskcache's database and are written on diskcache's
connection of the calling thread, inside `Cache.transact()` (BEGIN
IMMEDIATE), so a variant row, its tag rows and the ban check commit as one
SQLite transaction, across threads (one connection per pool thread) and
across the worker processes sharing the directory. No read-modify-write of
joined strings anywhere: each tag is its own row.

Eviction (what we chose): diskcache evicts bodies on its own, inside its own
`set()` transaction. A trigger on its `Cache` table deletes the variant row
of any body row that goes, in that same transaction; a trigger on
`edge_variants` deletes the variant's tag rows and keeps the variant counter.
So eviction never leaves index rows behind: purges and listings never meet
an evicted entry, and `stats()` needs no scan. Index rows pointing at
nothing can still be met (a tag row without its variant, from a database
edited by hand): they are skipped, and dropped unless the caller is a dry
run. A body row whose *file* vanished or whose size is wrong is found by
`open_body`, which drops the variant: a corrupt entry is a miss.

Commit order: a body diskcache keeps inline (under its min_file_size) is
set inside the one index transaction, after the ban check: one BEGIN
IMMEDIATE per stored entry, and a refused or failed commit rolls the body
back with it. A larger body goes in first (its own transaction, the file
copy outside any lock), then one transaction checks bans, checks the body is
still there (a concurrent `set()` may have evicted it), replaces the variant
with the same Vary names and values, and writes the rows. A failed commit
deletes the body it added. A crash between the two leaves an orphan body,
unreachable and evicted by size like any other.

Bans (purge.py): every non-dry purge inserts its ban rows in the
transaction that also reads the highest variant id; the purge then works
only on variants up to that id (in batches of BATCH per transaction, so
other workers' commits interleave), and every later commit or update checks
bans issued after its `request_time`. Bans older than `ban_ttl` before the
newest purge are dropped; the newest dropped `issued_at` becomes the ban
horizon, and a write whose request_time is before the horizon is refused as
if banned (it might have raced a forgotten ban). No clock is read for this:
all times are the shell's (`issued_at`, `request_time`). A fill sent at the
very instant of the purge (request_time == issued_at) is not banned.

`entries()` lists in key order, then oldest variant first (the order of
both indexes), capped at MAX_LIST. A body file diskcache deletes inside our
transaction goes at once, not at COMMIT (its nested transact); if we then
roll back, the row outlives its file and `open_body` drops it later.
Directories from the skeleton's layout (`i:<key>` JSON lists) are not read:
those rows are evicted by size like orphan bodies.

diskcache never decides HTTP freshness: no `expire=` is set. Every diskcache
and sqlite call runs off the event loop, on one of two lanes (store/pool.py
pools): the quick lane's one thread takes the short jobs every miss, disk
hit and revalidation makes (lookups, body opens, inline commit batches,
refreshes), the pool's threads the ones that can take long (copying or
reading a body file, purges, listings), so a long job never holds up a
lookup; a body file is copied before the write lock is taken (`_set_body`).
Lookups queued together on the quick lane run as one SELECT
(`_lookup_many`), and the quick lane never checkpoints the WAL in passing
(CHECKPOINT_EVERY: the pool does). This uses diskcache 5.x internals
(`Cache._sql`, the thread-local connection `transact()` opens its
transaction on); `open` checks they exist. The
store writes some of diskcache's Cache rows itself, as set() would for the
plain Disk: a batch of inline commits in one executemany (`_index_many`),
and a file body's row once its file is written (`_set_body`);
`_rows_writable` checks the table's columns and the Disk class first, and
set() does it otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any, Generic, Literal, TypeVar

import diskcache
from mypy_extensions import mypyc_attr

from edgeproxy import jsontext
from edgeproxy.policy.entry import CorruptEntry, Entry, entry_from_dict
from edgeproxy.purge import (
    Purge,
    PurgeAll,
    PurgePrefix,
    PurgeTags,
    PurgeURL,
    Target,
    host_prefixes,
    matches,
)
from edgeproxy.store.base import Banned, Body, Degraded, NotOpen, StoreError, StoreHealth
from edgeproxy.store.pool import StorePool
from edgeproxy.store.reading import read_body

log = logging.getLogger("edgeproxy.store")

T = TypeVar("T")
Item = TypeVar("Item")
R = TypeVar("R")
Sql = Callable[..., sqlite3.Cursor]
Verdict = Literal["hard", "soft"] | None

BODY = "b:"
MAX_VARIANTS = 32  # per URL; the oldest goes first beyond this
SCHEMA = 1
BATCH = 500  # variants per purge transaction
MAX_LIST = 10_000  # cap on entries(limit=...)
BAN_TTL = 3600.0  # seconds a ban is kept after the newest purge
TMP_MAX_AGE = 3600.0  # leftover temp bodies (a crashed worker's) older than this go at open

# Errors of the layers below, turned into StoreError (writes) or a miss (reads).
LOW_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout, UnicodeError)

# Disk faults: the disk (not this one write) can't take writes. They make the
# store degraded (StoreHealth) instead of failing each write on its own.
FAULT_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
    | {errno.EIO, errno.ENOTDIR}
)
FAULT_SQLITE: tuple[str, ...] = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR")
FAULT_SQLITE += ("SQLITE_CANTOPEN", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_PERM")
BACKOFF_MIN = 1.0  # seconds before the first write after a fault
BACKOFF_MAX = 60.0  # the back-off doubles on each failed retry, up to this

SCHEMA_SQL = (
    "CREATE TABLE IF NOT EXISTS edge_meta (name TEXT PRIMARY KEY, value)",
    "CREATE TABLE IF NOT EXISTS edge_variants ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"  # never reused: purges stop at the max id
    " variant TEXT NOT NULL UNIQUE,"
    " key TEXT NOT NULL,"
    " vary TEXT NOT NULL,"  # JSON [names, values]: what a new response replaces
    " soft INTEGER NOT NULL DEFAULT 0,"
    " meta TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS edge_variants_key ON edge_variants (key, id)",
    "CREATE TABLE IF NOT EXISTS edge_tags ("
    " tag TEXT NOT NULL, key TEXT NOT NULL, vid INTEGER NOT NULL,"
    " PRIMARY KEY (tag, key, vid)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS edge_tags_vid ON edge_tags (vid, tag)",
    "CREATE TABLE IF NOT EXISTS edge_bans ("
    " id INTEGER PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL,"
    " soft INTEGER NOT NULL, issued_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS edge_bans_issued ON edge_bans (issued_at)",
    "CREATE TRIGGER IF NOT EXISTS edge_variants_added AFTER INSERT ON edge_variants"
    " BEGIN UPDATE edge_meta SET value = value + 1 WHERE name = 'variants'; END",
    "CREATE TRIGGER IF NOT EXISTS edge_variants_gone AFTER DELETE ON edge_variants"
    " BEGIN DELETE FROM edge_tags WHERE vid = OLD.id;"
    " UPDATE edge_meta SET value = value - 1 WHERE name = 'variants'; END",
    # diskcache evicting (or anyone deleting) a body takes its variant along.
    "CREATE TRIGGER IF NOT EXISTS edge_body_gone AFTER DELETE ON Cache"
    " WHEN OLD.raw = 1 AND typeof(OLD.key) = 'text' AND substr(OLD.key, 1, 2) = 'b:'"
    " BEGIN DELETE FROM edge_variants WHERE variant = substr(OLD.key, 3); END",
    "INSERT OR IGNORE INTO edge_meta (name, value) VALUES ('variants', 0)",
)


# `_index_many`'s statements. A body row as diskcache's set() writes a bytes
# value under min_file_size (Disk.store: size 0, MODE_RAW, no file; the
# store_time and access_time of now, never read, no expiry, no tag): its
# count and size triggers fire as for set()'s own INSERT.
CACHE_COLUMNS = frozenset(
    {"key", "raw", "store_time", "expire_time", "access_time", "access_count"}
    | {"tag", "size", "mode", "filename", "value"}
)
INSERT_BODY_SQL = (
    "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
    " tag, size, mode, filename, value)"
    f" VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, {diskcache.core.MODE_RAW}, NULL, ?)"
)
INSERT_FILE_SQL = (  # the same for a body in a file (Disk.store's size, mode, filename)
    "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
    " tag, size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, ?, ?, ?, NULL)"
)
INSERT_VARIANT_SQL = (
    "INSERT INTO edge_variants (variant, key, vary, soft, meta) VALUES (?, ?, ?, ?, ?)"
)
INSERT_TAG_SQL = (
    "INSERT OR IGNORE INTO edge_tags (tag, key, vid)"
    " SELECT ?, ?, id FROM edge_variants WHERE variant = ?"
)
KEYS_PER_SELECT = 200  # well under SQLite's bound on a statement's parameters
# The quick lane never checkpoints the WAL in passing (its connection's
# wal_autocheckpoint is 0): a checkpoint fsyncs the log and the database,
# and while the lane waited on the disk, every lookup and commit queued
# behind it waited too, and the event loop ran dry. The pool checkpoints
# instead, after every CHECKPOINT_EVERY lane transactions (about SQLite's
# 1,000 pages at ~30 pages a batch); should the pool not get to it by
# CHECKPOINT_OVERDUE, the lane does it itself, as SQLite would have.
CHECKPOINT_EVERY = 32
CHECKPOINT_OVERDUE = 256
_LOOKUP_SQL: dict[int, str] = {}  # DiskStore._lookup_many's, by number of placeholders

# Per connection (DiskStore._watch_evictions): reports each deleted variant
# row to a Python function of that connection, which keeps the keys only
# while a body's set() runs. TEMP: invisible to other connections and processes.
EVICT_WATCH_SQL = (
    "CREATE TEMP TRIGGER IF NOT EXISTS edge_evicted_note AFTER DELETE ON main.edge_variants"
    " BEGIN SELECT edge_evicted(OLD.key); END"
)


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`; None: no bound.

    SQLite compares TEXT with memcmp on UTF-8 (BINARY collation), and UTF-8
    byte order is code point order, so `prefix <= key < prefix_end(prefix)`
    in SQL is exactly `key.startswith(prefix)`, and it is an index range.
    """
    p = prefix
    while p:
        last = ord(p[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates can't be encoded: skip them
                nxt = 0xE000
            return p[:-1] + chr(nxt)
        p = p[:-1]
    return None


@dataclass(frozen=True, slots=True)
class _Scan:
    """One index walk of a purge, in (key, id) order with a cursor.

    `tag` set: that tag's rows of edge_tags (`earlier` are the purge's tags
    already walked, so a variant carrying two of them counts once). Else the
    keys in [lo, hi) of edge_variants, or just `lo` when `exact`.
    """

    lo: str = ""
    hi: str | None = None
    exact: bool = False
    tag: str | None = None
    earlier: tuple[str, ...] = ()


def _scans(target: Target) -> list[_Scan]:
    match target:
        case PurgeURL(url=url):
            return [_Scan(url, exact=True), _Scan(url + "#", prefix_end(url + "#"))]
        case PurgePrefix(prefix=prefix):
            return [_Scan(prefix, prefix_end(prefix))]
        case PurgeTags(tags=tags):
            unique = tuple(dict.fromkeys(tags))
            return [_Scan(tag=t, earlier=unique[:i]) for i, t in enumerate(unique)]
        case PurgeAll(host=host):
            if host is None:
                return [_Scan()]
            return [_Scan(p, prefix_end(p)) for p in host_prefixes(host)]


def _ban_rows(target: Target) -> list[tuple[str, str]]:
    match target:
        case PurgeURL(url=url):
            return [("url", url)]
        case PurgePrefix(prefix=prefix):
            return [("prefix", prefix)]
        case PurgeTags(tags=tags):
            return [("tag", t) for t in dict.fromkeys(tags)]
        case PurgeAll(host=host):
            return [("all", "")] if host is None else [("host", host)]


def _ban_target(kind: str, value: str) -> Target:
    match kind:
        case "url":
            return PurgeURL(value)
        case "prefix":
            return PurgePrefix(value)
        case "tag":
            return PurgeTags((value,))
        case "host":
            return PurgeAll(value)
        case _:  # "all", or a kind from a newer version: err on the side of banning
            return PurgeAll()


def variant_id(now_ns: int, noise: bytes) -> str:
    """A new variant's id: the time in ns as 16 hex digits, then 8 random
    bytes (`noise`: os.urandom(8)) against clashes between workers. Time
    first: the body's key ("b:" + id) and the variant's own index take new
    ids at their ends rather than on random pages, so a commit dirties
    fewer B-tree pages. Thread CPU a commit in batches of 16 on a store of
    50k entries: 175-178 us with 16 random bytes, 98-126 us so."""
    return f"{now_ns:016x}{noise.hex()}"


def _inline_size(cache: diskcache.Cache | None) -> int:
    size: int = 0 if cache is None else getattr(cache.disk, "min_file_size", 0)
    return size


def _distinct_keys(batch: Sequence[_Inline]) -> bool:
    return len({c.entry.key for c in batch}) == len(batch)


def _stored_variants(
    sql: Sql, keys: Sequence[str]
) -> dict[str, list[tuple[int, str, str, int, Any]]]:
    """Per key, its stored variants (id, variant, vary, soft, meta), oldest first."""
    out: dict[str, list[tuple[int, str, str, int, Any]]] = {}
    for start in range(0, len(keys), KEYS_PER_SELECT):
        part = keys[start : start + KEYS_PER_SELECT]
        marks = ", ".join("?" * len(part))
        query = (
            "SELECT key, id, variant, vary, soft, meta FROM edge_variants"
            f" WHERE key IN ({marks}) ORDER BY id"
        )
        for key, vid, variant, vary, soft, meta in sql(query, part).fetchall():
            out.setdefault(key, []).append((vid, variant, vary, soft, meta))
    return out


def _vary_id(entry: Entry) -> str:
    return jsontext.dumps_exact([list(entry.vary), list(entry.secondary)])


class _Bans:
    """The bans a write transaction checks what it stores against: whether a
    purge issued after an entry's request_time covers it. Read once a
    transaction (two statements, not two an entry): it holds the write lock,
    so no purge adds one meanwhile. `since`: the earliest request_time it
    will be asked about."""

    __slots__ = ("_bans", "_horizon")

    def __init__(self, sql: Sql, since: float) -> None:
        row = sql("SELECT value FROM edge_meta WHERE name = 'ban_horizon'").fetchone()
        self._horizon: float | None = None if row is None else row[0]
        self._bans: list[tuple[str, str, int, float]] = sql(
            "SELECT kind, value, soft, issued_at FROM edge_bans WHERE issued_at > ?", (since,)
        ).fetchall()

    def verdict(self, key: str, tags: Sequence[str], request_time: float) -> Verdict:
        if self._horizon is not None and request_time < self._horizon:
            return "hard"  # it may have raced a ban we no longer keep
        verdict: Verdict = None
        for kind, value, soft, issued_at in self._bans:
            if issued_at > request_time and matches(_ban_target(kind, value), key, tags):
                if not soft:
                    return "hard"
                verdict = "soft"
        return verdict


def _admissible(entry: Entry, bans: _Bans) -> Entry:
    """`entry` as bans let it be stored (soft-purged maybe); Banned if not at all."""
    verdict = bans.verdict(entry.key, entry.tags, entry.request_time)
    if verdict == "hard":
        raise Banned(f"{entry.key}: a purge was issued while this response was fetched")
    return entry.with_changes(soft_purged=True) if verdict == "soft" else entry


def _tags(entry: Entry) -> list[str]:
    return [t for t in dict.fromkeys(entry.tags) if t]


def _decode(variant: str, soft: int, meta: Any) -> Entry:
    try:
        entry = entry_from_dict(jsontext.loads(meta))
    except (ValueError, TypeError) as e:  # CorruptEntry is a ValueError
        raise CorruptEntry(str(e)) from e
    if entry.variant != variant:
        raise CorruptEntry(f"variant {entry.variant!r} stored as {variant!r}")
    # The column is the truth: a soft purge flips it without rewriting JSON.
    return entry if entry.soft_purged == bool(soft) else entry.with_changes(soft_purged=bool(soft))


class _Faults:
    """Write-fault state (StoreHealth), read on the loop, changed on pool threads.

    A disk fault makes the store degraded: logged once, then writes wait out a
    back-off (on the injected clock: no timer, no sleep) and the next write
    after it is the retry. A retry that succeeds ends it (logged once); one
    that fails doubles the back-off. Purges and invalidations are always
    tried; one that fails is kept in `pending` and applied before the next
    write, and lookups miss until then.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.reason = ""  # "" while ok
        self.failures = 0
        self.epoch = 0  # +1 per degraded spell: a write begun before it can't end it
        self._backoff = 0.0
        self._retry_at = 0.0
        self.pending: list[Purge | str] = []  # str: a key for delete()

    def writable(self) -> bool:
        """Ok, or degraded with the back-off over (the next write is the retry)."""
        return not self.reason or self._clock() >= self._retry_at

    def health(self, hits: bool) -> StoreHealth:
        if not self.reason:
            return StoreHealth(write_failures=self.failures, hits=hits, pending=len(self.pending))
        return StoreHealth(
            state="degraded",
            reason=self.reason,
            write_failures=self.failures,
            retry_in=max(0.0, self._retry_at - self._clock()),
            hits=hits and not self.pending,
            pending=len(self.pending),
        )

    def failed(self, what: str, e: BaseException, keep: Purge | str | None = None) -> Degraded:
        with self._lock:
            self.failures += 1
            if keep is not None and keep not in self.pending:
                self.pending.append(keep)
            now = self._clock()
            if not self.reason:
                self.epoch += 1
                self._backoff = BACKOFF_MIN
                self._retry_at = now + self._backoff
                log.error(
                    "cache store degraded: %s: %s; passing responses through unstored, "
                    "retrying writes after %gs",
                    what,
                    e,
                    self._backoff,
                )
            elif now >= self._retry_at:  # a retry failed (not a write begun before)
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
                self._retry_at = now + self._backoff
                log.debug("cache store still degraded: %s: %s", what, e)
            self.reason = f"{what}: {e}"
            if self.pending:
                self.reason += f" ({len(self.pending)} purges waiting: serving no hits)"
        return Degraded(f"{what}: {e}")

    def succeeded(self, epoch: int) -> None:
        if not self.reason:
            return  # the common path: no lock
        with self._lock:
            if self.reason and epoch == self.epoch and not self.pending:
                log.warning(
                    "cache store recovered (%d failed writes so far): caching again",
                    self.failures,
                )
                self.reason = ""
                self._backoff = 0.0


@dataclass(slots=True)
class _Update:
    """A refresh after a 304 (DiskStore.update_stored)."""

    entry: Entry
    then: Callable[[], object] | None

    def __init__(self, entry: Entry, then: Callable[[], object] | None) -> None:
        self.entry = entry
        self.then = then


@dataclass(slots=True)
class _Inline:
    """A new entry whose body SQLite keeps inline (DiskWriter.commit)."""

    entry: Entry
    data: bytes
    then: Callable[[list[Entry]], object] | None

    def __init__(
        self, entry: Entry, data: bytes, then: Callable[[list[Entry]], object] | None
    ) -> None:
        self.entry = entry
        self.data = data
        self.then = then


class _Batches(Generic[Item, R]):
    """Writes of one kind, a pool job at a time: what gathers while a job
    runs goes in the next, one transaction for all (`job`, on a pool thread,
    returns one result or exception per item). A job that fails as a whole
    is retried item by item, so one bad item fails alone; a disk fault
    degrades the store for all, as any write does (`DiskStore._change`).
    """

    def __init__(self, store: DiskStore, kind: str, job: str):
        self._store = store
        self._kind = kind
        self._job_name = job  # a DiskStore method, looked up per batch
        self._queue: list[tuple[Item, asyncio.Future[R]]] = []
        self.task: asyncio.Task[None] | None = None

    async def submit(self, item: Item, what: str) -> R:
        return await self.queue(item, what)

    def queue(self, item: Item, what: str) -> asyncio.Future[R]:
        """`submit` without the coroutine: the future of the item's result."""
        faults = self._store._faults
        if not faults.writable():
            raise Degraded(f"{what}: {faults.reason}")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, done))
        if self.task is None:
            self.task = loop.create_task(self._flush(), name=f"store {self._kind}")
        return done

    async def _flush(self) -> None:
        batch: list[tuple[Item, asyncio.Future[R]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                items = [item for item, _ in batch]
                try:
                    results = await self._store._change(
                        f"{self._kind} of {len(batch)}", self._job, items, quick=True
                    )
                except StoreError as e:
                    if len(batch) == 1 or isinstance(e, Degraded):
                        results = [e] * len(batch)
                    else:
                        results = [await self._alone(item) for item in items]
                for (_, done), result in zip(batch, results, strict=True):
                    _settle(done, result)
                batch = []
                self._store._checkpoint_soon()
        except BaseException as e:
            # A bug below or the loop shutting down: nobody is left waiting.
            for _, done in [*batch, *self._queue]:
                _settle(done, e)
            self._queue = []
            raise
        finally:
            self.task = None

    @property
    def _job(self) -> Callable[[list[Item]], list[R | Exception]]:
        job: Callable[[list[Item]], list[R | Exception]] = getattr(self._store, self._job_name)
        return job

    async def _alone(self, item: Item) -> R | Exception:
        try:
            (result,) = await self._store._change(self._kind, self._job, [item], quick=True)
        except StoreError as e:
            return e
        return result


def _settle(done: asyncio.Future[R], result: R | BaseException) -> None:
    if done.done():
        return  # its caller left; the write still happened
    if isinstance(result, asyncio.CancelledError):
        done.cancel()
    elif isinstance(result, BaseException):
        done.set_exception(result)
    else:
        done.set_result(result)


@mypyc_attr(allow_interpreted_subclasses=True)  # tests spy on a plain subclass's instances
class DiskStore:
    def __init__(
        self,
        cache: diskcache.Cache | None,
        directory: str,
        executor: StorePool,
        spill_threshold: int,
        ban_ttl: float = BAN_TTL,
        *,
        size_limit: int = 1 << 30,
        eviction_policy: str = "least-recently-stored",
        clock: Callable[[], float] = time.monotonic,
        quick: StorePool | None = None,
    ) -> None:
        self._opened = cache  # None: not open yet (started degraded)
        # diskcache's min_file_size, read once opened (its `disk` is a Python
        # property, and every commit asks): bodies below it are kept inline.
        self._inline_size = _inline_size(cache)
        self._open_args = (directory, size_limit, eviction_policy)
        self._open_lock = threading.Lock()
        self._replay_lock = threading.Lock()
        self._faults = _Faults(clock)
        self._directory = directory
        self._tmp = os.path.join(directory, "tmp")
        self._executor = executor
        # The quick lane (`_run_quick`): one thread for the jobs every miss,
        # hit from disk and revalidation makes, each a few SQL statements.
        # Kept busy by a stream of them, it takes the next without sleeping;
        # spread over the pool's threads, each job woke a sleeping thread
        # (a futex wake and two context switches): on one core, one lane
        # cost 5.7% less CPU a miss (scripts/bench --versus, docs Run 13).
        # Jobs that can take long (copying or reading a body file, purges,
        # listings) stay on `executor`, so they never hold up a lookup.
        self._quick = executor if quick is None else quick
        self.spill_threshold = spill_threshold
        self.ban_ttl = ban_ttl
        self._closed = False
        # Hook for a tier in front (store/tiered.py): called on the pool
        # thread, once a commit's body is in, with the primary keys of the
        # variants diskcache evicted to make room for it (see _set_body).
        self.on_evict: Callable[[list[str]], None] | None = None
        # And a context its batches' `then`s run in (the hot tier's: one
        # lock of the generation file for all of a batch's records).
        self.publishing: Callable[[], AbstractContextManager[object]] | None = None
        self._local = threading.local()  # per pool thread: eviction notes (_set_body)
        # One writer at a time in this process (`_txn`, `_set_body`): the pool
        # threads queue here, where a release wakes the next at once, not in
        # SQLite's busy handler, which sleeps 1-100 ms between tries. SQLite's
        # own lock still orders the worker processes; readers never take this.
        self._write_lock = threading.RLock()
        # Refreshes after a 304 and inline-body commits: batched (_Batches).
        self._updates: _Batches[_Update, Entry | None] = _Batches(
            self, "refreshes", "_update_batch"
        )
        self._inlines: _Batches[_Inline, Entry] = _Batches(self, "commits", "_commit_batch")
        self._bulk: bool | None = None  # _rows_writable, once known
        # Lane transactions since the last checkpoint began (_lane_wrote; a
        # lost count between threads only moves a checkpoint a little).
        self.lane_writes = 0
        self.checkpoint_every = CHECKPOINT_EVERY
        self.checkpoint_overdue = CHECKPOINT_OVERDUE
        self._checkpointing: asyncio.Task[None] | None = None

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def _cache(self) -> diskcache.Cache:
        cache = self._opened
        if cache is None:
            raise NotOpen(f"cache {self._directory} is not open")
        return cache

    def health(self) -> StoreHealth:
        """Cheap (no I/O): for /healthz, metrics and the proxy's store decision."""
        return self._faults.health(hits=self._opened is not None)

    def writable(self) -> bool:
        """Whether a write would be tried now (ok, or the back-off is over)."""
        return self._faults.writable()

    @classmethod
    async def open(
        cls,
        directory: str,
        size_limit: int = 1 << 30,
        spill_threshold: int = 256 * 1024,
        eviction_policy: str = "least-recently-stored",
        threads: int = 4,
        ban_ttl: float = BAN_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> DiskStore:
        """Open the cache. A damaged database is moved aside (`_open_cache`); a
        directory that can't be opened (unwritable, full, I/O errors) gives a
        store that starts degraded, passes everything through, and opens the
        cache at the first write after the back-off (`clock`) once it can."""
        executor = StorePool(threads, "edgeproxy-store")
        quick = StorePool(1, "edgeproxy-store-quick")
        loop = asyncio.get_running_loop()
        opened: diskcache.Cache | None = None
        failure: BaseException | None = None
        try:
            opened = await executor.run(_open_cache, directory, size_limit, eviction_policy)
        except (OSError, sqlite3.OperationalError, sqlite3.DatabaseError) as e:
            failure = e  # serving without a cache beats a crash loop
        except BaseException as e:
            await loop.run_in_executor(None, executor.shutdown)
            await loop.run_in_executor(None, quick.shutdown)
            if isinstance(e, LOW_ERRORS):
                raise StoreError(f"opening cache {directory}: {e}") from e
            raise
        store = cls(
            opened,
            directory,
            executor,
            spill_threshold,
            ban_ttl,
            size_limit=size_limit,
            eviction_policy=eviction_policy,
            clock=clock,
            quick=quick,
        )
        if failure is not None:
            store._faults.failed(f"opening cache {directory}", failure)
        executor.on_exit = quick.on_exit = store._close_connection
        return store

    def _ensure_open(self) -> None:
        """On a pool thread, before a write: open the cache if it isn't yet."""
        if self._opened is None:
            with self._open_lock:
                if self._opened is None:
                    opened = _open_cache(*self._open_args)
                    self._inline_size = _inline_size(opened)
                    self._opened = opened
                    log.info("cache %s opened", self._directory)

    def _attempt(self, fn: Callable[..., T], *args: Any) -> T:
        """On a pool thread: open if need be, apply the kept purges, then `fn`."""
        self._ensure_open()
        if self._faults.pending:
            with self._replay_lock:
                while self._faults.pending:
                    op = self._faults.pending[0]
                    if isinstance(op, str):
                        self._delete(op)
                    else:
                        self._purge(op)
                    log.info("applied a kept %s", f"delete of {op}" if isinstance(op, str) else op)
                    self._faults.pending.pop(0)
        result: T = fn(*args)
        return result

    async def _change(
        self,
        what: str,
        fn: Callable[..., T],
        *args: Any,
        keep: Purge | str | None = None,
        quick: bool = False,
    ) -> T:
        """A write, under the fault state: while degraded and backing off, it is
        refused at once (`Degraded`) unless `keep` is set (a purge or
        invalidation: always tried, and kept for later if it fails)."""
        faults = self._faults
        if keep is None and not faults.writable():
            raise Degraded(f"{what}: {faults.reason}")
        epoch = faults.epoch
        try:
            if quick:
                result: T = await self._run_quick(self._attempt, fn, *args)
            else:
                result = await self._run(self._attempt, fn, *args)
        except LOW_ERRORS as e:
            if is_fault(e):
                raise faults.failed(what, e, keep) from e
            raise StoreError(f"{what}: {e}") from e
        faults.succeeded(epoch)
        return result

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._executor.run(fn, *args)

    async def _run_quick(self, fn: Callable[..., T], *args: Any) -> T:
        """On the quick lane: for jobs of a few statements, no file copies."""
        return await self._quick.run(fn, *args)

    async def _write(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run a write on the pool; lower-level failures become StoreError."""
        try:
            return await self._run(fn, *args)
        except LOW_ERRORS as e:
            raise StoreError(f"{what}: {e}") from e

    # -- SQL on the calling pool thread's connection ------------------------

    @property
    def _sql(self) -> Sql:
        """Autocommit statements (each its own read snapshot) on this thread.
        Called through a local (`sql = self._sql; sql(...)`): compiled, mypyc
        (2.4) made `self._sql(...)` call the property with the arguments."""
        sql: Sql = self._cache._sql
        return sql

    @contextlib.contextmanager
    def _txn(self) -> Iterator[Sql]:
        """BEGIN IMMEDIATE on this thread's connection; diskcache calls nest in it."""
        with self._write_lock, self._cache.transact():
            yield self._sql

    def _drop(self, sql: Sql, vid: int, variant: str) -> None:
        """Remove one variant: its row (tags go by trigger) and its body."""
        sql("DELETE FROM edge_variants WHERE id = ?", (vid,))
        self._cache.delete(BODY + variant)

    def _insert(self, sql: Sql, entry: Entry, vary: str) -> int:
        """Index the variant (`vary`: its _vary_id); its row id."""
        meta = jsontext.dumps(entry.to_dict())
        cur = sql(
            "INSERT INTO edge_variants (variant, key, vary, soft, meta) VALUES (?, ?, ?, ?, ?)",
            (entry.variant, entry.key, vary, int(entry.soft_purged), meta),
        )
        vid = cur.lastrowid
        assert vid is not None  # an INSERT into a rowid table
        self._insert_tags(sql, entry, vid)
        return vid

    def _insert_tags(self, sql: Sql, entry: Entry, vid: int | None) -> None:
        for tag in _tags(entry):
            sql(
                "INSERT OR IGNORE INTO edge_tags (tag, key, vid) VALUES (?, ?, ?)",
                (tag, entry.key, vid),
            )

    def _entries(self, rows: Sequence[tuple[int, str, int, Any]]) -> list[Entry]:
        """Decode (id, variant, soft, meta) rows; unreadable ones are dropped."""
        out: list[Entry] = []
        bad: list[tuple[int, str]] = []
        for vid, variant, soft, meta in rows:
            try:
                out.append(_decode(variant, soft, meta))
            except CorruptEntry as e:
                log.warning("dropping unreadable entry %s: %s", variant, e)
                bad.append((vid, variant))
        if bad:
            with contextlib.suppress(*LOW_ERRORS), self._txn() as sql:
                for vid, variant in bad:
                    self._drop(sql, vid, variant)
        return out

    # -- Store protocol: reads -----------------------------------------------

    async def lookup(self, key: str) -> list[Entry]:
        if self._opened is None or self._faults.pending:
            return []  # see _Faults: a purge we could not apply yet, or no cache
        try:
            return await self._quick.gathered(self._lookup_many, key)
        except LOW_ERRORS as e:
            log.warning("lookup failed for %s: %s", key, e)
            return []

    def _lookup_many(self, keys: list[str]) -> list[list[Entry]]:
        """On the quick lane: each key's variants, oldest first, for the
        lookups queued one after another (StorePool.gathered).
        One statement for them all, its placeholders rounded up to a power
        of two (the last key repeated) so a few statements stay prepared."""
        if len(keys) == 1:
            return [self._lookup(keys[0])]
        found: dict[str, list[Entry]] = {}
        distinct = list(dict.fromkeys(keys))
        rows: dict[str, list[tuple[int, str, int, Any]]] = {}
        sql = self._sql  # a local: see _sql
        for start in range(0, len(distinct), KEYS_PER_SELECT):
            part = distinct[start : start + KEYS_PER_SELECT]
            width = min(KEYS_PER_SELECT, 1 << (len(part) - 1).bit_length())
            part += part[-1:] * (width - len(part))
            query = _LOOKUP_SQL.get(width)
            if query is None:
                marks = ", ".join("?" * width)
                query = _LOOKUP_SQL[width] = (
                    "SELECT key, id, variant, soft, meta FROM edge_variants"
                    f" WHERE key IN ({marks}) ORDER BY id"
                )
            for key, vid, variant, soft, meta in sql(query, part).fetchall():
                rows.setdefault(key, []).append((vid, variant, soft, meta))
        for key in distinct:
            found[key] = self._entries(rows.get(key) or [])
        # A key asked twice gets a list of its own each time.
        return [list(found[key]) for key in keys]

    def _lookup(self, key: str) -> list[Entry]:
        sql = self._sql  # a local: see _sql
        rows = sql(
            "SELECT id, variant, soft, meta FROM edge_variants WHERE key = ? ORDER BY id", (key,)
        ).fetchall()
        return self._entries(rows)

    def open_writer(self, key: str) -> DiskWriter:
        return DiskWriter(self, key)

    async def open_body(self, entry: Entry) -> Body | None:
        try:
            return await self._run_quick(self._open_body, entry)
        except LOW_ERRORS as e:
            log.warning("body of %s unreadable: %s", entry.key, e)
            return None

    def _open_body(self, entry: Entry) -> Body | None:
        value = self._cache.get(BODY + entry.variant, read=True)  # a missing file reads as None
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

    def read_body(self, body: Body, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        return read_body(self._run, body, chunk_size)

    async def entries(
        self, prefix: str = "", tag: str | None = None, limit: int = 100
    ) -> list[Entry]:
        return await self._write("listing entries", self._list, prefix, tag, limit)

    def _list(self, prefix: str, tag: str | None, limit: int) -> list[Entry]:
        limit = max(0, min(limit, MAX_LIST))
        if limit == 0:
            return []
        end = prefix_end(prefix)
        upper = "" if end is None else " AND {k} < ?"
        if tag is None:
            query = (
                "SELECT id, variant, soft, meta FROM edge_variants WHERE key >= ?"
                + upper.format(k="key")
                + " ORDER BY key, id LIMIT ?"
            )
            args: tuple[object, ...] = (prefix,)
        else:
            query = (
                "SELECT v.id, v.variant, v.soft, v.meta FROM edge_tags AS t"
                " JOIN edge_variants AS v ON v.id = t.vid WHERE t.tag = ? AND t.key >= ?"
                + upper.format(k="t.key")
                + " ORDER BY t.key, t.vid LIMIT ?"
            )
            args = (tag, prefix)
        if end is not None:
            args += (end,)
        sql = self._sql
        return self._entries(sql(query, (*args, limit)).fetchall())

    async def stats(self) -> dict[str, int]:
        if self._opened is None:
            return {"entries": 0, "bytes": 0}  # started degraded: nothing stored
        return await self._write("reading stats", self._stats)

    def _stats(self) -> dict[str, int]:
        # A trigger-kept counter and diskcache's own size tally: no scan.
        sql = self._sql
        (variants,) = sql("SELECT value FROM edge_meta WHERE name = 'variants'").fetchone()
        return {"entries": int(variants), "bytes": int(self._cache.volume())}

    # -- Store protocol: writes ----------------------------------------------

    async def update(self, entry: Entry, then: Callable[[], object] | None = None) -> bool:
        """`then()` runs in the same pool job once the transaction ended, even
        if it failed (the hot tier's publish: one hop, not two)."""
        return await self.update_stored(entry, then) is not None

    async def update_stored(
        self, entry: Entry, then: Callable[[], object] | None = None
    ) -> Entry | None:
        """`update`, returning the entry as stored (a soft ban marks it
        soft-purged), or None when nothing was: for the hot tier to keep.

        Refreshes are written in batches, one transaction each: while one
        batch is on the pool, the next gathers. Under load a revalidation
        then costs a few statements rather than a transaction of its own
        (BEGIN IMMEDIATE, the WAL append and COMMIT were ~2/3 of its store
        CPU). A batch that fails is retried entry by entry, so one bad
        entry fails alone.
        """
        return await self._updates.submit(_Update(entry, then), f"updating {entry.key}")

    def _update_batch(self, batch: list[_Update]) -> list[Entry | Exception | None]:
        """On a pool thread: every refresh in one transaction; then each
        `then()` (the hot tier's publish), even if it failed."""
        self._lane_wrote()
        try:
            with self._txn() as sql:
                bans = _Bans(sql, min(u.entry.request_time for u in batch))
                return [self._update_row(sql, u.entry, bans) for u in batch]
        finally:
            with self._publishing():
                for u in batch:
                    if u.then is not None:
                        u.then()

    def _update_row(self, sql: Sql, entry: Entry, bans: _Bans) -> Entry | None:
        # The row and its tags in one statement: a refresh is two, with the UPDATE.
        rows = sql(
            "SELECT v.id, t.tag FROM edge_variants v LEFT JOIN edge_tags t ON t.vid = v.id"
            " WHERE v.variant = ? AND v.key = ?",
            (entry.variant, entry.key),
        ).fetchall()
        if not rows:
            return None
        vid = rows[0][0]
        verdict = bans.verdict(entry.key, entry.tags, entry.request_time)
        if verdict == "hard":
            self._drop(sql, vid, entry.variant)
            return None
        if verdict == "soft":
            entry = entry.with_changes(soft_purged=True)
        sql(
            "UPDATE edge_variants SET vary = ?, soft = ?, meta = ? WHERE id = ?",
            (_vary_id(entry), int(entry.soft_purged), jsontext.dumps(entry.to_dict()), vid),
        )
        if {t for _, t in rows if t is not None} != set(_tags(entry)):
            sql("DELETE FROM edge_tags WHERE vid = ?", (vid,))
            self._insert_tags(sql, entry, vid)
        return entry

    async def delete(self, key: str) -> int:
        # An invalidation (RFC 9111 section 4.4): kept and applied later if the disk fails.
        return await self._change(f"deleting {key}", self._delete, key, keep=key)

    def _delete(self, key: str) -> int:
        # The URL's `key#extras` keys are responses for the same URI too.
        with self._txn() as sql:
            rows = []
            for scan in _scans(PurgeURL(key)):
                rows += self._range_rows(sql, scan, (scan.lo, -1), None, limit=-1)
            for _, vid, variant in rows:
                self._drop(sql, vid, variant)
        return len(rows)

    async def delete_variant(self, entry: Entry) -> None:
        await self._change(f"deleting {entry.key}", self._delete_variant, entry)

    def _delete_variant(self, entry: Entry) -> None:
        with self._txn() as sql:
            row = sql("SELECT id FROM edge_variants WHERE variant = ?", (entry.variant,)).fetchone()
            if row is not None:
                sql("DELETE FROM edge_variants WHERE id = ?", row)
            self._cache.delete(BODY + entry.variant)

    def _commit(
        self,
        entry: Entry,
        data: bytes | None,
        tmp: IO[bytes] | None,
        then: Callable[[list[Entry]], object] | None = None,
    ) -> Entry:
        """Store the body and index the variant; `then(listed)` runs after it
        committed, in this same pool job (the hot tier's publish: no 2nd
        hop), with the key's variants as they now stand, the stored one last.

        A body diskcache keeps inline (bytes under its min_file_size: no file
        to copy) goes in the index transaction itself (`_commit_batch`, which
        DiskWriter.commit usually reaches with others arriving together), and
        a refused commit rolls its body back with it. A larger body is copied
        to its file outside any lock, in diskcache's own transaction, before
        the index one.
        """
        value: bytes | IO[bytes] = tmp if tmp is not None else data or b""
        if isinstance(value, bytes) and len(value) < self._inline_size:
            # Inline: in the index transaction itself, as a batch of one.
            (result,) = self._commit_batch([_Inline(entry, value, then)])
            if isinstance(result, Exception):
                raise result
            return result
        body_key = BODY + entry.variant
        watch = self._watch_evictions()  # before any transaction: it may create TEMP objects
        try:
            try:
                if tmp is not None:
                    tmp.flush()
                    tmp.seek(0)
                self._set_body(body_key, value)
            finally:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        tmp.close()  # delete=True unlinks it
            with self._txn() as sql:
                bans = _Bans(sql, entry.request_time)
                entry, listed = self._index(sql, (entry, bans), body_key, None)
                evicted = self._cull(watch)  # after the writes, as _commit_batch
        except BaseException:
            with contextlib.suppress(*LOW_ERRORS):
                self._cache.delete(body_key)
            raise
        if evicted:  # committed with the index
            self._evicted(evicted)
        if then is not None:
            then(listed)
        return entry

    def _index(
        self,
        sql: Sql,
        admitting: tuple[Entry, _Bans],
        body_key: str,
        inline: bytes | None,
    ) -> tuple[Entry, list[Entry]]:
        """In a transaction: index the entry (its body stored already, or
        `inline` here, nested in it) as the transaction's bans admit it; the
        entry as stored and the key's variants after it (`_siblings`)."""
        entry = _admissible(*admitting)  # before any write: a ban leaves nothing to undo
        if inline is not None:
            # No cull in it (the caller's, once a transaction), so the body
            # is there for the rest of this transaction: nothing to check.
            self._set_body(body_key, inline)
        else:
            # Stored in a transaction of its own before this one: a cull since
            # may have taken it.
            present = sql("SELECT 1 FROM Cache WHERE key = ? AND raw = 1", (body_key,))
            if present.fetchone() is None:
                raise StoreError(f"{entry.key}: body evicted before its commit")
        # One read of the key's variants. A new response replaces the stored
        # one it would be selected instead of: same Vary names and values
        # (RFC 9111 section 4.1). The rest stay, the oldest going first
        # past MAX_VARIANTS.
        vary = _vary_id(entry)
        rows = sql(
            "SELECT id, variant, vary, soft, meta FROM edge_variants WHERE key = ? ORDER BY id",
            (entry.key,),
        ).fetchall()
        kept: list[tuple[int, str, int, Any]] = []
        for vid, variant, their_vary, soft, meta in rows:
            if their_vary == vary:
                self._drop(sql, vid, variant)
            else:
                kept.append((vid, variant, soft, meta))
        kept.append((self._insert(sql, entry, vary), entry.variant, int(entry.soft_purged), None))
        for vid, variant, _, _ in kept[:-MAX_VARIANTS]:
            self._drop(sql, vid, variant)
        return entry, self._siblings(sql, entry, kept[-MAX_VARIANTS:])

    def _siblings(
        self, sql: Sql, entry: Entry, rows: Sequence[tuple[int, str, int, Any]]
    ) -> list[Entry]:
        """In the commit's transaction: the key's variants as `lookup` would
        list them now, `entry` (the newest) last, decoding only the others
        (usually none); an unreadable one is dropped, as `_entries` does."""
        listed: list[Entry] = []
        for vid, variant, soft, meta in rows:
            if variant == entry.variant:
                continue
            try:
                listed.append(_decode(variant, soft, meta))
            except CorruptEntry as e:
                log.warning("dropping unreadable entry %s: %s", variant, e)
                self._drop(sql, vid, variant)
        listed.append(entry)
        return listed

    def _commit_batch(self, batch: list[_Inline]) -> list[Entry | Exception]:
        """On a pool thread: inline-body commits in one transaction, then
        one cull for them all (diskcache's set culled in each: three
        statements a commit); then their evictions and each `then(listed)`,
        as `_commit`. A commit a ban refuses is refused before it writes
        anything, so the others go on; any other failure fails the batch
        (_Batches then retries each alone).

        The cull may take a body the transaction just stored (diskcache
        evicts ten at a time, so in a cache of a few objects): its commit
        still returns it, and the eviction's record keeps it out of every
        hot tier (TieredStore._admit), as when the next commit's cull
        takes it. Culling before the writes instead would roll its
        evictions back with a commit it failed, and never free room."""
        watch = self._watch_evictions()
        results: list[Entry | Exception] = []
        listings: list[list[Entry]] = []
        self._lane_wrote()
        with self._txn() as sql:
            bans = _Bans(sql, min(c.entry.request_time for c in batch))
            if len(batch) > 1 and self._rows_writable() and _distinct_keys(batch):
                self._index_many(sql, batch, bans, results, listings)
            else:
                for c in batch:
                    try:
                        entry, listed = self._index(
                            sql, (c.entry, bans), BODY + c.entry.variant, c.data
                        )
                    except Banned as e:
                        results.append(e)
                        listings.append([])
                        continue
                    results.append(entry)
                    listings.append(listed)
            evicted = self._cull(watch)
        with self._publishing():
            if evicted:
                self._evicted(evicted)
            # In batch order: a later commit of the same key publishes a later
            # record, so the hot tier keeps only the last one's listing.
            for c, result, listed in zip(batch, results, listings, strict=True):
                if c.then is not None and isinstance(result, Entry):
                    c.then(listed)
        return results

    def _lane_wrote(self) -> None:
        """On the quick lane, before a batch's transaction: this thread's
        connection leaves checkpoints to the pool (CHECKPOINT_EVERY), unless
        one is overdue, which it then runs itself."""
        con = self._cache._con
        local = self._local
        if getattr(local, "manual_checkpoints", None) is not con:
            con.execute("PRAGMA wal_autocheckpoint = 0")
            local.manual_checkpoints = con
        self.lane_writes += 1
        if self.lane_writes > self.checkpoint_overdue and not con.in_transaction:
            self._wal_checkpoint()

    def _checkpoint_soon(self) -> None:
        """On the loop, after a lane batch: a checkpoint on the pool, when
        CHECKPOINT_EVERY lane transactions went by and none is running."""
        if self.lane_writes < self.checkpoint_every or self._checkpointing is not None:
            return
        if self._closed:
            return
        self._checkpointing = asyncio.get_running_loop().create_task(
            self._checkpoint(), name="store checkpoint"
        )

    async def _checkpoint(self) -> None:
        try:
            await self._run(self._wal_checkpoint)
        except LOW_ERRORS as e:  # the next lane batches ask again
            log.warning("checkpointing the cache's WAL: %s", e)
        finally:
            self._checkpointing = None

    def _wal_checkpoint(self) -> None:
        """PASSIVE: copies what no reader still needs, blocking no writer
        (the lane goes on committing meanwhile)."""
        self.lane_writes = 0  # the lane's writes from here count toward the next
        sql = self._sql  # a local: see _sql
        sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _publishing(self) -> AbstractContextManager[object]:
        held = self.publishing
        return contextlib.nullcontext() if held is None else held()

    def _index_many(
        self,
        sql: Sql,
        batch: list[_Inline],
        bans: _Bans,
        results: list[Entry | Exception],
        listings: list[list[Entry]],
    ) -> None:
        """`_index` for a batch of inline commits of distinct keys, in a few
        statements for all: one read of their stored variants, one
        executemany each for the body rows, the variant rows and their tags,
        where `_index` runs diskcache's set (its SELECT, INSERT and ~20
        Python calls) and an INSERT and a SELECT per commit. What it writes
        is what `_index` would, row for row (test_commit_cost checks both
        ways give the same tables); the same Vary replaces, the oldest go
        past MAX_VARIANTS, a banned commit writes nothing."""
        admitted: list[tuple[int, bytes, Entry]] = []  # (place in batch, body, entry)
        for c in batch:
            try:
                entry = _admissible(c.entry, bans)
            except Banned as e:
                results.append(e)
                listings.append([])
                continue
            admitted.append((len(results), c.data, entry))
            results.append(entry)
            listings.append([])
        if not admitted:
            return
        stored = _stored_variants(sql, [entry.key for _, _, entry in admitted])
        now = time.time()  # diskcache's store_time and access_time, as its set() takes
        bodies: list[tuple[str, float, float, bytes]] = []
        rows: list[tuple[str, str, str, int, str]] = []
        tags: list[tuple[str, str, str]] = []
        for at, data, entry in admitted:
            vary = _vary_id(entry)
            kept: list[tuple[int, str, int, Any]] = []
            for vid, variant, their_vary, soft, meta in stored.get(entry.key, ()):
                if their_vary == vary:  # RFC 9111 section 4.1: the one it replaces
                    self._drop(sql, vid, variant)
                else:
                    kept.append((vid, variant, soft, meta))
            room = MAX_VARIANTS - 1  # the new one is the newest
            for vid, variant, _, _ in kept[: max(0, len(kept) - room)]:
                self._drop(sql, vid, variant)
            listings[at] = self._siblings(sql, entry, kept[max(0, len(kept) - room) :])
            bodies.append((BODY + entry.variant, now, now, data))
            meta_text = jsontext.dumps(entry.to_dict())
            rows.append((entry.variant, entry.key, vary, int(entry.soft_purged), meta_text))
            for tag in _tags(entry):
                tags.append((tag, entry.key, entry.variant))
        con = self._cache._con
        con.executemany(INSERT_BODY_SQL, bodies)
        con.executemany(INSERT_VARIANT_SQL, rows)
        if tags:
            con.executemany(INSERT_TAG_SQL, tags)

    def _rows_writable(self) -> bool:
        """Whether `_index_many` may write diskcache's body rows itself:
        the plain Disk (bytes stored as they are) over the Cache table
        columns diskcache 5.x has. Anything else takes set()."""
        known = self._bulk
        if known is None:
            cache = self._cache
            sql = self._sql
            columns = {row[1] for row in sql("PRAGMA table_info(Cache)").fetchall()}
            known = type(cache.disk) is diskcache.Disk and columns >= CACHE_COLUMNS
            self._bulk = known
        return known

    def _inline_below(self) -> int:
        """Bodies shorter than this are kept inline (diskcache's min_file_size;
        0 while the cache is not open)."""
        return self._inline_size

    def _evicted(self, keys: list[str]) -> None:
        on_evict = self.on_evict
        if on_evict is not None:
            on_evict(keys)

    def _watch_evictions(self) -> bool:
        """With `on_evict` set: make sure this thread's connection notes the
        variant rows deleted while `_local.notes` is a list (the eviction
        cascade of one set()). Set up once per connection: a TEMP trigger
        (this connection's only, nothing in the shared schema) calling a
        Python function, so a commit that evicts nothing runs no extra SQL."""
        if self.on_evict is None:
            return False
        con = self._cache._con
        local = self._local
        if getattr(local, "con", None) is not con:
            con.create_function("edge_evicted", 1, self._note_evicted)
            con.execute(EVICT_WATCH_SQL)
            local.con = con
            local.notes = None
        return True

    def _note_evicted(self, key: object) -> None:
        # Called by SQLite inside a statement: must never raise.
        notes = getattr(self._local, "notes", None)
        if notes is not None and isinstance(key, str):
            notes.append(key)

    def _set_body(self, body_key: str, value: bytes | IO[bytes]) -> None:
        """diskcache's set: no cull in it (cull_limit=0), see `_cull`. A
        body diskcache keeps in a file is written (copied from the writer's
        temp file) before the write lock is taken, its row then inserted as
        set() would: the quick lane's commits wait on that lock, and its
        lookups behind them."""
        raw = isinstance(value, bytes)
        inline = isinstance(value, bytes) and len(value) < self._inline_size
        if inline or not self._rows_writable():
            with self._write_lock:
                self._cache.set(body_key, value, read=not raw)
            return
        cache = self._cache
        disk = cache.disk
        size, mode, filename, _ = disk.store(value, not raw, key=body_key)  # the copy
        try:
            with self._txn():
                now = time.time()
                con = cache._con
                con.execute(INSERT_FILE_SQL, (body_key, now, now, size, mode, filename))
        except BaseException:
            disk.remove(filename)  # as set() does when its transaction fails
            raise

    def _cull(self, watch: bool) -> list[str]:
        """diskcache's cull (the cache is opened with cull_limit=0, so set()
        never culls): least recently stored first until under the size limit;
        the primary keys of the variants it evicted (when `watch`). Nested in
        a transaction, it runs in it."""
        if not watch:
            with self._write_lock:
                self._cache.cull()
            return []
        local = self._local
        notes: list[str] = []
        local.notes = notes
        try:
            with self._write_lock:
                self._cache.cull()
        finally:
            local.notes = None
        return notes

    # -- purge ---------------------------------------------------------------

    async def purge(self, purge: Purge) -> int:
        if purge.dry_run:
            return await self._write(f"counting {purge.target}", self._purge, purge)
        return await self._change(f"purging {purge.target}", self._purge, purge, keep=purge)

    def _purge(self, purge: Purge) -> int:
        if purge.dry_run:
            max_id = self._max_id(self._sql)
        else:
            with self._txn() as sql:
                self._record_ban(sql, purge)
                # Anything above this id commits after the ban, so it was checked.
                max_id = self._max_id(sql)
        total = 0
        action: Literal["hard", "soft"] = "soft" if purge.soft else "hard"
        for scan in _scans(purge.target):
            cursor = (scan.lo, -1)
            while True:  # bounded: the cursor only moves up through ids <= max_id
                if purge.dry_run:
                    rows, counted = self._purge_batch(self._sql, scan, cursor, max_id, None)
                else:
                    with self._txn() as sql:
                        rows, counted = self._purge_batch(sql, scan, cursor, max_id, action)
                total += counted
                if len(rows) < BATCH:
                    break
                cursor = (rows[-1][0], rows[-1][1])
        return total

    def _max_id(self, sql: Sql) -> int:
        (max_id,) = sql("SELECT max(id) FROM edge_variants").fetchone()
        return int(max_id or 0)

    def _record_ban(self, sql: Sql, purge: Purge) -> None:
        for kind, value in _ban_rows(purge.target):
            sql(
                "INSERT INTO edge_bans (kind, value, soft, issued_at) VALUES (?, ?, ?, ?)",
                (kind, value, int(purge.soft), purge.issued_at),
            )
        cutoff = purge.issued_at - self.ban_ttl
        (forgotten,) = sql(
            "SELECT max(issued_at) FROM edge_bans WHERE issued_at < ?", (cutoff,)
        ).fetchone()
        if forgotten is not None:
            sql("DELETE FROM edge_bans WHERE issued_at < ?", (cutoff,))
            sql(
                "INSERT INTO edge_meta (name, value) VALUES ('ban_horizon', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                (forgotten,),
            )

    def _range_rows(
        self, sql: Sql, scan: _Scan, cursor: tuple[str, int], max_id: int | None, limit: int
    ) -> list[tuple[str, int, str]]:
        # The cursor alone is the lower bound (it starts at (lo, -1)): with a
        # separate `key >= lo` SQLite would seek there and filter every
        # batch from the start again, quadratic over a large purge.
        if scan.exact:
            where = ["key = ?", "id > ?"]
            args: list[object] = [scan.lo, cursor[1]]
        else:
            where = ["(key, id) > (?, ?)"]
            args = [*cursor]
            if scan.hi is not None:
                where.append("key < ?")
                args.append(scan.hi)
        if max_id is not None:
            where.append("id <= ?")
            args.append(max_id)
        query = (
            "SELECT key, id, variant FROM edge_variants WHERE "
            + " AND ".join(where)
            + " ORDER BY key, id LIMIT ?"
        )
        rows: list[tuple[str, int, str]] = sql(query, (*args, limit)).fetchall()
        return rows

    def _purge_batch(
        self,
        sql: Sql,
        scan: _Scan,
        cursor: tuple[str, int],
        max_id: int,
        action: Literal["hard", "soft"] | None,
    ) -> tuple[list[tuple[str, int, str | None]], int]:
        """One batch of a scan: returns the rows walked and how many variants count."""
        rows: list[tuple[str, int, str | None]]
        if scan.tag is None:
            rows = list(self._range_rows(sql, scan, cursor, max_id, BATCH))
        else:
            rows = sql(
                "SELECT t.key, t.vid, v.variant FROM edge_tags AS t"
                " LEFT JOIN edge_variants AS v ON v.id = t.vid"
                " WHERE t.tag = ? AND (t.key, t.vid) > (?, ?) AND t.vid <= ?"
                " ORDER BY t.key, t.vid LIMIT ?",
                (scan.tag, *cursor, max_id, BATCH),
            ).fetchall()
        live = [(vid, variant) for _, vid, variant in rows if variant is not None]
        if action is not None and len(live) < len(rows):
            # Tag rows of a variant that is gone: drop them as we meet them.
            for _, vid, variant in rows:
                if variant is None:
                    sql("DELETE FROM edge_tags WHERE tag = ? AND vid = ?", (scan.tag, vid))
        seen: set[int] = set()
        if scan.earlier and live:
            # Variants an earlier tag of this purge already counted.
            marks = ",".join("?" * len(live))
            seen = {
                vid
                for (vid,) in sql(
                    f"SELECT DISTINCT vid FROM edge_tags WHERE vid IN ({marks})"
                    " AND tag IN (SELECT value FROM json_each(?))",
                    (*(vid for vid, _ in live), json.dumps(scan.earlier)),
                )
            }
        counted = sum(1 for vid, _ in live if vid not in seen)
        if action == "hard":
            for vid, variant in live:
                self._drop(sql, vid, variant)
        elif action == "soft" and live:
            marks = ",".join("?" * len(live))
            sql(
                f"UPDATE edge_variants SET soft = 1 WHERE id IN ({marks})",
                tuple(vid for vid, _ in live),
            )
        return rows, counted

    async def close(self) -> None:
        if self._closed:
            return
        for batches in (self._updates, self._inlines):
            if batches.task is not None:
                await batches.task  # writes already accepted are written
        self._closed = True
        if self._checkpointing is not None:
            await self._checkpointing  # its job is on the pool: let it end first
        if self._opened is not None:
            await self._run(self._opened.close)
        # Joining the pool's threads blocks: do it off the loop too.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown)
        if self._quick is not self._executor:
            await loop.run_in_executor(None, self._quick.shutdown)

    def _close_connection(self) -> None:
        """On each pool thread as the pool shuts down: close the thread's
        SQLite connection (diskcache keeps one per thread, and its close()
        closes the calling thread's only). The last one to close checkpoints
        the WAL, so a clean stop leaves cache.db whole. Left to the garbage
        collector, a connection (in a reference cycle: its statement cache
        refers back to it) stayed open until exit, or for good once
        frozen (gctune), and the WAL stayed beside the database."""
        cache = self._opened
        if cache is None:
            return
        # One at a time: SQLite checkpoints on the close that finds no other
        # connection; two closing at once can each see the other and both
        # skip it (the WAL then stayed in about one stop in five).
        with self._open_lock:
            try:
                cache.close()
            except LOW_ERRORS as e:
                log.warning("closing the cache's connection: %s", e)


def _init_schema(cache: diskcache.Cache) -> None:
    """Create our tables and triggers once, in one transaction (workers race here)."""
    if not hasattr(cache, "_sql"):
        raise StoreError("this diskcache version lacks Cache._sql; edgeproxy needs 5.x")
    with cache.transact():
        sql: Sql = cache._sql
        for statement in SCHEMA_SQL:
            sql(statement)
        row = sql("SELECT value FROM edge_meta WHERE name = 'schema'").fetchone()
        if row is None:
            sql("INSERT INTO edge_meta (name, value) VALUES ('schema', ?)", (SCHEMA,))
        elif row[0] != SCHEMA:
            raise StoreError(f"cache schema {row[0]!r}, this version reads {SCHEMA}")


def is_fault(e: BaseException) -> bool:
    """A disk fault: full, read-only, unwritable, I/O errors, a damaged database."""
    if isinstance(e, sqlite3.Error):
        name = getattr(e, "sqlite_errorname", "") or ""
        if name.startswith(FAULT_SQLITE):
            return True
        text = str(e)  # builds without sqlite_errorname: the messages SQLite uses
        return any(m in text for m in ("disk is full", "readonly", "disk I/O", "malformed"))
    return isinstance(e, OSError) and e.errno in FAULT_ERRNOS


def _damaged(e: BaseException) -> bool:
    """The database file itself is bad (garbage, truncated): only moving it aside helps."""
    if not isinstance(e, sqlite3.DatabaseError):
        return False
    name = getattr(e, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(e)


def _open_cache(directory: str, size_limit: int, eviction_policy: str) -> diskcache.Cache:
    """Open (creating) the cache, repairing what can only be repaired by starting
    empty: a file where the directory should be, a garbage or truncated
    database. The damaged files are moved aside (never deleted: an operator
    may want them), logged at ERROR. Workers open one at a time (flock on the
    directory), so one repairs and the others open what it made."""
    if os.path.lexists(directory) and not os.path.isdir(directory):
        aside = f"{directory}.damaged-{_stamp()}"
        os.rename(directory, aside)
        log.error("cache directory %s was not a directory: moved it to %s", directory, aside)
    tmp = os.path.join(directory, "tmp")
    os.makedirs(tmp, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the close
        _sweep_tmp(tmp)
        short = _truncation(os.path.join(directory, "cache.db"))
        if short is not None:
            # SQLite would only notice on reading a missing page, maybe never
            # at start (then later, mid-request): judged here, at once.
            _start_empty(directory, short)
        try:
            return _open_diskcache(directory, size_limit, eviction_policy)
        except sqlite3.DatabaseError as e:
            if not _damaged(e):
                raise
            _start_empty(directory, e)
            return _open_diskcache(directory, size_limit, eviction_policy)
    finally:
        os.close(fd)


def _truncation(db: str) -> str | None:
    """Why `db` is shorter than its own header says, or None: SQLite's file
    format (sqlite.org/fileformat2.html, 1.3) keeps the database's size in
    pages at offset 28, valid while the change counter (offset 24) equals
    the version-valid-for number (offset 92). Only judged with no WAL
    content beside it (a clean stop checkpoints it away): WAL frames may
    hold pages the file does not have yet."""
    try:
        if os.path.getsize(db + "-wal") > 0:
            return None
    except FileNotFoundError:
        pass
    try:
        with open(db, "rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return None  # a new cache
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return None  # not SQLite's at all: opening it says so
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if pages == 0 or header[24:28] != header[92:96] or size >= pages * page_size:
        return None
    return f"truncated: {size} bytes of {pages * page_size}"


def _open_diskcache(directory: str, size_limit: int, eviction_policy: str) -> diskcache.Cache:
    cache = diskcache.Cache(
        directory,
        size_limit=size_limit,
        eviction_policy=eviction_policy,
        disk_min_file_size=32 * 1024,
        # No cull inside set(): DiskStore._set_body culls after a file body's
        # set, _commit_batch once after a batch's (three statements a set).
        cull_limit=0,
    )
    try:
        _init_schema(cache)
    except BaseException:
        cache.close()
        raise
    return cache


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"


def _start_empty(directory: str, damage: object) -> None:
    """Move the damaged database aside (`_move_aside`) and say so at ERROR."""
    moved = _move_aside(directory)
    log.error(
        "cache database in %s is damaged (%s): moved %s aside; starting empty",
        directory,
        damage,
        ", ".join(moved),
    )


def _move_aside(directory: str) -> list[str]:
    """Rename the database files to `<name>.damaged-<timestamp>`, and the body
    files it indexed (diskcache's two-level hex directories) into
    `bodies.damaged-<timestamp>/`: a new database would never evict them."""
    stamp = _stamp()
    moved: list[str] = []
    for name in ("cache.db", "cache.db-wal", "cache.db-shm"):
        path = os.path.join(directory, name)
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, f"{path}.damaged-{stamp}")
            moved.append(f"{name}.damaged-{stamp}")
    bodies = os.path.join(directory, f"bodies.damaged-{stamp}")
    with os.scandir(directory) as it:
        dirs = [d for d in it if d.is_dir() and len(d.name) == 2 and _hex(d.name)]
    for d in dirs:
        os.makedirs(bodies, exist_ok=True)
        os.rename(d.path, os.path.join(bodies, d.name))
    if dirs:
        moved.append(f"bodies.damaged-{stamp}/")
    return moved


def _hex(name: str) -> bool:
    return all(c in "0123456789abcdef" for c in name)


def _sweep_tmp(tmp: str) -> None:
    """Remove temp bodies a crashed worker left. A live writer's file may go
    too; on POSIX its open handle still works, and it is unlinked on close anyway."""
    cutoff = time.time() - TMP_MAX_AGE
    with os.scandir(tmp) as it:
        for f in it:
            with contextlib.suppress(OSError):
                if f.name.startswith("body-") and f.stat().st_mtime < cutoff:
                    os.unlink(f.path)


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
    def key(self) -> str:
        return self._key

    @property
    def size(self) -> int:
        return self._size

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise StoreError("writer already closed")
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
            if is_fault(e):
                raise self._store._faults.failed(f"writing a body of {self._key}", e) from e
            raise StoreError(f"writing body: {e}") from e

    def _spill(self) -> IO[bytes]:
        f = tempfile.NamedTemporaryFile(dir=self._store._tmp, prefix="body-")  # noqa: SIM115 (closed by abort)
        f.write(self._buf)
        self._buf = bytearray()
        return f

    async def commit(
        self, entry: Entry, then: Callable[[list[Entry]], object] | None = None
    ) -> Entry:
        """Commit the body and index it; `then(listed)` runs in the same pool
        job right after the commit succeeded (DiskStore._commit)."""
        if self._done:
            raise StoreError("writer already closed")
        if not self._store.writable():  # degraded: the commit would be refused
            await self.abort()
            raise Degraded(f"committing {self._key}: {self._store.health().reason}")
        # The pool job owns the temp file from here (and closes it), so a
        # cancelled commit can't race an abort closing it mid-copy.
        inline = self.commit_inline(entry, then)
        if inline is not None:
            return await inline
        self._done = True
        tmp, self._tmp = self._tmp, None
        data = None if tmp is not None else bytes(self._buf)
        self._buf = bytearray()
        return await self._store._change(
            f"committing {self._key}", self._store._commit, self._stored(entry), data, tmp, then
        )

    def commit_inline(
        self, entry: Entry, then: Callable[[list[Entry]], object] | None = None
    ) -> asyncio.Future[Entry] | None:
        """`commit` of a body kept inline, as the future of its batch (no
        coroutine: the hot tier's commit awaits it on every miss); None for
        anything else, which `commit` does. Batched with the commits arriving
        together: one transaction for all."""
        if self._done or self._tmp is not None or self._size >= self._store._inline_below():
            return None
        if not self._store.writable():
            return None  # `commit` refuses it (Degraded)
        done = self._store._inlines.queue(
            _Inline(self._stored(entry), bytes(self._buf), then), f"committing {self._key}"
        )
        self._done = True
        self._buf = bytearray()
        return done

    def _stored(self, entry: Entry) -> Entry:
        """The entry as committed: this writer's key, a new variant id, the body's size."""
        return entry.with_changes(
            key=self._key, variant=variant_id(time.time_ns(), os.urandom(8)), body_size=self._size
        )

    async def abort(self) -> None:
        self._done = True
        self._buf = bytearray()
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            with contextlib.suppress(OSError):
                await self._store._run(tmp.close)  # delete=True unlinks it
