"""DiskStore internals the contract can't see: index use, triggers, bans, workers.

"No full scan" is proved without timing: the SQL a purge runs is captured
and each statement's `EXPLAIN QUERY PLAN` must search an index, and the
SQLite VM steps a purge costs must not grow with the size of the cache.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.policy.entry import Entry
from edgeproxy.purge import Purge, PurgeAll, PurgePrefix, PurgeTags, PurgeURL
from edgeproxy.store.base import Banned, StoreError
from edgeproxy.store.disk import BODY, TMP_MAX_AGE, DiskStore, _truncation, variant_id
from tests.conftest import FakeClock
from tests.contract.helpers import T0, make_entry, put, read
from tests.spying import SpiedDiskStore

OUR_TABLES = ("edge_variants", "edge_tags", "edge_bans", "edge_meta", "Cache")


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
async def store(directory: Path) -> AsyncIterator[DiskStore]:
    # One pool thread: one connection, which the probes below instrument.
    s = await DiskStore.open(str(directory), threads=1)
    yield s
    await s.close()


@pytest.fixture
async def spied(directory: Path) -> AsyncIterator[DiskStore]:
    """As `store`, but its methods may be replaced (tests/spying.py)."""
    s = await SpiedDiskStore.open(str(directory), threads=1)
    yield s
    await s.close()


def db(directory: Path) -> sqlite3.Connection:
    return sqlite3.connect(directory / "cache.db", timeout=10, isolation_level=None)


async def query(directory: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    def run() -> list[tuple[Any, ...]]:
        con = db(directory)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    return await asyncio.to_thread(run)


async def bulk(store: DiskStore, entries: list[Entry], body: bytes = b"x") -> None:
    """Commit many entries fast: the store's own commit, in one outer transaction."""

    def run() -> None:
        with store._cache.transact():
            for e in entries:
                stored = e.with_changes(variant=uuid.uuid4().hex, body_size=len(body))
                store._commit(stored, body, None)

    await store._run(run)


async def filler(store: DiskStore, n: int) -> None:
    await bulk(
        store,
        [make_entry(f"http://bulk.example/{i:07d}", tags=(f"t{i}", "bulk")) for i in range(n)],
    )


async def hot(store: DiskStore) -> None:
    """Ten entries the measured operations touch, among the filler."""
    await bulk(
        store,
        [make_entry(f"http://hot.example/{i}", tags=("hot", f"h{i}")) for i in range(10)],
    )


class Probe:
    """Counts SQLite VM steps and records statements on the store's one connection."""

    def __init__(self, store: DiskStore) -> None:
        self.store = store
        self.steps = 0
        self.statements: list[str] = []

    def _tick(self) -> int:
        self.steps += 1
        return 0

    async def measure(self, op: Callable[[], Awaitable[object]]) -> int:
        def install() -> None:
            con = self.store._cache._con
            con.set_progress_handler(self._tick, 1)
            con.set_trace_callback(self.statements.append)

        def remove() -> None:
            con = self.store._cache._con
            con.set_progress_handler(None, 1)
            con.set_trace_callback(None)

        self.steps = 0
        await self.store._run(install)
        await self.store._run_quick(install)  # both lanes' connections
        try:
            await op()
        finally:
            await self.store._run(remove)
            await self.store._run_quick(remove)
        return self.steps


OPERATIONS: dict[str, Callable[[DiskStore], Awaitable[object]]] = {
    "tag-purge-hard": lambda s: s.purge(Purge(PurgeTags(("hot",)), issued_at=T0)),
    "tag-purge-soft": lambda s: s.purge(Purge(PurgeTags(("hot",)), soft=True, issued_at=T0)),
    "tag-purge-dry": lambda s: s.purge(Purge(PurgeTags(("hot", "h1")), dry_run=True)),
    "tags-purge-overlap": lambda s: s.purge(
        Purge(PurgeTags(("h1", "hot", "h2")), soft=True, issued_at=T0)
    ),
    "prefix-purge": lambda s: s.purge(Purge(PurgePrefix("http://hot.example/"), issued_at=T0)),
    "host-purge": lambda s: s.purge(Purge(PurgeAll("hot.example"), soft=True, issued_at=T0)),
    "url-purge": lambda s: s.purge(Purge(PurgeURL("http://hot.example/3"), issued_at=T0)),
    "entries-by-tag": lambda s: s.entries(tag="hot"),
    "entries-by-prefix": lambda s: s.entries(prefix="http://hot.example/"),
    "lookup": lambda s: s.lookup("http://hot.example/3"),
    "delete": lambda s: s.delete("http://hot.example/3"),
    "stats": lambda s: s.stats(),
    "commit-with-tags": lambda s: put(s, make_entry("http://hot.example/3", tags=("hot", "x"))),
}


SIZES = (300, 3000)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """A cache per size, built once (outside any test's event loop) and copied."""

    async def build(directory: Path, n: int) -> None:
        s = await DiskStore.open(str(directory), threads=1)
        try:
            await filler(s, n)
            await hot(s)
            # A few bans on record, as in a live edge.
            for i in range(5):
                await s.purge(Purge(PurgeURL(f"http://gone.example/{i}"), issued_at=T0 - 10))
        finally:
            await s.close()

    root = tmp_path_factory.mktemp("templates")
    made = {}
    for n in SIZES:
        asyncio.run(build(root / str(n), n))
        made[n] = root / str(n)
    return made


@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_work_does_not_grow_with_the_cache(
    tmp_path: Path, templates: dict[int, Path], name: str
) -> None:
    steps = {}
    for n in SIZES:
        directory = tmp_path / str(n)
        await asyncio.to_thread(shutil.copytree, templates[n], directory)
        s = await DiskStore.open(str(directory), threads=1)
        try:
            steps[n] = await Probe(s).measure(lambda s=s: OPERATIONS[name](s))  # type: ignore[misc]
        finally:
            await s.close()
    # A scan costs VM steps per row: 2,700 more rows would add thousands.
    # Index seeks are one step whatever the B-tree depth.
    assert steps[3000] - steps[300] < 100, steps
    assert steps[3000] < steps[300] * 1.1, steps


LARGE_PURGES: dict[str, Purge] = {
    "all-dry": Purge(PurgeAll(), dry_run=True),
    "all-hard": Purge(PurgeAll(), issued_at=T0),
    "prefix-soft": Purge(PurgePrefix("http://bulk.example/"), soft=True, issued_at=T0),
    "tag-soft": Purge(PurgeTags(("bulk",)), soft=True, issued_at=T0),
    "tags-dry-overlap": Purge(PurgeTags(("t1", "bulk")), dry_run=True),
}


@pytest.mark.parametrize("name", list(LARGE_PURGES))
async def test_large_purges_cost_linear_work(
    tmp_path: Path, templates: dict[int, Path], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # Many small batches: a batch that re-walked the index from the start
    # of the range would make 10x the entries cost ~100x the steps.
    monkeypatch.setattr("edgeproxy.store.disk.BATCH", 20)
    steps, counts = {}, {}
    for n in SIZES:
        directory = tmp_path / str(n)
        await asyncio.to_thread(shutil.copytree, templates[n], directory)
        s = await DiskStore.open(str(directory), threads=1)
        try:
            done: list[int] = []

            async def op(s: DiskStore = s, out: list[int] = done) -> None:
                out.append(await s.purge(LARGE_PURGES[name]))

            steps[n] = await Probe(s).measure(op)
            counts[n] = done[0]
        finally:
            await s.close()
    assert counts[3000] > 9 * counts[300] > 0, counts
    assert steps[3000] < 12 * steps[300], steps


SCAN = re.compile(r"\bSCAN (" + "|".join(OUR_TABLES) + r")\b")


@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_statements_search_indexes(store: DiskStore, directory: Path, name: str) -> None:
    await filler(store, 50)
    await hot(store)
    probe = Probe(store)
    await probe.measure(lambda: OPERATIONS[name](store))
    statements = sorted(
        {s for s in probe.statements if s.split()[0] in ("SELECT", "UPDATE", "DELETE", "INSERT")}
    )
    assert statements
    plans = {s: await query(directory, "EXPLAIN QUERY PLAN " + s) for s in statements}
    scans = {s: [p[3] for p in plan if SCAN.search(p[3])] for s, plan in plans.items()}
    assert {s: found for s, found in scans.items() if found} == {}


@pytest.mark.parametrize(
    "statement",
    [  # what the triggers run when a body, then its variant, goes
        "DELETE FROM edge_variants WHERE variant = substr('b:abc', 3)",
        "DELETE FROM edge_tags WHERE vid = 7",
        "UPDATE edge_meta SET value = value - 1 WHERE name = 'variants'",
    ],
)
async def test_trigger_statements_search_indexes(
    store: DiskStore, directory: Path, statement: str
) -> None:
    plan = await query(directory, "EXPLAIN QUERY PLAN " + statement)
    assert plan
    assert [p[3] for p in plan if SCAN.search(p[3])] == []


async def test_eviction_takes_index_rows_with_the_body(directory: Path) -> None:
    store = await DiskStore.open(str(directory), size_limit=600_000, threads=1)
    try:
        for i in range(30):
            await put(
                store, make_entry(f"http://a.example/{i}", tags=("all", f"t{i}")), bytes(50_000)
            )
        survivors = await store.entries(limit=100)
        assert 0 < len(survivors) < 30
        for e in survivors:
            assert await read(store, e) == bytes(50_000)  # every listed body opens
        (variants,) = await query(directory, "SELECT count(*) FROM edge_variants")
        (counter,) = await query(directory, "SELECT value FROM edge_meta WHERE name='variants'")
        assert variants[0] == counter[0] == len(survivors) == (await store.stats())["entries"]
        assert (
            await query(
                directory,
                "SELECT * FROM edge_tags WHERE vid NOT IN (SELECT id FROM edge_variants)",
            )
            == []
        )
        bodies = {k for (k,) in await query(directory, "SELECT key FROM Cache")}
        assert bodies == {BODY + e.variant for e in survivors}  # no orphan either way
        assert await store.purge(Purge(PurgeTags(("all",)), dry_run=True)) == len(survivors)
    finally:
        await store.close()


async def test_stale_tag_rows_are_skipped_and_dropped_when_met(
    store: DiskStore, directory: Path
) -> None:
    gone = await put(store, make_entry("http://a.example/gone", tags=("t",)))
    kept = await put(store, make_entry("http://a.example/kept", tags=("t",)))
    # A tag row outliving its variant (a database edited by hand).
    await query(directory, "DROP TRIGGER edge_variants_gone")
    await query(directory, "DELETE FROM edge_variants WHERE variant = ?", gone.variant)
    await store.close()
    store = await DiskStore.open(str(directory), threads=1)  # restores the trigger
    try:
        stale = "SELECT count(*) FROM edge_tags WHERE vid NOT IN (SELECT id FROM edge_variants)"
        assert await query(directory, stale) == [(1,)]
        assert [e.variant for e in await store.entries(tag="t")] == [kept.variant]
        assert await store.purge(Purge(PurgeTags(("t",)), dry_run=True)) == 1
        assert await query(directory, stale) == [(1,)]  # a dry run touches nothing
        assert await store.purge(Purge(PurgeTags(("t",)), issued_at=T0)) == 1
        assert await query(directory, stale) == [(0,)]
    finally:
        await store.close()


@pytest.mark.parametrize(
    "rows", [pytest.param(None, id="row written by the store"), pytest.param(False, id="set()")]
)
async def test_commit_whose_body_was_evicted_meanwhile_fails_cleanly(
    spied: DiskStore, monkeypatch: pytest.MonkeyPatch, rows: bool | None
) -> None:
    # A file body is stored in a transaction of its own before the one that
    # indexes it, so another worker's cull can take it in between. (An
    # inline body is set in the indexing transaction itself, under its
    # write lock, with no cull in set(): nobody can take it meanwhile.)
    store = spied
    await put(store, make_entry("http://b.example/"), b"opened")
    store._bulk = rows  # None: _set_body writes the row itself (_rows_writable)
    real_set_body = store._set_body

    def set_then_evict(key: str, value: Any) -> None:
        real_set_body(key, value)
        store._cache.delete(key)  # another worker's set() culled it

    monkeypatch.setattr(store, "_set_body", set_then_evict)
    with pytest.raises(StoreError):
        await put(store, make_entry("http://a.example/"), bytes(100_000))
    monkeypatch.undo()
    assert await store.lookup("http://a.example/") == []
    assert (await store.stats())["entries"] == 1


async def test_failed_commit_deletes_its_body(
    store: DiskStore, directory: Path, clock: FakeClock
) -> None:
    sent = clock()
    clock.advance(1)
    await store.purge(Purge(PurgeURL("http://a.example/"), issued_at=clock()))
    with pytest.raises(Banned):
        await put(store, make_entry("http://a.example/", request_time=sent), bytes(100_000))
    assert await query(directory, "SELECT key FROM Cache") == []


async def test_bans_are_bounded_and_older_fills_refused(directory: Path) -> None:
    store = await DiskStore.open(str(directory), threads=1, ban_ttl=100)
    try:
        for t in (T0, T0 + 50, T0 + 99):
            await store.purge(Purge(PurgeURL(f"http://a.example/{t}"), issued_at=t))
        assert len(await query(directory, "SELECT * FROM edge_bans")) == 3
        await store.purge(Purge(PurgeURL("http://a.example/last"), issued_at=T0 + 160))
        kept = await query(directory, "SELECT issued_at FROM edge_bans ORDER BY issued_at")
        assert kept == [(T0 + 99,), (T0 + 160,)]
        # A fill sent before a forgotten ban might have raced it: refused.
        with pytest.raises(Banned):
            await put(store, make_entry("http://a.example/other", request_time=T0 + 49))
        await put(store, make_entry("http://a.example/other", request_time=T0 + 51))
        assert len(await store.lookup("http://a.example/other")) == 1
    finally:
        await store.close()


async def test_two_workers_share_entries_indexes_and_bans(directory: Path) -> None:
    a = await DiskStore.open(str(directory), threads=2)
    b = await DiskStore.open(str(directory), threads=2)
    try:
        stored = await put(a, make_entry("http://a.example/1", tags=("t",)), b"one")
        [seen] = await b.lookup("http://a.example/1")
        assert seen == stored
        assert await read(b, seen) == b"one"
        racing = a.open_writer("http://a.example/2")
        await racing.write(b"two")
        assert await b.purge(Purge(PurgeTags(("t",)), issued_at=T0 + 1)) == 1
        assert await a.lookup("http://a.example/1") == []
        with pytest.raises(Banned):
            await racing.commit(make_entry("http://a.example/2", request_time=T0, tags=("t",)))
        assert (await a.stats())["entries"] == (await b.stats())["entries"] == 0
    finally:
        await a.close()
        await b.close()


async def test_concurrent_commits_and_purges_stay_consistent(
    store: DiskStore, directory: Path
) -> None:
    s2 = await DiskStore.open(str(directory), threads=4)
    try:
        keys = [f"http://a.example/{i % 7}" for i in range(60)]
        commits = [
            put(s2, make_entry(k, tags=("t", k[-1]), vary=("x",), secondary=(str(i % 3),)))
            for i, k in enumerate(keys)
        ]
        purges = [
            store.purge(Purge(PurgeTags((str(d),)), soft=d % 2 == 0, issued_at=T0 - 1))
            for d in range(7)
        ]
        await asyncio.gather(*commits, *purges)
        listed = await s2.entries(limit=1000)
        assert len(listed) == (await store.stats())["entries"]
        assert len(listed) <= 7 * 3
        (tags,) = await query(directory, "SELECT count(*) FROM edge_tags")
        assert tags[0] == sum(len(e.tags) for e in listed)
        for e in listed:
            assert await read(store, e) is not None
    finally:
        await s2.close()


async def test_a_newer_schema_is_refused(directory: Path) -> None:
    s = await DiskStore.open(str(directory), threads=1)
    await s.close()
    await query(directory, "UPDATE edge_meta SET value = 99 WHERE name = 'schema'")
    with pytest.raises(StoreError, match="schema"):
        await DiskStore.open(str(directory), threads=1)


async def test_leftover_temp_bodies_are_swept_at_open(directory: Path) -> None:
    tmp = directory / "tmp"
    tmp.mkdir(parents=True)
    old, new = tmp / "body-old", tmp / "body-new"

    def make() -> None:
        old.write_bytes(b"crashed worker's")
        new.write_bytes(b"live writer's")
        past = time.time() - TMP_MAX_AGE - 60
        os.utime(old, (past, past))

    await asyncio.to_thread(make)
    s = await DiskStore.open(str(directory), threads=1)
    await s.close()
    assert sorted(os.listdir(tmp)) == ["body-new"]


async def test_errors_below_become_store_errors_or_misses(
    spied: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await put(spied, make_entry("http://a.example/"))

    def broken(*args: Any) -> Any:
        raise sqlite3.OperationalError("database disk image is malformed")

    for name in ("_lookup", "_open_body", "_purge", "_update_batch", "_list"):
        monkeypatch.setattr(spied, name, broken)
    assert await spied.lookup("http://a.example/") == []  # a miss, not a 500
    assert await spied.open_body(stored) is None
    with pytest.raises(StoreError):
        await spied.purge(Purge(PurgeAll(), issued_at=T0))
    with pytest.raises(StoreError):
        await spied.update(stored)
    with pytest.raises(StoreError):
        await spied.entries()


def count_batches(store: DiskStore, job: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches `job` (a DiskStore batch method) is given."""
    batches: list[int] = []
    real = getattr(store, job)

    def counted(batch: Any) -> Any:
        batches.append(len(batch))
        return real(batch)

    monkeypatch.setattr(store, job, counted)
    return batches


async def test_refreshes_arriving_together_share_a_transaction(
    spied: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = [await put(spied, make_entry(f"http://b.example/{i}")) for i in range(20)]
    batches = count_batches(spied, "_update_batch", monkeypatch)
    fresh = [e.with_changes(response_time=e.response_time + 5) for e in stored]
    got = await asyncio.gather(*(spied.update_stored(e) for e in fresh))
    assert [g.response_time if g else None for g in got] == [e.response_time for e in fresh]
    assert sum(batches) == 20 and len(batches) < 20  # the first alone, the rest together
    for e in fresh:  # every one written
        (back,) = await spied.lookup(e.key)
        assert back.response_time == e.response_time


async def test_a_refresh_that_fails_fails_alone(
    spied: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = [await put(spied, make_entry(f"http://c.example/{i}")) for i in range(6)]
    real = spied._update_row

    def broken_for_3(sql: Any, entry: Entry, bans: Any) -> Any:
        if entry.key.endswith("/3"):
            raise sqlite3.IntegrityError("not this one")  # an error, not a disk fault
        return real(sql, entry, bans)

    monkeypatch.setattr(spied, "_update_row", broken_for_3)
    got = await asyncio.gather(
        *(spied.update_stored(e.with_changes(response_time=T0 + 9)) for e in stored),
        return_exceptions=True,
    )
    assert [type(g).__name__ for g in got] == ["Entry"] * 3 + ["StoreError"] + ["Entry"] * 2
    (kept,) = await spied.lookup("http://c.example/5")
    assert kept.response_time == T0 + 9


# Refreshes batched in one transaction read the bans once (disk._Bans), yet
# each is judged by the purges issued after its own request: (URL, request
# time of the refresh) -> what the disk keeps. A hard purge of /a at T0 + 5,
# a soft one of tag "s" at T0 + 7.
REFRESHES = [
    ("http://e.example/a", T0 + 4, None),  # fetched before the purge: dropped
    ("http://e.example/a2", T0 + 4, "kept"),  # not its URL
    ("http://e.example/b", T0 + 6, "soft"),  # tagged s, fetched before the soft purge
    ("http://e.example/b2", T0 + 8, "kept"),  # tagged s, after it
    ("http://e.example/c", T0 + 6, "kept"),  # untagged
]


async def test_refreshes_in_one_batch_each_meet_the_bans_after_their_own_request(
    spied: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = [
        await put(spied, make_entry(url, tags=("s",) if "/b" in url else ()))
        for url, _, _ in REFRESHES
    ]
    await spied.purge(Purge(PurgeURL("http://e.example/a"), issued_at=T0 + 5))
    # Stored anew after the purge; its refresh below was asked before it.
    stored[0] = await put(spied, make_entry("http://e.example/a", request_time=T0 + 5.5))
    await spied.purge(Purge(PurgeTags(("s",)), soft=True, issued_at=T0 + 7))
    batches = count_batches(spied, "_update_batch", monkeypatch)
    got = await asyncio.gather(
        *(
            spied.update_stored(e.with_changes(request_time=t, response_time=t, soft_purged=False))
            for e, (_, t, _) in zip(stored, REFRESHES, strict=True)
        )
    )
    assert len(batches) < len(REFRESHES)  # some shared a transaction
    for (url, _, want), g in zip(REFRESHES, got, strict=True):
        back = await spied.lookup(url)
        if want is None:
            assert g is None and back == [], url
        else:
            assert g is not None and [e.soft_purged for e in back] == [want == "soft"], url


async def test_small_bodies_arriving_together_commit_in_one_transaction(
    spied: DiskStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One of them was fetched before a purge of its URL (a ban): refused alone,
    # in its savepoint; the others in the same transaction are stored.
    await spied.purge(Purge(PurgeURL("http://d.example/4"), issued_at=T0 + 1))
    batches = count_batches(spied, "_commit_batch", monkeypatch)
    entries = [make_entry(f"http://d.example/{i}") for i in range(12)]
    got = await asyncio.gather(
        *(put(spied, e, body=b"body %d" % i) for i, e in enumerate(entries)),
        return_exceptions=True,
    )
    assert [type(g).__name__ for g in got] == ["Entry"] * 4 + ["Banned"] + ["Entry"] * 7
    assert sum(batches) == 12 and len(batches) < 12
    assert len(await query(directory, "SELECT key FROM Cache")) == 11  # no body left for 4
    for i, e in enumerate(entries):
        back = await spied.lookup(e.key)
        if i == 4:
            assert back == []
        else:
            assert await read(spied, back[0]) == b"body %d" % i


# -- variant ids: time first, for the indexes' sake ----------------------------

NS = st.integers(0, 2**64 - 1)  # 16 hex digits: until the year 2554
NOISE = st.binary(min_size=8, max_size=8)


@pytest.mark.parametrize(
    ("now_ns", "noise", "expected"),
    [
        (0, bytes(8), "0" * 32),
        (1_800_000_000_000_000_000, b"\x01" * 8, "18fae27693b40000" + "01" * 8),
        (2**64 - 1, b"\xff" * 8, "f" * 32),
    ],
)
def test_variant_id_table(now_ns: int, noise: bytes, expected: str) -> None:
    assert variant_id(now_ns, noise) == expected


@given(a=NS, b=NS, x=NOISE, y=NOISE)
def test_variant_ids_sort_by_time_and_never_clash(a: int, b: int, x: bytes, y: bytes) -> None:
    """Fixed length hex, in time order whatever the noise; equal only for
    the same time and the same noise (the store's key for the body)."""
    ia, ib = variant_id(a, x), variant_id(b, y)
    assert len(ia) == 32 and re.fullmatch(r"[0-9a-f]{32}", ia)
    if a != b:
        assert (ia < ib) == (a < b)
    assert (ia == ib) == (a == b and x == y)


async def test_committed_variants_take_time_ordered_ids(store: DiskStore) -> None:
    first = await put(store, make_entry("http://a.example/1"))
    second = await put(store, make_entry("http://a.example/2"))
    assert first.variant < second.variant
    assert int(first.variant[:16], 16) <= time.time_ns()


# -- a clean close, and a truncated database at start ----------------------------


async def test_close_closes_every_threads_connection_without_the_gc(directory: Path) -> None:
    """diskcache keeps a connection per thread, and the last to close
    checkpoints the WAL. A sqlite3 connection is in a reference cycle (its
    statement cache refers back to it), so without an explicit close only
    the collector frees it, and gctune freezes what start-up made: close()
    must close each thread's, or the WAL stays beside cache.db."""
    store = await DiskStore.open(str(directory), threads=4)
    await asyncio.gather(
        *(put(store, make_entry(f"http://a.example/{i}"), bytes(2000)) for i in range(40))
    )
    gc.freeze()  # as gctune does once the proxy is up: these connections included
    try:
        await asyncio.gather(*(store.lookup(f"http://a.example/{i}") for i in range(40)))
        await store.close()
        assert not (directory / "cache.db-wal").exists()
    finally:
        gc.unfreeze()
    assert (directory / "cache.db").stat().st_size > 40 * 2000


def _sqlite_db(path: Path, rows: int) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, bytes(500)) for i in range(rows)])
    con.commit()
    con.close()  # the last connection: checkpointed, the WAL removed


def _header(path: Path) -> bytes:
    return path.read_bytes()[:100]


@pytest.mark.parametrize(
    ("damage", "truncated"),
    [
        pytest.param(lambda db: None, False, id="whole"),
        pytest.param(lambda db: os.truncate(db, db.stat().st_size // 3), True, id="a third"),
        pytest.param(lambda db: os.truncate(db, db.stat().st_size - 1), True, id="one byte short"),
        pytest.param(lambda db: db.unlink(), False, id="no database yet"),
        pytest.param(lambda db: db.write_bytes(b"garbage" * 100), False, id="not SQLite's"),
        pytest.param(
            lambda db: (
                os.truncate(db, db.stat().st_size // 3),
                db.with_name("cache.db-wal").write_bytes(b"x"),
            ),
            False,
            id="a WAL beside it: SQLite's to judge",
        ),
        pytest.param(
            lambda db: (
                db.write_bytes(_header(db)[:92] + b"\xff\xff\xff\xff" + db.read_bytes()[96:]),
                os.truncate(db, db.stat().st_size // 3),
            ),
            False,
            id="header size not valid (counters differ)",
        ),
    ],
)
def test_truncation(tmp_path: Path, damage: Callable[[Path], object], truncated: bool) -> None:
    db = tmp_path / "cache.db"
    _sqlite_db(db, 200)
    damage(db)
    reason = _truncation(str(db))
    assert (reason is not None) == truncated
    if truncated:
        assert reason is not None and reason.startswith("truncated: ")


@given(header=st.binary(min_size=0, max_size=120), size=st.integers(0, 1 << 20))
def test_truncation_reads_any_header(
    tmp_path_factory: pytest.TempPathFactory, header: bytes, size: int
) -> None:
    """Whatever the first bytes: a reason only for SQLite's magic with valid
    counters and fewer bytes than the header's page count says; never an
    exception."""
    db = tmp_path_factory.mktemp("h") / "cache.db"
    db.write_bytes(header)
    os.truncate(db, max(size, len(header)))
    reason = _truncation(str(db))
    if reason is not None:
        assert header.startswith(b"SQLite format 3\x00") and header[24:28] == header[92:96]
