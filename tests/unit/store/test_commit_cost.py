"""What a stored entry costs the disk store (issue #10), and that the cheaper
paths keep their guarantees: counted in SQL transactions and pool jobs, never
in time.

- A body kept inline (under diskcache's min_file_size) commits in one
  transaction with its index rows; a file body keeps its copy outside the lock.
- The eviction hook hears of exactly the variants a commit's set() evicted:
  not the ones the commit replaced itself, and nothing when nothing went.
- The hot tier publishes in the same pool job as the disk write.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgeproxy.policy.entry import Entry
from edgeproxy.purge import Purge, PurgeURL
from edgeproxy.store import disk as disk_module
from edgeproxy.store.base import Banned, StoreHealth, health_of
from edgeproxy.store.disk import MAX_VARIANTS, DiskStore, _Inline
from edgeproxy.store.pool import StorePool
from edgeproxy.store.tiered import TieredStore
from tests.conftest import FakeClock
from tests.contract.helpers import T0, make_entry, put, read
from tests.spying import SpiedDiskStore

URL = "http://a.example/"
T = TypeVar("T")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DiskStore]:
    # One pool thread and the quick lane's: two connections, `statements` instruments both.
    s = await DiskStore.open(str(tmp_path / "cache"), threads=1)
    yield s
    await s.close()


async def statements(store: DiskStore) -> Callable[[], list[str]]:
    """Record the top-level SQL this store's only connection runs from now on."""
    seen: list[str] = []

    def install() -> None:
        store._ensure_open()
        store._cache._con.set_trace_callback(seen.append)

    await store._run(install)
    await store._run_quick(install)  # both lanes' connections
    return lambda: [s for s in seen if not s.startswith("--")]


def begins(sql: list[str]) -> int:
    return sum(1 for s in sql if s.startswith("BEGIN"))


@pytest.mark.parametrize(
    ("size", "transactions"),
    [
        pytest.param(1024, 1, id="inline body: one transaction"),
        pytest.param(0, 1, id="empty body: one transaction"),
        pytest.param(100_000, 2, id="file body: copied outside the index transaction"),
    ],
)
async def test_transactions_per_commit(store: DiskStore, size: int, transactions: int) -> None:
    sql = await statements(store)
    stored = await put(store, make_entry(URL), bytes(size))
    assert begins(sql()) == transactions
    assert await read(store, stored) == bytes(size)
    assert [e.variant for e in await store.lookup(URL)] == [stored.variant]


async def test_a_refused_inline_commit_leaves_no_body(store: DiskStore, clock: FakeClock) -> None:
    # Banned before any write: the one transaction rolls back with nothing in it.
    sent = clock()
    clock.advance(1)
    await store.purge(Purge(PurgeURL(URL), issued_at=clock()))
    with pytest.raises(Banned):
        await put(store, make_entry(URL, request_time=sent), bytes(1024))

    def bodies() -> list[Any]:
        return list(store._cache.iterkeys())

    assert await store._run(bodies) == []
    assert (await store.stats())["entries"] == 0


@pytest.mark.parametrize(
    "size", [pytest.param(20_000, id="inline"), pytest.param(40_000, id="file")]
)
async def test_eviction_hook_hears_exactly_the_evicted(tmp_path: Path, size: int) -> None:
    store = await DiskStore.open(str(tmp_path / "cache"), size_limit=1 << 20, threads=1)
    heard: list[str] = []
    store.on_evict = heard.extend
    try:
        first = await put(store, make_entry(URL), bytes(size))
        replaced = await put(store, make_entry(URL), bytes(size))  # same Vary: replaces
        assert heard == []  # a replacement is not an eviction
        assert [e.variant for e in await store.lookup(URL)] == [replaced.variant]
        assert first.variant != replaced.variant
        for i in range(80):  # bounded: past the size limit either way
            await put(store, make_entry(f"{URL}{i}"), bytes(size))
        stored = {URL, *(f"{URL}{i}" for i in range(80))}
        alive = {e.key for e in await store.entries(limit=1000)}
        assert heard, "the size limit should have evicted some"
        assert len(heard) == len(set(heard))
        assert set(heard) == stored - alive  # heard of each one gone, once
    finally:
        await store.close()


def _inline(store: DiskStore, url: str, size: int) -> _Inline:
    entry = make_entry(url).with_changes(variant=uuid.uuid4().hex, body_size=size)
    return _Inline(entry, bytes(size), None)


def _count(ran: list[str], start: str) -> int:
    return sum(1 for q in ran if q.startswith(start))


@pytest.mark.parametrize(
    ("bulk", "sets", "selects"),
    [
        pytest.param(True, 0, 1, id="rows written in bulk: one read, no set()"),
        pytest.param(False, 8, 8, id="one by one: a set() and a read each"),
    ],
)
async def test_a_batch_of_commits_culls_once(
    store: DiskStore, bulk: bool, sets: int, selects: int
) -> None:
    """diskcache's set() would check the size limit (three statements) each
    time: the store culls once a transaction instead. In bulk (distinct
    keys, diskcache's plain Disk) it also writes the body rows itself and
    reads every key's variants in one statement."""
    sql = await statements(store)
    store._bulk = None if bulk else False
    batch = [_inline(store, f"{URL}{i}", 1024) for i in range(8)]
    results = await store._run(store._commit_batch, batch)
    assert all(isinstance(r, Entry) for r in results)
    ran = sql()
    assert begins(ran) == 1
    assert _count(ran, "PRAGMA page_count") == 1
    assert _count(ran, "SELECT rowid, filename FROM Cache") == sets
    assert _count(ran, "SELECT ") - _count(ran, "SELECT rowid") - _count(ran, "SELECT value") == (
        selects + 1  # the ban check's
    )
    for entry in batch:
        assert await read(store, entry.entry) == entry.data


async def _commit_the_mix(directory: Path, bulk: bool) -> tuple[list[object], dict[str, list[Any]]]:
    """One batch of every case an inline commit meets, over the same stored
    state: what it returned, what each listing named, and every table after."""
    store = await DiskStore.open(str(directory), threads=1)
    try:

        def entry(key: str, variant: str, value: str = "a", **kw: Any) -> Entry:
            e = make_entry(URL + key, vary=("Accept",), secondary=(value,), **kw)
            return e.with_changes(variant=variant, body_size=len(variant))

        def commit(*entries: Entry) -> list[Entry | Exception]:
            return store._commit_batch([_Inline(e, e.variant.encode(), None) for e in entries])

        before = [entry("replaced", "old-1"), entry("kept", "old-2", tags=("t",))]
        before += [entry("full", f"old-full-{i:02}", f"v{i}") for i in range(MAX_VARIANTS)]
        for e in before:  # one at a time: the one-by-one path
            await store._run(commit, e)
        await store.purge(Purge(PurgeURL(URL + "banned"), issued_at=T0 + 5))
        await store.purge(Purge(PurgeURL(URL + "soft"), soft=True, issued_at=T0 + 5))
        store._bulk = None if bulk else False
        later = T0 + 10
        batch = [
            entry("new", "new-1", tags=("t", "u"), request_time=later),
            entry("replaced", "new-2", request_time=later),  # same Vary value: replaces
            entry("banned", "new-3", request_time=T0),  # sent before the purge: refused
            entry("kept", "new-4", "b", tags=("u",), request_time=later),  # another value
            entry("full", "new-5", "w", request_time=later),  # the oldest goes
            entry("soft", "new-6", request_time=T0),  # soft-banned: stored, marked
            entry("empty", "", request_time=later).with_changes(variant="new-7", body_size=0),
        ]

        def run() -> list[Entry | Exception]:
            listings: list[list[str]] = []
            batch_in = [
                _Inline(e, b"" if e.body_size == 0 else e.variant.encode(), None) for e in batch
            ]
            for c in batch_in:
                c.then = lambda listed: listings.append([e.variant for e in listed])
            results = store._commit_batch(batch_in)
            outcome.append(listings)
            return results

        outcome: list[object] = []
        results = await store._run(run)
        shown: list[object] = [
            type(r).__name__ if isinstance(r, Exception) else (r.variant, r.soft_purged)
            for r in results
        ]
        shown += outcome

        def dump() -> dict[str, list[Any]]:
            sql = store._sql
            queries = {
                "Cache": "SELECT key, raw, expire_time, access_count, tag, size, mode,"
                " filename, value FROM Cache ORDER BY key",
                "edge_variants": "SELECT * FROM edge_variants ORDER BY id",
                "edge_tags": "SELECT * FROM edge_tags ORDER BY tag, key, vid",
                "edge_meta": "SELECT * FROM edge_meta ORDER BY name",
                "Settings": "SELECT * FROM Settings WHERE key IN ('count', 'size') ORDER BY key",
                "sqlite_sequence": "SELECT * FROM sqlite_sequence ORDER BY name",
            }
            return {name: sql(q).fetchall() for name, q in queries.items()}

        tables = await store._run(dump)
        assert store._bulk is bulk  # the path asked for is the one taken
        return shown, tables
    finally:
        await store.close()


async def test_bulk_commits_write_what_one_by_one_commits_do(tmp_path: Path) -> None:
    """_index_many against _index, on one batch of every case (a new key,
    a replacement, a ban, a second variant, a full key, a soft ban, an
    empty body, tags): the same results, listings and rows."""
    one_by_one = await _commit_the_mix(tmp_path / "one", bulk=False)
    bulk = await _commit_the_mix(tmp_path / "bulk", bulk=True)
    assert bulk == one_by_one
    shown, tables = bulk
    assert shown[:7] == [
        ("new-1", False),
        ("new-2", False),
        "Banned",
        ("new-4", False),
        ("new-5", False),
        ("new-6", True),
        ("new-7", False),
    ]
    variants = {v for _, v, *_ in tables["edge_variants"]}
    assert {"old-1", "old-full-00", "new-3"}.isdisjoint(variants)
    assert {"old-2", "old-full-01", "new-1", "new-7"} <= variants
    assert len([v for v in variants if "full" in v or v == "new-5"]) == MAX_VARIANTS


async def test_bulk_rows_need_the_cache_table_as_known(
    store: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diskcache whose Cache table lacks a column we'd write: set() instead."""
    await put(store, make_entry(URL), b"x")
    assert await store._run(store._rows_writable) is True
    store._bulk = None
    monkeypatch.setattr(disk_module, "CACHE_COLUMNS", disk_module.CACHE_COLUMNS | {"nope"})
    assert await store._run(store._rows_writable) is False


@pytest.mark.parametrize("batch", [1, 8, 40])
async def test_a_batch_past_the_size_limit_ends_under_it(tmp_path: Path, batch: int) -> None:
    """Least recently stored first, until under the limit, within the
    batch's transaction; the hook hears of exactly the variants gone."""
    size, limit = 20_000, 1 << 20
    store = await DiskStore.open(str(tmp_path / "cache"), size_limit=limit, threads=1)
    heard: list[str] = []
    store.on_evict = heard.extend
    try:
        urls = [f"{URL}{i}" for i in range(120)]  # ~2.4 MB of bodies, past the limit
        for start in range(0, len(urls), batch):
            chunk = [_inline(store, u, size) for u in urls[start : start + batch]]
            await store._run(store._commit_batch, chunk)
            volume = await store._run(store._cache.volume)
            assert volume <= limit
        alive = {e.key for e in await store.entries(limit=1000)}
        assert heard and len(heard) == len(set(heard))
        assert set(heard) == set(urls) - alive
        assert urls[-1] in alive  # the newest stay
        assert all(urls.index(k) > urls.index(h) for k in alive for h in heard)
    finally:
        await store.close()


async def _traced(store: DiskStore) -> tuple[list[str], list[str]]:
    """The SQL each lane runs from now on: (the quick lane's, the pool's)."""
    lane: list[str] = []
    pool: list[str] = []

    def install(seen: list[str]) -> None:
        store._ensure_open()
        store._cache._con.set_trace_callback(seen.append)

    await store._run_quick(install, lane)
    await store._run(install, pool)
    return lane, pool


def _autocheckpoint(store: DiskStore) -> int:
    sql = store._sql
    (pages,) = sql("PRAGMA wal_autocheckpoint").fetchone()
    return int(pages)


async def test_the_quick_lane_leaves_checkpoints_to_the_pool(store: DiskStore) -> None:
    """The lane's connection never checkpoints in passing (a checkpoint
    fsyncs, and every lookup behind it would wait): the pool checkpoints
    after every `checkpoint_every` lane transactions, commits and refreshes."""
    store.checkpoint_every = 5
    stored = await put(store, make_entry(URL), b"x")
    assert await store._run_quick(_autocheckpoint, store) == 0
    assert await store._run(_autocheckpoint, store) == 1000  # SQLite's default, elsewhere
    lane, pool = await _traced(store)
    for i in range(2):
        await put(store, make_entry(f"{URL}{i}"), b"x")
    assert await store.update(stored.with_changes(status=203))
    assert store._checkpointing is None  # 4 lane transactions so far
    await put(store, make_entry(URL + "4"), b"x")
    assert store._checkpointing is not None
    await store._checkpointing
    assert [q for q in pool if "wal_checkpoint" in q] == ["PRAGMA wal_checkpoint(PASSIVE)"]
    assert not [q for q in lane if "wal_checkpoint" in q]
    assert store.lane_writes == 0


async def test_an_overdue_checkpoint_runs_on_the_lane(store: DiskStore) -> None:
    """The pool busy (a long copy, say) past `checkpoint_overdue` lane
    transactions: the lane checkpoints itself rather than let the WAL grow."""
    store.checkpoint_every = 2
    store.checkpoint_overdue = 5
    await put(store, make_entry(URL), b"x")
    lane, _ = await _traced(store)
    gate = threading.Event()
    blocker = store._executor.run(gate.wait, 10)
    try:
        for i in range(6):
            await put(store, make_entry(f"{URL}{i}"), b"x")
        # The 6th transaction since the pool's last (5 here, and the first
        # put's) found it overdue; the 7th counts toward the next.
        assert [q for q in lane if "wal_checkpoint" in q] == ["PRAGMA wal_checkpoint(PASSIVE)"]
        assert store.lane_writes == 1
    finally:
        gate.set()
        assert await blocker is True
    if store._checkpointing is not None:
        await store._checkpointing  # the one asked while the pool was busy
    assert await store.lookup(URL + "5")


async def test_many_lane_commits_keep_the_wal_small(tmp_path: Path) -> None:
    store = await DiskStore.open(str(tmp_path / "cache"), threads=1)
    try:
        for start in range(0, 2000, 20):
            batch = [_inline(store, f"{URL}{i}", 1024) for i in range(start, start + 20)]
            await store._run_quick(store._commit_batch, batch)
            store._checkpoint_soon()
            if store._checkpointing is not None:
                await store._checkpointing
        wal = tmp_path / "cache" / "cache.db-wal"
        assert wal.stat().st_size < 8 << 20  # SQLite's own: ~4 MiB (1,000 pages)
    finally:
        await store.close()


async def test_update_runs_then_in_its_pool_job_even_when_it_finds_nothing(
    store: DiskStore,
) -> None:
    threads: list[str] = []

    def then() -> None:
        threads.append(threading.current_thread().name)

    stored = await put(store, make_entry(URL), b"x")
    assert await store.update(stored.with_changes(status=203), then=then) is True
    assert await store.update(stored.with_changes(variant="gone"), then=then) is False
    assert len(threads) == 2
    assert all(t.startswith("edgeproxy-store") for t in threads)


async def test_tiered_commit_publishes_in_the_commit_job(tmp_path: Path) -> None:
    disk = await DiskStore.open(str(tmp_path / "cache"), threads=1)
    tier = await TieredStore.open(disk)
    try:

        def jobs() -> int:
            return disk._executor.submitted + disk._quick.submitted

        before, queued = tier._gen.current(), jobs()
        await put(tier, make_entry(URL), b"body")
        assert tier._gen.current() == before + 1  # the commit's record
        assert jobs() == queued + 1  # one hop for the commit and its publish
    finally:
        await tier.close()


async def test_a_batch_publishes_its_records_under_one_file_lock(
    tmp_path: Path, flocks: list[int]
) -> None:
    """The hot tier's records for a batch of commits: one lock of the
    generation file for all, not one each (DiskStore.publishing)."""
    disk = await DiskStore.open(str(tmp_path / "cache"), threads=1)
    tier = await TieredStore.open(disk)
    try:
        gen = tier._gen
        flocks.clear()  # opening took some
        before = gen.current()
        batch = [_inline(disk, f"{URL}{i}", 10) for i in range(8)]
        for i, c in enumerate(batch):
            c.then = lambda listed, i=i: gen.publish([i + 1])
        results = await disk._run_quick(disk._commit_batch, batch)
        assert all(isinstance(r, Entry) for r in results)
        assert gen.current() == before + 8
        assert flocks == [fcntl.LOCK_EX, fcntl.LOCK_UN]
        assert gen.changes(before, before + 8) == [(before + i, i) for i in range(1, 9)]
    finally:
        await tier.close()


# -- the lanes ------------------------------------------------------------------------


async def test_a_miss_and_a_refresh_run_on_the_quick_lane(store: DiskStore) -> None:
    """Lookups, body opens, inline commits and refreshes: the quick lane's
    one thread. A file body's copy and a purge: the pool's."""
    threads: list[str] = []

    def where() -> None:
        threads.append(threading.current_thread().name)

    assert await store.lookup(URL) == []
    small = await put(store, make_entry(URL), b"x")
    assert await store.update(small.with_changes(status=203), then=where)
    assert await read(store, small) == b"x"
    big = await put(store, make_entry(URL + "big"), bytes(100_000), chunk=100_000)
    await store.purge(Purge(PurgeURL(URL + "big"), issued_at=T0 + 1))
    assert threads == ["edgeproxy-store-quick_0"]
    assert store._quick.submitted >= 4  # lookup, commit, update, open_body
    assert store._executor.submitted >= 2  # the big body's copy and commit, the purge
    assert big.body_size == 100_000


async def test_a_long_job_on_the_pool_never_holds_up_a_lookup(store: DiskStore) -> None:
    """The pool's only thread busy (a body file being copied, say): lookups,
    opens and inline commits still go, on the quick lane."""
    stored = await put(store, make_entry(URL), b"hello")
    gate = threading.Event()
    blocker = asyncio.ensure_future(store._run(gate.wait, 10))
    try:
        found = await asyncio.wait_for(store.lookup(URL), 5)
        assert [e.variant for e in found] == [stored.variant]
        assert await asyncio.wait_for(read(store, stored), 5) == b"hello"
        other = await asyncio.wait_for(put(store, make_entry(URL + "2"), b"two"), 5)
        assert [e.variant for e in await store.lookup(URL + "2")] == [other.variant]
        assert not blocker.done()
    finally:
        gate.set()
        assert await blocker is True


async def _lane_held(store: DiskStore) -> tuple[threading.Event, asyncio.Future[bool]]:
    """The quick lane's one thread kept busy until the event is set."""
    await store.lookup(URL)  # opened, the lane's thread started
    gate = threading.Event()
    return gate, store._quick.run(gate.wait, 10)  # queued now, not on a task's first step


async def test_lookups_queued_together_run_as_one_select(tmp_path: Path) -> None:
    """Lookups waiting together on the quick lane run as one call, one
    SELECT, each its own answer (a key of two variants, a missing key, a
    key asked twice); a lookup alone keeps its own statement."""
    store = await SpiedDiskStore.open(str(tmp_path / "cache"), threads=1)
    try:
        two = [
            await put(store, make_entry(URL + "v", vary=("accept",), secondary=(a,)))
            for a in ("text/html", "image/png")
        ]
        one = await put(store, make_entry(URL + "one"))
        calls: list[list[str]] = []
        real = store._lookup_many

        def counted(keys: list[str]) -> list[list[Entry]]:
            calls.append(list(keys))
            return real(keys)

        store._lookup_many = counted  # type: ignore[method-assign]
        sql = await statements(store)
        gate, held = await _lane_held(store)
        calls.clear()
        keys = [URL + "v", URL + "none", URL + "one", URL + "v"]
        found = await _released(gate, [store.lookup(k) for k in keys])
        assert await held is True
        assert calls == [keys]
        assert [[e.variant for e in f] for f in found] == [
            [e.variant for e in two],
            [],
            [one.variant],
            [e.variant for e in two],
        ]
        assert found[0] is not found[3]  # a list each: one caller's change is not the other's
        selects = [s for s in sql() if s.startswith("SELECT key, id, variant, soft, meta")]
        assert len(selects) == 1
        assert selects[0].count("'" + URL + "v'") == 1  # asked twice, read once
        assert [e.variant for e in await store.lookup(URL + "one")] == [one.variant]
        assert calls[-1] == [URL + "one"]
        assert sum("IN (" in s for s in sql()) == 1  # alone: its own query, no IN
    finally:
        await store.close()


async def _released(gate: threading.Event, asked: list[Awaitable[T]]) -> list[T]:
    """Queue `asked` behind the held lane, then let it go."""
    tasks = [asyncio.ensure_future(a) for a in asked]
    await asyncio.sleep(0)  # each task's first step: its job queued
    gate.set()
    return await asyncio.gather(*tasks)


async def test_a_failed_lookup_call_is_a_miss_for_each_in_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SpiedDiskStore.open(str(tmp_path / "cache"), threads=1)
    try:
        stored = await put(store, make_entry(URL))
        gate, held = await _lane_held(store)

        def broken(keys: list[str]) -> Any:
            raise sqlite3.OperationalError("database disk image is malformed")

        store._lookup_many = broken  # type: ignore[method-assign]
        found = await _released(gate, [store.lookup(URL + str(i)) for i in range(3)])
        assert found == [[], [], []]
        assert sum("lookup failed" in r.message for r in caplog.records) == 3
        del store._lookup_many  # the class's again: the store still answers
        assert [e.variant for e in await store.lookup(URL)] == [stored.variant]
        assert await held is True
    finally:
        await store.close()


async def test_a_lookup_given_up_leaves_the_others_in_its_call(store: DiskStore) -> None:
    stored = await put(store, make_entry(URL))
    gate, held = await _lane_held(store)
    asked = [asyncio.ensure_future(store.lookup(URL)) for _ in range(3)]
    await asyncio.sleep(0)
    asked[1].cancel()
    gate.set()
    assert [[e.variant for e in f] for f in await asyncio.gather(asked[0], asked[2])] == [
        [stored.variant],
        [stored.variant],
    ]
    assert asked[1].cancelled()
    assert await held is True
    assert [e.variant for e in await store.lookup(URL)] == [stored.variant]


async def test_a_lookup_batch_wider_than_one_select(store: DiskStore) -> None:
    """More keys than one statement takes (KEYS_PER_SELECT): still each its own."""
    count = disk_module.KEYS_PER_SELECT + 7
    stored = {i: await put(store, make_entry(f"{URL}{i}")) for i in range(0, count, 50)}
    keys = [f"{URL}{i}" for i in range(count)]
    found = await store._run_quick(store._lookup_many, keys)
    assert [[e.variant for e in f] for f in found] == [
        [stored[i].variant] if i in stored else [] for i in range(count)
    ]


class _SlowFile(io.BytesIO):
    """A temp body whose reads wait for `gate`: a copy that takes long."""

    def __init__(self, data: bytes, gate: threading.Event) -> None:
        super().__init__(data)
        self.gate = gate

    def read(self, size: int | None = -1) -> bytes:
        assert self.gate.wait(10)
        return super().read(size)


async def test_a_body_file_copy_never_holds_up_the_quick_lane(store: DiskStore) -> None:
    """The copy of a file body runs without the store's write lock: inline
    commits (which take it) and lookups go on meanwhile."""
    await put(store, make_entry(URL), b"first")  # opened
    gate = threading.Event()
    copy = asyncio.ensure_future(
        store._run(store._set_body, "b:slow", _SlowFile(b"s" * 50_000, gate))
    )
    try:
        other = await asyncio.wait_for(put(store, make_entry(URL + "2"), b"two"), 5)
        assert [e.variant for e in await store.lookup(URL + "2")] == [other.variant]
        assert not copy.done()
    finally:
        gate.set()
        await copy


@pytest.mark.parametrize(
    "value", [pytest.param(b"f" * 50_000, id="bytes"), pytest.param(None, id="temp file")]
)
async def test_a_file_body_row_is_what_set_writes(store: DiskStore, value: bytes | None) -> None:
    """_set_body's own row for a body in a file against diskcache's set()'s."""

    def row(key: str) -> tuple[Any, ...]:
        sql = store._sql
        found: tuple[Any, ...] = sql(
            "SELECT raw, expire_time, access_count, tag, size, mode, value, filename IS NOT NULL"
            " FROM Cache WHERE key = ?",
            (key,),
        ).fetchone()
        return found

    def stored(key: str) -> bytes:
        handle = store._cache.get(key, read=True)
        with handle:
            data: bytes = handle.read()
        return data

    body = b"t" * 60_000 if value is None else value
    await put(store, make_entry(URL), b"x")  # opened
    for key, bulk in (("b:ours", None), ("b:set", False)):
        store._bulk = bulk
        await store._run(store._set_body, key, io.BytesIO(body) if value is None else value)
    assert store._bulk is False
    assert await store._run(row, "b:ours") == await store._run(row, "b:set")
    assert await store._run(stored, "b:ours") == await store._run(stored, "b:set") == body
    assert (await store._run(row, "b:ours"))[-1] == 1  # a file, not inline


# -- the pool -------------------------------------------------------------------------


async def test_pool_runs_jobs_and_delivers_errors() -> None:
    pool = StorePool(2, "test-pool")
    try:
        assert await pool.run(sum, (1, 2, 3)) == 6
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 // 0)
        results = await asyncio.gather(*(pool.run(pow, i, 2) for i in range(20)))
        assert results == [i * i for i in range(20)]
    finally:
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
    with pytest.raises(RuntimeError):
        pool.run(int)


async def test_pool_job_runs_even_if_its_awaiter_is_cancelled() -> None:
    # The callers rely on it: a queued write happens (and publishes).
    pool = StorePool(1, "test-pool")
    gate = threading.Event()
    ran = threading.Event()
    try:
        blocker = pool.run(gate.wait, 10)
        job = pool.run(ran.set)
        job.cancel()
        gate.set()
        assert await blocker is True
        await pool.run(int)  # FIFO on one thread: the cancelled job came before
        assert ran.is_set()
    finally:
        gate.set()
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)


async def test_pool_gathers_the_jobs_queued_together_in_order() -> None:
    """gathered jobs for one function, queued one after another, run as one
    call; any other job between them splits the group and keeps its place."""
    pool = StorePool(1, "test-pool")
    calls: list[object] = []

    def double(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [i * 2 for i in items]

    def triple(items: list[int]) -> list[int]:
        calls.append(("triple", list(items)))
        return [i * 3 for i in items]

    gate = threading.Event()
    try:
        blocker = pool.run(gate.wait, 10)
        jobs = [
            pool.gathered(double, 1),
            pool.gathered(double, 2),
            pool.run(calls.append, "plain"),
            pool.gathered(double, 3),
            pool.gathered(triple, 4),
            pool.gathered(triple, 5),
        ]
        gate.set()
        assert await blocker is True
        assert await asyncio.gather(*jobs) == [2, 4, None, 6, 12, 15]
        assert calls == [[1, 2], "plain", [3], ("triple", [4, 5])]
    finally:
        gate.set()
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)


@pytest.mark.parametrize(
    ("fn", "error"),
    [
        pytest.param(lambda items: 1 // 0, ZeroDivisionError, id="raises"),
        pytest.param(lambda items: items[:1], RuntimeError, id="a result short"),
    ],
)
async def test_a_gathered_call_that_fails_fails_each_in_it(
    fn: Callable[[list[int]], list[int]], error: type[BaseException]
) -> None:
    pool = StorePool(1, "test-pool")
    gate = threading.Event()
    try:
        blocker = pool.run(gate.wait, 10)
        jobs = [pool.gathered(fn, i) for i in range(3)]
        gate.set()
        for outcome in await asyncio.gather(*jobs, return_exceptions=True):
            assert isinstance(outcome, error)
        assert await blocker is True
        assert await pool.gathered(lambda items: items, 7) == 7  # the thread goes on
    finally:
        gate.set()
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)


async def test_shutdown_behind_gathered_jobs_runs_them_first() -> None:
    pool = StorePool(1, "test-pool")
    gate = threading.Event()
    blocker = pool.run(gate.wait, 10)
    jobs = [pool.gathered(lambda items: items, i) for i in range(3)]
    stopping = asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
    gate.set()
    await stopping  # the thread ended at the None the gathering met
    assert await blocker is True
    assert await asyncio.gather(*jobs) == [0, 1, 2]


# -- health_of ------------------------------------------------------------------------


class _Reports:
    def health(self) -> StoreHealth:
        return StoreHealth(state="degraded", reason="disk full")


@pytest.mark.parametrize(
    ("store", "state"),
    [
        pytest.param(object(), "ok", id="a double that doesn't report: ok"),
        pytest.param(_Reports(), "degraded", id="a store that reports: its health"),
    ],
)
def test_health_of(store: object, state: str) -> None:
    assert health_of(store).state == state
