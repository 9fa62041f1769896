"""TieredStore (store/tiered.py): what the contract suite can't see.

Two TieredStores on one directory are two workers: each has its own hot
tier over the shared disk store and generation file. A write in one must be
invisible in the other's memory by the time the write's call returned.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.http.dates import format_http_date
from edgeproxy.policy.entry import Entry
from edgeproxy.purge import Purge, PurgePrefix, PurgeTags, PurgeURL
from edgeproxy.store.base import Banned
from edgeproxy.store.generation import ALL
from edgeproxy.store.tiered import REFRESH_LAG, TieredStore
from tests.conftest import FakeClock
from tests.contract.helpers import T0, body_of, make_entry, put, read
from tests.contract.kits import DiskKit
from tests.spying import SpiedDiskStore

URL = "http://a.example/page"
OTHER = "http://other.example/"  # a key kept hot: looking it up only syncs the tier
MAX_OBJECT = 4096


async def open_tiered(
    directory: Path,
    max_bytes: int = 1 << 20,
    max_object: int = MAX_OBJECT,
    size_limit: int = 1 << 30,
) -> TieredStore:
    disk = await SpiedDiskStore.open(str(directory), size_limit=size_limit, threads=2)
    return await TieredStore.open(disk, max_bytes=max_bytes, max_object=max_object)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
async def a(directory: Path) -> AsyncIterator[TieredStore]:
    s = await open_tiered(directory)
    yield s
    await s.close()


@pytest.fixture
async def b(directory: Path, a: TieredStore) -> AsyncIterator[TieredStore]:
    s = await open_tiered(directory)  # a second worker on the same directory
    yield s
    await s.close()


class DiskCalls:
    """Counts the disk store's read calls a tier makes (hits must make none)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: TieredStore) -> None:
        self.calls: list[str] = []
        disk = store.disk
        for name in ("lookup", "open_body"):
            original = getattr(disk, name)
            monkeypatch.setattr(disk, name, self._counting(name, original))

    def _counting(
        self, name: str, original: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any) -> Any:
            self.calls.append(name)
            return await original(*args)

        return call


async def warm(store: TieredStore, key: str = URL) -> list[Entry]:
    """Look up and read every variant, as serving them does: now hot."""
    found = await store.lookup(key)
    for entry in found:
        assert await store.open_body(entry) is not None
    return found


# -- the hit path --------------------------------------------------------------


async def test_a_hot_hit_makes_no_disk_call_and_no_copy(
    a: TieredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = body_of(1024)
    stored = await put(a, make_entry(URL), data)
    # The key's first read goes to disk and brings its list and body in.
    [found] = await a.lookup(URL)
    first = await a.open_body(found)
    disk = DiskCalls(monkeypatch, a)
    for _ in range(3):
        [again] = await a.lookup(URL)
        body = await a.open_body(again)
        assert again is found
        assert body is first  # the one kept Body, served as is
    assert disk.calls == []
    assert first is not None and first.data == data and found == stored
    stats = a.memory_stats()
    assert (stats["memory_hits"], stats["memory_misses"], stats["memory_bodies"]) == (3, 1, 1)


async def test_a_commit_of_a_key_memory_lacks_leaves_it_out(
    a: TieredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Admission: a key stored for the first time stays out of memory (no
    copy of its body kept) until its first read from disk; a key memory
    holds gets its new list and body from the commit itself."""
    stored = await put(a, make_entry(URL), b"first")
    assert URL not in a._mem and a.hot_body(stored) is None
    disk = DiskCalls(monkeypatch, a)
    assert await a.lookup(URL) == [stored]
    assert disk.calls == ["lookup"]  # the first read: from disk, into memory
    assert URL in a._mem
    again = await put(a, make_entry(URL), b"second")  # a refill of a key being read
    disk.calls.clear()
    assert await a.lookup(URL) == [again]
    assert a.hot_body(again) is not None and disk.calls == []


# Commits of one key, each (Vary selection, body size): after each, the
# list the commit left in memory is the list the disk holds (RFC 9111
# section 4.1: a selection replaces its own, others stay; the oldest go past
# MAX_VARIANTS, here 3). Sizes cover inline bodies (batched commits), file
# bodies and bodies memory does not keep.
COMMITS: dict[str, list[tuple[str, int]]] = {
    "one": [("a", 10)],
    "same-selection-replaces": [("a", 10), ("a", 20)],
    "selections-side-by-side": [("a", 10), ("b", 20), ("c", 30)],
    "oldest-past-the-limit": [("a", 10), ("b", 10), ("c", 10), ("d", 10), ("e", 10)],
    "file-bodies": [("a", 100_000), ("b", 10), ("a", 200_000)],
    "beyond-max-object": [("a", MAX_OBJECT + 1), ("b", 10)],
}


@pytest.mark.parametrize("commits", COMMITS.values(), ids=COMMITS.keys())
async def test_a_commit_leaves_the_keys_list_as_the_disk_holds_it(
    directory: Path, a: TieredStore, monkeypatch: pytest.MonkeyPatch, commits: list[tuple[str, int]]
) -> None:
    monkeypatch.setattr("edgeproxy.store.disk.MAX_VARIANTS", 3)
    cold = await open_tiered(directory)  # reads the disk: nothing of a's memory
    try:
        for n, (selection, size) in enumerate(commits):
            entry = make_entry(URL, vary=("x",), secondary=(selection,), request_time=T0 + n)
            stored = await put(a, entry, body_of(size, seed=n))
            calls = DiskCalls(monkeypatch, a)
            hot = await a.lookup(URL)
            # The first commit leaves the key to its first read (this
            # lookup, from disk); the later ones put the list in memory.
            assert calls.calls == ([] if n else ["lookup"])
            on_disk = await cold.disk.lookup(URL)
            assert [e.variant for e in hot] == [e.variant for e in on_disk]
            assert hot == on_disk and hot[-1] == stored
            if n:
                assert (a.hot_body(stored) is not None) == (size <= MAX_OBJECT)
    finally:
        await cold.close()


async def test_commits_of_one_key_batched_together_leave_the_last_list(
    directory: Path, a: TieredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inline bodies arriving together commit in one transaction; each
    # commit's list is true when made, but each began before the others'
    # records: none may fill memory, and the next lookup reads the disk.
    entries = [make_entry(URL, vary=("x",), secondary=(s,)) for s in ("a", "b", "a", "c")]
    stored = await asyncio.gather(*(put(a, e, body_of(10, seed=i)) for i, e in enumerate(entries)))
    calls = DiskCalls(monkeypatch, a)
    hot = await a.lookup(URL)
    cold = await open_tiered(directory)
    try:
        on_disk = await cold.disk.lookup(URL)
    finally:
        await cold.close()
    assert hot == on_disk
    assert {e.variant for e in hot} == {stored[1].variant, stored[2].variant, stored[3].variant}
    assert calls.calls == ["lookup"]


@pytest.mark.parametrize(
    ("size", "in_memory"),
    [(0, True), (MAX_OBJECT, True), (MAX_OBJECT + 1, False), (300_000, False)],
    ids=["empty", "max-object", "one-past", "spilled-file"],
)
@pytest.mark.parametrize("how", ["committed", "read-from-disk"])
async def test_bodies_above_max_object_never_enter_memory(
    a: TieredStore, monkeypatch: pytest.MonkeyPatch, size: int, in_memory: bool, how: str
) -> None:
    data = body_of(size)
    await put(a, make_entry(URL), data)
    if how == "read-from-disk":
        a.drop_memory()
    [found] = await a.lookup(URL)
    assert await read(a, found) == data
    disk = DiskCalls(monkeypatch, a)
    assert await read(a, found) == data
    assert disk.calls == ([] if in_memory else ["open_body"])
    assert a.memory_stats()["memory_bodies"] == int(in_memory)


async def test_a_small_body_stored_as_a_file_is_read_into_memory(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # diskcache keeps bodies past 32 KiB as files; below max_object the tier
    # reads one whole, once, and serves it from memory after.
    store = await open_tiered(directory, max_object=64 * 1024)
    try:
        data = body_of(40 * 1024)
        await put(store, make_entry(URL), data)
        store.drop_memory()
        [found] = await store.lookup(URL)
        body = await store.open_body(found)
        assert body is not None and body.data == data and body.file is None
        disk = DiskCalls(monkeypatch, store)
        assert await store.open_body(found) is body
        assert disk.calls == []
    finally:
        await store.close()


# -- other workers' writes -------------------------------------------------------


async def _purge_url(s: TieredStore, e: Entry, clock: FakeClock) -> None:
    await s.purge(Purge(PurgeURL(URL), issued_at=clock()))


async def _purge_tag(s: TieredStore, e: Entry, clock: FakeClock) -> None:
    await s.purge(Purge(PurgeTags(("t",)), issued_at=clock()))


async def _purge_prefix(s: TieredStore, e: Entry, clock: FakeClock) -> None:
    await s.purge(Purge(PurgePrefix("http://a.example/"), issued_at=clock()))


async def _soft_purge(s: TieredStore, e: Entry, clock: FakeClock) -> None:
    await s.purge(Purge(PurgeTags(("t",)), soft=True, issued_at=clock()))


async def _delete(s: TieredStore, e: Entry, clock: FakeClock) -> None:
    await s.delete(URL)


async def _delete_variant(s: TieredStore, e: Entry, clock: FakeClock) -> None:
    await s.delete_variant(e)


async def _update(s: TieredStore, e: Entry, clock: FakeClock) -> None:
    fields = CIMultiDict(e.fields)
    fields["Cache-Control"] = "max-age=600"  # RFC 9111 section 4.3.4: a 304 freshens
    await s.update(e.with_changes(fields=CIMultiDictProxy(fields), request_time=clock()))


async def _replace(s: TieredStore, e: Entry, clock: FakeClock) -> None:
    await put(s, make_entry(URL, request_time=clock(), tags=("t",)), b"second")


async def _add_variant(s: TieredStore, e: Entry, clock: FakeClock) -> None:
    # RFC 9111 section 4.1: another Vary selection is stored beside it.
    await put(s, make_entry(URL, vary=("x",), secondary=("y",), request_time=clock()), b"y")


WRITES: dict[str, Callable[[TieredStore, Entry, FakeClock], Awaitable[None]]] = {
    "purge-url": _purge_url,
    "purge-tag": _purge_tag,
    "purge-prefix": _purge_prefix,
    "soft-purge": _soft_purge,
    "delete": _delete,
    "delete-variant": _delete_variant,
    "update": _update,
    "replacing-commit": _replace,
    "commit-of-another-variant": _add_variant,
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
@pytest.mark.parametrize("where", ["other-worker", "same-worker"])
async def test_a_write_is_seen_through_every_hot_tier_once_it_returned(
    a: TieredStore,
    b: TieredStore,
    clock: FakeClock,
    write: Callable[[TieredStore, Entry, FakeClock], Awaitable[None]],
    where: str,
) -> None:
    stored = await put(a, make_entry(URL, request_time=clock(), tags=("t",)), b"first")
    hot_a = await warm(a)
    hot_b = await warm(b)
    assert hot_a == hot_b == [stored]
    clock.advance(1)
    await write(b if where == "other-worker" else a, stored, clock)
    truth = await b.disk.lookup(URL)  # what the shared disk now holds
    assert truth != [stored]  # the write changed something
    for store in (a, b):
        assert await store.lookup(URL) == truth
        for entry in truth:
            assert await read(store, entry) == await read(b.disk, entry)
        if stored.variant not in {e.variant for e in truth}:
            assert await store.open_body(stored) is None


async def test_soft_purge_shows_through_memory(
    a: TieredStore, b: TieredStore, clock: FakeClock
) -> None:
    await put(a, make_entry(URL, request_time=clock(), tags=("t",)), b"body")
    await warm(a)
    await warm(b)
    clock.advance(1)
    assert await b.purge(Purge(PurgeURL(URL), soft=True, issued_at=clock())) == 1
    for store in (a, b):
        [found] = await store.lookup(URL)
        assert found.soft_purged  # stale now: revalidated before reuse
        assert await read(store, found) == b"body"  # kept for that revalidation


async def test_a_dry_run_leaves_hot_tiers_alone(
    a: TieredStore, b: TieredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await put(a, make_entry(URL, tags=("t",)))
    await warm(a)
    assert await b.purge(Purge(PurgeTags(("t",)), dry_run=True)) == 1
    disk = DiskCalls(monkeypatch, a)
    assert len(await a.lookup(URL)) == 1
    assert disk.calls == []


async def test_a_real_second_process_purge_is_seen(
    a: TieredStore, directory: Path, clock: FakeClock
) -> None:
    await put(a, make_entry(URL, request_time=clock()), b"body")
    await warm(a)
    clock.advance(1)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, str(directory), URL, repr(clock())
    )
    assert await asyncio.wait_for(child.wait(), 60) == 0
    assert await a.lookup(URL) == []


WORKER = """
import asyncio, sys
from edgeproxy.purge import Purge, PurgeURL
from edgeproxy.store.disk import DiskStore
from edgeproxy.store.generation import ALL
from edgeproxy.store.tiered import TieredStore

async def main() -> None:
    store = await TieredStore.open(await DiskStore.open(sys.argv[1]))
    try:
        assert await store.purge(Purge(PurgeURL(sys.argv[2]), issued_at=float(sys.argv[3]))) == 1
    finally:
        await store.close()

asyncio.run(main())
"""


# -- races: fills and reads that a write overtook ------------------------------


@pytest.mark.parametrize("hot", [False, True], ids=["cold key", "hot key"])
@pytest.mark.parametrize("size", [1024, 40_000], ids=["inline", "file"])
async def test_a_fill_that_raced_a_purge_stays_out_of_memory(
    a: TieredStore, b: TieredStore, clock: FakeClock, size: int, hot: bool
) -> None:
    """Refused (a ban): nothing in memory, no record to apply left behind;
    for a body kept inline (its batch's future calling back) as for a file."""
    if hot:
        await put(a, make_entry(URL, request_time=clock()), b"old")
        await warm(a)
        clock.advance(1)
    request_time = clock()
    writer = a.open_writer(URL)
    await writer.write(bytes(size))
    clock.advance(1)
    await b.purge(Purge(PurgeURL(URL), issued_at=clock()))
    with pytest.raises(Banned):
        await writer.commit(make_entry(URL, request_time=request_time))
    assert a.memory_stats()["memory_bodies"] == 0
    assert a._applying == set()
    assert await a.lookup(URL) == []


async def test_a_fill_that_raced_a_soft_purge_is_stale_in_memory_too(
    a: TieredStore, b: TieredStore, clock: FakeClock
) -> None:
    request_time = clock()
    writer = a.open_writer(URL)
    await writer.write(b"body")
    clock.advance(1)
    await b.purge(Purge(PurgeURL(URL), soft=True, issued_at=clock()))
    stored = await writer.commit(make_entry(URL, request_time=request_time))
    assert stored.soft_purged
    [found] = await a.lookup(URL)
    assert found.soft_purged
    assert await read(a, found) == b"body"


class Gate:
    """Holds a disk call after it read, until the test lets it return."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: TieredStore, name: str) -> None:
        self.read = asyncio.Event()
        self.release = asyncio.Event()
        original = getattr(store.disk, name)

        async def held(*args: Any) -> Any:
            result = await original(*args)
            self.read.set()
            await self.release.wait()
            return result

        monkeypatch.setattr(store.disk, name, held)


async def test_a_lookup_overtaken_by_a_purge_does_not_fill_memory(
    a: TieredStore, b: TieredStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await put(a, make_entry(URL, request_time=clock()), b"body")
    await put(a, make_entry(OTHER))
    a.drop_memory()  # the commits left URL hot: its lookup must go to the disk
    await warm(a, OTHER)
    gate = Gate(monkeypatch, a, "lookup")
    pending = asyncio.create_task(a.lookup(URL))
    await gate.read.wait()  # it read the entry from disk...
    clock.advance(1)
    await b.purge(Purge(PurgeURL(URL), issued_at=clock()))  # ...the purge lands...
    await a.lookup(OTHER)  # ...and this worker has applied its record already
    gate.release.set()
    assert await pending == [stored]  # ...its answer was true when read,
    monkeypatch.undo()
    assert await a.lookup(URL) == []  # but memory must not keep it


async def test_a_body_read_overtaken_by_a_purge_does_not_fill_memory(
    a: TieredStore, b: TieredStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await put(a, make_entry(URL, request_time=clock()), b"body")
    await put(a, make_entry(OTHER))
    a.drop_memory()
    await warm(a, OTHER)
    [found] = await a.lookup(URL)
    gate = Gate(monkeypatch, a, "open_body")
    pending = asyncio.create_task(a.open_body(found))
    await gate.read.wait()
    clock.advance(1)
    await b.purge(Purge(PurgeURL(URL), issued_at=clock()))
    await a.lookup(OTHER)
    gate.release.set()
    body = await pending
    assert body is not None and body.data == b"body"
    monkeypatch.undo()
    assert a.memory_stats()["memory_bodies"] == 1  # OTHER's alone
    assert await a.open_body(stored) is None


async def test_a_local_lookup_overtaken_by_a_local_commit_does_not_fill_memory(
    a: TieredStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await put(a, make_entry(URL, request_time=clock()), b"one")
    a.drop_memory()  # the commit left it hot: this lookup must go to the disk
    gate = Gate(monkeypatch, a, "lookup")
    pending = asyncio.create_task(a.lookup(URL))
    await gate.read.wait()
    monkeypatch.undo()
    second = await put(a, make_entry(URL, request_time=clock()), b"two")  # replaces it
    gate.release.set()
    assert await pending == [first]
    assert [e.variant for e in await a.lookup(URL)] == [second.variant]


async def test_a_cancelled_purge_still_reaches_every_hot_tier(
    a: TieredStore, b: TieredStore, clock: FakeClock
) -> None:
    await put(a, make_entry(URL, request_time=clock()))
    await warm(a)
    clock.advance(1)
    before = asyncio.all_tasks()
    task = asyncio.create_task(b.purge(Purge(PurgeURL(URL), issued_at=clock())))
    await asyncio.sleep(0)  # one step (no waiting): the disk purge is on its way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The shielded write and its record carry on; let them finish.
    carried_on = asyncio.all_tasks() - before - {task}
    assert carried_on
    await asyncio.wait_for(asyncio.gather(*carried_on), 60)
    assert await a.lookup(URL) == []


# -- the disk's own changes ---------------------------------------------------------


@pytest.mark.parametrize("size", [1024, 40_000], ids=["inline", "file"])
async def test_a_commit_whose_caller_is_cancelled_still_reaches_memory(
    a: TieredStore, b: TieredStore, clock: FakeClock, size: int
) -> None:
    """The caller (a client that went away) is cancelled while the commit is
    on the pool: the disk write goes on, and its record is applied as if
    the caller had waited. No note of it is left behind (a note would keep
    this worker from dropping the key on that record), and no tier keeps
    the response the commit replaced."""
    old = await put(a, make_entry(URL, request_time=clock()), b"old")
    await warm(a)
    await warm(b)
    writer = a.open_writer(URL)
    await writer.write(bytes(size))
    published_before = a._gen.current()
    task = asyncio.create_task(writer.commit(make_entry(URL, request_time=clock())))
    await asyncio.sleep(0)  # submitted: on the pool, or queued for it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):  # bounded: until its record is out and no note of it is left
        if a._gen.current() > published_before and not a._applying:
            break
        await asyncio.sleep(0.01)
    assert a._gen.current() > published_before
    assert a._applying == set()
    truth = await a.disk.lookup(URL)
    assert [e.variant for e in truth] != [old.variant]  # the commit went on, replacing it
    for store in (a, b):
        assert await store.lookup(URL) == truth
        assert await read(store, truth[0]) == bytes(size)
        assert await store.open_body(old) is None


async def test_an_eviction_on_disk_drops_the_hot_copy_in_every_worker(
    directory: Path, clock: FakeClock
) -> None:
    # diskcache evicts by size inside a commit; the committing worker
    # publishes what went, so no tier serves what the disk no longer has.
    stores = [await open_tiered(directory, size_limit=1 << 20) for _ in range(2)]
    a, b = stores
    try:
        await put(a, make_entry(URL, request_time=clock()), body_of(1000))
        await warm(a)
        await warm(b)
        for i in range(40):  # least recently stored goes first: URL's body
            await put(a, make_entry(f"{URL}/{i}"), body_of(40 * 1024, i))
        assert await a.disk.lookup(URL) == []
        assert await a.lookup(URL) == []
        assert await b.lookup(URL) == []
    finally:
        for s in stores:
            await s.close()


@pytest.mark.parametrize("damage", ["body", "index"])
async def test_a_damaged_disk_entry_is_a_miss_through_a_cold_tier(
    directory: Path, a: TieredStore, damage: str
) -> None:
    kit = DiskKit(directory.parent)
    other = await put(a, make_entry(URL, vary=("x",), secondary=("ok",)), b"fine")
    stored = await put(a, make_entry(URL, vary=("x",), secondary=("bad",)), body_of(100))
    if damage == "body":
        assert await kit.damage_body(stored, "truncate")
    else:
        assert await kit.corrupt_index(stored, "{not json")
    a.drop_memory()  # cold: nothing but the disk to answer from
    if damage == "body":
        assert await a.open_body(stored) is None
    assert [e.variant for e in await a.lookup(URL)] == [other.variant]
    assert await read(a, other) == b"fine"


async def test_a_hot_copy_outlives_damage_to_the_disk_copy(directory: Path, a: TieredStore) -> None:
    # The memory copy was whole when read and nothing replaced it: serving
    # it is serving the stored response. A cold worker finds the damage.
    kit = DiskKit(directory.parent)
    stored = await put(a, make_entry(URL), body_of(100))
    await warm(a)
    assert await kit.damage_body(stored, "truncate")
    assert await read(a, stored) == body_of(100)


# -- the rest of the surface --------------------------------------------------------


async def test_stats_are_the_shared_totals_and_memory_stats_this_workers_tier(
    a: TieredStore, b: TieredStore
) -> None:
    await put(a, make_entry(URL), b"12345")
    await warm(a)
    assert await a.stats() == await a.disk.stats() == await b.stats()
    assert (await a.stats())["entries"] == 1
    mem = a.memory_stats()
    assert (mem["memory_keys"], mem["memory_bodies"]) == (1, 1)
    assert mem["memory_bytes"] >= 5
    assert b.memory_stats()["memory_keys"] == 0


async def test_prebuilt_follows_the_hot_entry(a: TieredStore, clock: FakeClock) -> None:
    await put(a, make_entry(URL, request_time=clock()))
    [entry] = await warm(a)
    built: list[Entry] = []

    def build(e: Entry) -> tuple[tuple[str, str], ...]:
        built.append(e)
        return tuple(e.fields.items())

    block = a.prebuilt(entry, build)
    [again] = await a.lookup(URL)
    assert a.prebuilt(again, build) is block
    assert len(built) == 1
    clock.advance(1)
    await _update(a, entry, clock)  # a 304 changed it: the block is rebuilt
    [fresh] = await a.lookup(URL)
    assert a.prebuilt(fresh, build) != block
    assert built[-1] is fresh


async def test_open_fails_cleanly_and_closes_the_disk_store(directory: Path) -> None:
    disk = await SpiedDiskStore.open(str(directory))
    (directory / "generation").mkdir()  # not a file we can map
    with pytest.raises(Exception, match="generation"):
        await TieredStore.open(disk)
    assert disk._closed


# -- a 304's refresh stays hot in the worker that made it ------------------------


async def test_an_update_keeps_the_key_hot_where_it_was_made(
    a: TieredStore, b: TieredStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 9111 4.3.4: the refreshed entry replaces the stored one. The worker
    that stored it keeps serving it from memory (a revalidated key's next hit
    makes no disk call); every other worker drops its copy and reads the disk."""
    stored = await put(a, make_entry(URL, request_time=clock()), b"body")
    await warm(a)
    await warm(b)
    clock.advance(5)
    merged = stored.with_changes(request_time=clock(), response_time=clock())
    assert await a.update(merged)
    disk = DiskCalls(monkeypatch, a)
    [found] = await a.lookup(URL)
    assert await read(a, found) == b"body"
    assert disk.calls == []
    assert found == merged == (await b.disk.lookup(URL))[0]
    [seen_by_b] = await b.lookup(URL)
    assert seen_by_b == merged


async def _synced_first(a: TieredStore, b: TieredStore) -> None:
    a.hot_entries(OTHER)  # a read syncs our record: noted as ours, it drops nothing


async def _synced_before_noted(a: TieredStore, b: TieredStore) -> None:
    # A read on the loop between the pool thread's publish and its note of
    # the record as ours: the read drops the key, as for anyone's record.
    noted, a._applying = a._applying, set()
    a.hot_entries(OTHER)
    a._applying = noted


async def _refreshed_by_b(a: TieredStore, b: TieredStore) -> None:
    [e] = await b.disk.lookup(URL)
    await b.update(e.with_changes(response_time=e.response_time + 1))


# While the refresh's disk job runs: (what happens, whether the key stays hot
# in the worker that made it, whether in place: the very Body object kept).
Meanwhile = Callable[[TieredStore, TieredStore], Awaitable[None]] | None
MEANWHILE: dict[str, tuple[Meanwhile, bool, bool]] = {
    "nothing": (None, True, True),
    "a-read-synced-our-record": (_synced_first, True, True),
    "a-read-synced-it-before-noted": (_synced_before_noted, True, False),  # put back as held
    "another-worker-refreshed-it": (_refreshed_by_b, False, False),  # not ours to keep
}


@pytest.mark.parametrize("meanwhile", MEANWHILE.values(), ids=MEANWHILE.keys())
async def test_what_an_update_leaves_hot(
    a: TieredStore,
    b: TieredStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: tuple[Meanwhile, bool, bool],
) -> None:
    act, hot, in_place = meanwhile
    stored = await put(a, make_entry(URL, request_time=clock()), b"body")
    await put(a, make_entry(OTHER))
    await warm(a)
    await warm(a, OTHER)
    clock.advance(5)
    merged = stored.with_changes(request_time=clock(), response_time=clock())
    body_before = a.hot_body(stored)
    real = a.disk.update_stored

    async def update_stored(entry: Entry, then: Any = None) -> Entry | None:
        got = await real(entry, then)
        if act is not None:
            await act(a, b)
        return got

    monkeypatch.setattr(a.disk, "update_stored", update_stored)
    assert await a.update(merged)
    monkeypatch.undo()
    disk = DiskCalls(monkeypatch, a)
    found = await a.lookup(URL)
    assert disk.calls == ([] if hot else ["lookup"])
    assert found == await a.disk.lookup(URL)
    assert (a.hot_body(found[0]) is body_before) == in_place
    assert await read(a, found[0]) == b"body"
    stats = a.memory_stats()
    assert stats["memory_bodies"] == 2  # OTHER's, and URL's kept or read again
    assert a._mem.nbytes == sum(x.nbytes for x in a._mem._keys.values())


async def test_updates_in_one_batch_each_stay_in_place(
    a: TieredStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refreshes batched in one transaction publish a record each: each
    writer applies its own, none drops the others' keys."""
    urls = [f"{URL}?k={i}" for i in range(4)]
    stored = [await put(a, make_entry(u, request_time=clock()), b"body") for u in urls]
    for u in urls:
        await warm(a, u)  # a key's first read brings it into memory
    before = [a.hot_body(e) for e in stored]
    assert all(before)
    clock.advance(5)
    batches: list[int] = []
    real = a.disk._update_batch

    def counted(batch: Any) -> Any:
        batches.append(len(batch))
        return real(batch)

    monkeypatch.setattr(a.disk, "_update_batch", counted)
    merged = [e.with_changes(request_time=clock(), response_time=clock()) for e in stored]
    assert all(await asyncio.gather(*(a.update(m) for m in merged)))
    assert max(batches) > 1
    disk = DiskCalls(monkeypatch, a)
    for m, body in zip(merged, before, strict=True):
        assert await a.lookup(m.key) == [m]
        assert a.hot_body(m) is body  # replaced in place, not dropped and put back
    assert disk.calls == []


async def test_a_failed_batch_of_updates_leaves_no_record_to_apply(
    a: TieredStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails is retried entry by entry, and its publishes run
    again: every record this worker noted as its own is applied, none left."""
    urls = [f"{URL}?k={i}" for i in range(4)]
    stored = [await put(a, make_entry(u, request_time=clock()), b"body") for u in urls]
    real = a.disk._update_row

    def broken_for_2(sql: Any, entry: Entry, bans: Any) -> Any:
        if entry.key.endswith("k=2"):
            raise sqlite3.IntegrityError("not this one")
        return real(sql, entry, bans)

    monkeypatch.setattr(a.disk, "_update_row", broken_for_2)
    clock.advance(5)
    merged = [e.with_changes(request_time=clock(), response_time=clock()) for e in stored]
    got = await asyncio.gather(*(a.update(m) for m in merged), return_exceptions=True)
    assert [type(g).__name__ for g in got] == ["bool", "bool", "StoreError", "bool"]
    assert a._applying == set()
    monkeypatch.undo()
    for i, m in enumerate(merged):
        assert await a.lookup(m.key) == await a.disk.lookup(m.key)
        assert (await a.lookup(m.key) == [m]) == (i != 2)


async def test_an_update_under_a_soft_purge_is_kept_as_the_disk_keeps_it(
    a: TieredStore, b: TieredStore, clock: FakeClock
) -> None:
    """A soft purge issued after the request the refresh answers marks the
    stored entry stale (the disk's verdict): memory keeps that, not the
    entry as it was handed in."""
    stored = await put(a, make_entry(URL, request_time=clock(), tags=("t",)), b"body")
    await warm(a)
    request_time = clock()
    clock.advance(1)
    assert await b.purge(Purge(PurgeTags(("t",)), soft=True, issued_at=clock())) == 1
    await warm(a)
    merged = stored.with_changes(request_time=request_time, response_time=clock())
    assert await a.update(merged)
    [found] = await a.lookup(URL)
    assert found.soft_purged
    assert [found] == await a.disk.lookup(URL)


# -- a refresh that changed only Date may stay in memory (REFRESH_LAG) -----------


def _refreshed(e: Entry, at: float, **fields: str) -> Entry:
    """`e` as merge_304 leaves it after a 304 received at `at`: a new Date
    (HTTP-date, whole seconds), the exchange's times, any other `fields`."""
    new = CIMultiDict(e.fields)
    new["Date"] = format_http_date(at)
    for name, value in fields.items():
        new[name.replace("_", "-")] = value
    return e.with_changes(fields=CIMultiDictProxy(new), request_time=at - 0.1, response_time=at)


def _dated(key: str, at: float = T0, **kwargs: Any) -> Entry:
    """A stored response with a Date, as origins send them."""
    fields = {"Cache-Control": "max-age=60", "ETag": '"v1"', "Date": format_http_date(at)}
    return make_entry(key, request_time=at, fields=fields, **kwargs)


# (after how long the 304 arrives, the fields it changed besides Date,
# whether the refresh reached the disk)
REFRESHES: dict[str, tuple[float, dict[str, str], bool]] = {
    "only-date-within-the-lag": (0.5, {}, False),
    "only-date-at-the-lag": (REFRESH_LAG, {}, False),
    "only-date-past-the-lag": (REFRESH_LAG + 0.5, {}, True),
    "a-field-changed": (0.5, {"Cache_Control": "max-age=600"}, True),
    "an-age-came-with-it": (0.5, {"Age": "3"}, True),
}


@pytest.mark.parametrize("refresh", REFRESHES.values(), ids=REFRESHES.keys())
async def test_a_refresh_reaches_the_disk_unless_only_its_date_changed_within_the_lag(
    a: TieredStore,
    b: TieredStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    refresh: tuple[float, dict[str, str], bool],
) -> None:
    after, changed, written = refresh
    await put(a, _dated(URL, clock()), b"body")
    [stored] = await warm(a)
    await warm(b)
    merged = _refreshed(stored, stored.response_time + after, **changed)
    disk = DiskCalls(monkeypatch, a)
    assert await a.update(merged)
    assert await a.lookup(URL) == [merged]  # this worker serves the refresh
    assert await read(a, merged) == b"body"
    assert disk.calls == []
    on_disk = await a.disk.lookup(URL)
    assert on_disk == ([merged] if written else [stored])
    # Another worker reads what the disk holds: the refresh, or the copy
    # validated at most REFRESH_LAG before it.
    [seen_by_b] = await b.lookup(URL)
    assert seen_by_b == on_disk[0]
    assert merged.response_time - seen_by_b.response_time <= REFRESH_LAG


@settings(max_examples=40, deadline=None)
@given(gaps=st.lists(st.floats(0, 2.5, allow_nan=False), min_size=1, max_size=12))
def test_the_disk_copy_never_trails_by_more_than_the_lag(gaps: list[float]) -> None:
    """Whatever the spacing of timing-only refreshes, the disk's copy was
    validated at most REFRESH_LAG before the newest, which memory serves."""

    async def run(directory: Path) -> None:
        s = await open_tiered(directory)
        try:
            stored = await put(s, _dated(URL), b"body")
            [current] = await warm(s)
            for gap in gaps:
                current = _refreshed(current, current.response_time + gap)
                assert await s.update(current)
                assert await s.lookup(URL) == [current]
                [on_disk] = await s.disk.lookup(URL)
                assert current.response_time - on_disk.response_time <= REFRESH_LAG
                assert on_disk.response_time >= stored.response_time
                held = s._mem.held(URL, current.variant)
                assert held is not None and held[1] == on_disk.response_time
        finally:
            await s.close()

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(Path(directory)))


async def test_a_variant_put_back_keeps_its_unwritten_refresh(
    a: TieredStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key's list put back after another variant's write (a read synced
    that write's record before it was noted) still knows which refresh the
    disk has not seen: the lag stays measured from the disk's copy."""
    await put(a, _dated(URL, clock(), vary=("x",), secondary=("1",)), b"x")
    await put(a, _dated(URL, clock(), vary=("x",), secondary=("2",)), b"y")
    [x, y] = await warm(a)
    x2 = _refreshed(x, x.response_time + 0.6)
    assert await a.update(x2)  # stays in memory
    real = a.disk.update_stored

    async def update_stored(entry: Entry, then: Any = None) -> Entry | None:
        got = await real(entry, then)
        await _synced_before_noted(a, a)
        return got

    monkeypatch.setattr(a.disk, "update_stored", update_stored)
    y2 = _refreshed(y, y.response_time + 5)
    assert await a.update(y2)  # written; the key dropped and put back as held
    monkeypatch.undo()
    assert await a.lookup(URL) == [x2, y2]
    held = a._mem.held(URL, x.variant)
    assert held is not None and held[1] == x.response_time
    x3 = _refreshed(x2, x.response_time + 1.2)  # 1.2 s after the disk's copy of x
    assert await a.update(x3)
    assert await a.disk.lookup(URL) == [x3, y2]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.lists(st.sampled_from([ALL, 11, 12, 13]), min_size=1, max_size=3),  # a publish
            st.just("sync"),
        ),
        max_size=14,
    ),
    since=st.integers(0, 25),
    h=st.sampled_from([11, 12, 13]),
    own=st.integers(0, 25),
)
# Found by hypothesis: the one record since is "our own" and names everything.
@example(steps=[[ALL]], since=0, h=11, own=1)
def test_admit_says_what_the_records_since_imply(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[list[int] | str],
    since: int,
    h: int,
    own: int,
) -> None:
    # _admit answers from what _sync noted; the reference reads the ring.
    async def run() -> None:
        store = await open_tiered(tmp_path_factory.mktemp("t") / "cache")
        try:
            gen = store._gen
            start = gen.current()
            for step in steps:
                if step == "sync":
                    store._sync()
                else:
                    gen.publish(step)
            got = store._admit(h, start + min(since, gen.current() - start), own and start + own)
            at = start + min(since, gen.current() - start)
            changes = gen.changes(at, gen.current())
            # A record naming everything refuses whoever published it (a
            # write of our own names its key, never everything); one naming
            # the key refuses unless it is our own.
            expected = at == gen.current() or (
                changes is not None
                and not any(c == ALL or (c == h and g != (own and start + own)) for g, c in changes)
            )
            assert got == expected
        finally:
            await store.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("records", "since", "own", "admit"),
    [
        ([[11], [11]], 0, 2, False),  # ours is the last, but another named it before
        ([[11], [11]], 1, 2, True),  # only ours since
        ([[11], [12]], 0, 0, False),
        ([[12], [13]], 0, 0, True),  # other keys only
        ([[ALL], [12]], 0, 0, False),  # everything changed
        ([[12], [ALL]], 2, 0, True),
    ],
)
async def test_admit_table(
    directory: Path, records: list[list[int]], since: int, own: int, admit: bool
) -> None:
    store = await open_tiered(directory)
    try:
        start = store._gen.current()
        for r in records:
            store._gen.publish(r)
        assert store._admit(11, start + since, own and start + own) == admit
    finally:
        await store.close()
