"""The Store contract (store/base.py), run against every kit in kits.KITS."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.store.base import Store, StoreError
from tests.conftest import FakeClock
from tests.contract.helpers import body_of, make_entry, put, read, variants
from tests.contract.kits import SPILL, StoreKit

URL = "http://a.example/page?x=1"
SMALL = 100
MID = 40 * 1024  # above diskcache's 32 KiB inline limit, below the spill threshold
LARGE = 3 * SPILL  # a temp file while written, a file when stored
assert LARGE > 32 * 1024

SIZES = pytest.mark.parametrize(
    "size", [0, SMALL, MID, LARGE], ids=["empty", "inline", "file-from-memory", "file-spilled"]
)


async def test_lookup_of_unknown_key_is_empty(store: Store) -> None:
    assert await store.lookup(URL) == []


async def test_commit_stores_entry_with_its_metadata(store: Store, clock: FakeClock) -> None:
    entry = make_entry(
        URL,
        request_time=clock(),
        tags=("t1", "t2"),
        vary=("accept-encoding",),
        secondary=("gzip",),
    )
    stored = await put(store, entry, b"abc")
    assert stored.variant
    assert stored.body_size == 3
    assert stored.key == URL
    [found] = await store.lookup(URL)
    assert found == stored
    assert found.fields["etag"] == '"v1"'
    assert (found.request_time, found.response_time) == (clock(), clock() + 0.5)
    assert (found.vary, found.secondary, found.tags) == (
        ("accept-encoding",),
        ("gzip",),
        ("t1", "t2"),
    )
    assert found.targeted == entry.targeted
    assert not found.soft_purged


async def test_commit_takes_key_from_writer(store: Store) -> None:
    writer = store.open_writer(URL)
    await writer.write(b"x")
    stored = await writer.commit(make_entry("http://elsewhere/"))
    assert stored.key == URL
    assert await variants(store, URL) == {stored.variant}
    assert await store.lookup("http://elsewhere/") == []


@SIZES
async def test_open_body_returns_what_was_written(store: Store, size: int) -> None:
    data = body_of(size)
    stored = await put(store, make_entry(URL), data)
    assert stored.body_size == size
    [found] = await store.lookup(URL)
    assert await read(store, found) == data
    assert await read(store, found) == data  # reading doesn't consume the entry


@SIZES
async def test_abort_leaves_nothing(store: Store, kit: StoreKit, size: int) -> None:
    writer = store.open_writer(URL)
    await writer.write(body_of(size))
    await writer.abort()
    assert await store.lookup(URL) == []
    assert kit.leftovers() == []
    assert (await store.stats())["entries"] == 0


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["inline", "file-spilled"])
async def test_commit_leaves_no_temp_file(store: Store, kit: StoreKit, size: int) -> None:
    await put(store, make_entry(URL), body_of(size))
    assert kit.leftovers() == []


async def test_a_closed_writer_refuses_more(store: Store) -> None:
    writer = store.open_writer(URL)
    await writer.write(b"x")
    await writer.commit(make_entry(URL))
    with pytest.raises(StoreError):
        await writer.commit(make_entry(URL))
    aborted = store.open_writer(URL)
    await aborted.abort()
    with pytest.raises(StoreError):
        await aborted.write(b"y")
    with pytest.raises(StoreError):
        await aborted.commit(make_entry(URL))
    assert len(await store.lookup(URL)) == 1


# RFC 9111 section 4.1: a stored response is selected by its Vary names and
# the request's values for them; a new response with the same names and
# values takes that response's place, others stay side by side.
async def test_commit_replaces_same_vary_and_keeps_other_variants(store: Store) -> None:
    gzip1 = await put(store, make_entry(URL, vary=("accept-encoding",), secondary=("gzip",)), b"g1")
    br = await put(store, make_entry(URL, vary=("accept-encoding",), secondary=("br",)), b"br")
    absent = await put(store, make_entry(URL, vary=("accept-encoding",), secondary=(None,)), b"no")
    plain = await put(store, make_entry(URL), b"plain")  # no Vary at all: a different selection
    gzip2 = await put(store, make_entry(URL, vary=("accept-encoding",), secondary=("gzip",)), b"g2")
    assert await variants(store, URL) == {br.variant, absent.variant, plain.variant, gzip2.variant}
    assert await read(store, gzip1) is None  # the replaced body is gone too
    assert await read(store, gzip2) == b"g2"
    assert await read(store, br) == b"br"
    assert (await store.stats())["entries"] == 4


async def test_commit_replaces_unvaried_response(store: Store) -> None:
    first = await put(store, make_entry(URL), b"one")
    second = await put(store, make_entry(URL), b"two")
    [found] = await store.lookup(URL)
    assert found.variant == second.variant != first.variant
    assert await read(store, found) == b"two"


async def test_lookup_lists_variants_oldest_first(store: Store) -> None:
    a = await put(store, make_entry(URL, vary=("x",), secondary=("a",)))
    b = await put(store, make_entry(URL, vary=("x",), secondary=("b",)))
    c = await put(store, make_entry(URL, vary=("x",), secondary=("c",)))
    assert [e.variant for e in await store.lookup(URL)] == [a.variant, b.variant, c.variant]


# RFC 9111 section 4.3.4: a 304 freshens the stored response's metadata.
async def test_update_after_304_replaces_metadata_and_keeps_body(
    store: Store, clock: FakeClock
) -> None:
    stored = await put(store, make_entry(URL, request_time=clock()), b"body")
    clock.advance(100)
    fields = CIMultiDict(stored.fields)
    fields["Cache-Control"] = "max-age=600"
    merged = stored.with_changes(
        fields=CIMultiDictProxy(fields), request_time=clock(), response_time=clock() + 1
    )
    assert await store.update(merged) is True
    [found] = await store.lookup(URL)
    assert found == merged
    assert found.fields["cache-control"] == "max-age=600"
    assert await read(store, found) == b"body"


async def test_update_of_a_gone_variant_is_false(store: Store) -> None:
    stored = await put(store, make_entry(URL))
    await store.delete(URL)
    assert await store.update(stored) is False
    assert await store.lookup(URL) == []


async def test_delete_removes_every_variant_of_the_url(store: Store) -> None:
    for value in ("a", "b", "c"):
        await put(store, make_entry(URL, vary=("x",), secondary=(value,)))
    extras = await put(store, make_entry(URL + "#lang=fr"))  # cachekey.key_extras
    other = await put(store, make_entry(URL + "2"))
    assert await store.delete(URL) == 4
    assert await store.lookup(URL) == []
    assert await store.lookup(URL + "#lang=fr") == []
    assert await read(store, extras) is None
    assert await variants(store, URL + "2") == {other.variant}
    assert await store.delete(URL) == 0
    assert (await store.stats())["entries"] == 1


async def test_delete_variant_removes_only_that_one(store: Store) -> None:
    a = await put(store, make_entry(URL, vary=("x",), secondary=("a",)), b"a")
    b = await put(store, make_entry(URL, vary=("x",), secondary=("b",)), b"b")
    await store.delete_variant(a)
    assert await variants(store, URL) == {b.variant}
    assert await read(store, a) is None
    assert await read(store, b) == b"b"
    await store.delete_variant(a)  # already gone: no error


# A corrupt entry is a miss, never an exception (models.md habit 6).
@pytest.mark.parametrize(
    ("size", "how"),
    [(SMALL, "truncate"), (LARGE, "truncate"), (LARGE, "remove"), (MID, "remove")],
    ids=["inline-short", "file-short", "file-missing", "small-file-missing"],
)
async def test_damaged_body_is_a_miss_and_the_variant_goes(
    store: Store, kit: StoreKit, size: int, how: str
) -> None:
    other = await put(store, make_entry(URL, vary=("x",), secondary=("ok",)), b"fine")
    stored = await put(store, make_entry(URL, vary=("x",), secondary=("bad",)), body_of(size))
    if not await kit.damage_body(stored, how):  # type: ignore[arg-type]
        pytest.skip(f"{kit.name} can't lose a body that way")
    assert await store.open_body(stored) is None
    assert await variants(store, URL) == {other.variant}
    assert await read(store, other) == b"fine"
    assert (await store.stats())["entries"] == 1


@pytest.mark.parametrize(
    "raw",
    ["{not json", "[]", '{"v": 99}', '{"v": 1, "key": "x"}', "null"],
    ids=["not-json", "not-an-object", "unknown-version", "missing-fields", "null"],
)
async def test_unreadable_index_is_a_miss(store: Store, kit: StoreKit, raw: str) -> None:
    other = await put(store, make_entry(URL, vary=("x",), secondary=("ok",)))
    stored = await put(store, make_entry(URL, vary=("x",), secondary=("bad",), tags=("t",)))
    if not await kit.corrupt_index(stored, raw):
        pytest.skip(f"{kit.name} keeps no serialised index")
    assert await variants(store, URL) == {other.variant}
    assert await store.entries(tag="t") == []
    assert (await store.stats())["entries"] == 1
    again = await put(store, make_entry(URL, vary=("x",), secondary=("bad",)))
    assert await variants(store, URL) == {other.variant, again.variant}


async def test_entry_survives_restart(kit: StoreKit) -> None:
    if not kit.persistent:
        pytest.skip(f"{kit.name} keeps nothing across restarts")
    store = await kit.open()
    try:
        small = await put(store, make_entry(URL, vary=("x",), secondary=("s",)), b"small")
        large = await put(store, make_entry(URL, vary=("x",), secondary=("l",)), body_of(LARGE))
    finally:
        await store.close()
    store = await kit.open()
    try:
        found = {e.variant: e for e in await store.lookup(URL)}
        assert found == {small.variant: small, large.variant: large}
        assert await read(store, small) == b"small"
        assert await read(store, large) == body_of(LARGE)
        assert (await store.stats())["entries"] == 2
    finally:
        await store.close()


# Size-limit eviction runs behind our back: whatever survives must be whole,
# and the store's own views (lookup, entries, stats, purge) must agree.
async def test_eviction_keeps_the_store_consistent(kit: StoreKit) -> None:
    store = await kit.open(size_limit=1 << 20)
    try:
        stored = []
        for i in range(40):
            key = f"http://a.example/big/{i}"
            stored.append(await put(store, make_entry(key, tags=("big",)), body_of(MID, i)))
        alive = []
        for i, entry in enumerate(stored):
            for found in await store.lookup(entry.key):
                data = await read(store, found)
                if data is None:  # dropped on the way: never returned again
                    assert await store.lookup(entry.key) == []
                else:
                    assert data == body_of(MID, i)
                    alive.append(found.variant)
        assert 0 < len(alive) < len(stored), "the size limit should have evicted some"
        listed = await store.entries(prefix="http://a.example/big/", limit=1000)
        assert {e.variant for e in listed} == set(alive)
        assert {e.variant for e in await store.entries(tag="big", limit=1000)} == set(alive)
        assert (await store.stats())["entries"] == len(alive)
    finally:
        await store.close()


async def test_stats_count_variants_and_bytes(store: Store) -> None:
    empty = await store.stats()
    assert empty["entries"] == 0
    a = await put(store, make_entry(URL, vary=("x",), secondary=("a",)), body_of(LARGE))
    await put(store, make_entry(URL, vary=("x",), secondary=("b",)))
    await put(store, make_entry(URL, vary=("x",), secondary=("b",)))  # replaces
    stats = await store.stats()
    assert stats["entries"] == 2
    assert stats["bytes"] >= LARGE
    await store.delete_variant(a)
    assert (await store.stats())["entries"] == 1
