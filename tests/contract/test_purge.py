"""Purges, bans and listings (issue 4), run against every kit in kits.KITS.

What a target covers is `edgeproxy.purge.matches` (its own table is in
tests/unit/store/test_purge_match.py); here each store must agree with it,
hard, soft and dry-run, and keep its tag index right through replace,
delete, restart and Vary variants.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgeproxy.policy.entry import Entry
from edgeproxy.purge import Purge, PurgeAll, PurgePrefix, PurgeTags, PurgeURL, Target, matches
from edgeproxy.store.base import Banned, Store
from tests.conftest import FakeClock
from tests.contract.helpers import make_entry, put, read, variants
from tests.contract.kits import StoreKit


@dataclass(frozen=True)
class Item:
    key: str
    tags: tuple[str, ...] = ()
    vary: tuple[str, ...] = ()
    secondary: tuple[str | None, ...] = ()


A = "http://a.example"
CORPUS = [
    Item(f"{A}/", ("home",)),
    Item(f"{A}/img", ()),  # not under the prefix "/img/"
    Item(f"{A}/img/1.png", ("img", "product-1")),
    Item(f"{A}/img/2.png", ("img", "product-2")),
    Item(f"{A}/page?x=1", ("product-1",)),
    Item(f"{A}/page?x=1#lang=fr", ("product-1", "fr")),  # route key extras
    Item(f"{A}/page?x=12", ("product-1",)),  # a URL purge of ?x=1 must not take it
    Item(f"{A}/v", ("v", "gz"), ("accept-encoding",), ("gzip",)),  # two Vary variants
    Item(f"{A}/v", ("v",), ("accept-encoding",), ("br",)),
    Item("https://a.example/secure", ("img",)),
    Item("http://a.example:8080/alt", ("home",)),
    Item("http://a.example.evil/", ("home",)),
    Item("http://b.example/", ("home", "img")),
]

TARGETS: list[Target] = [
    PurgeURL(f"{A}/page?x=1"),  # with its #extras key, not ?x=12
    PurgeURL(f"{A}/v"),  # every Vary variant
    PurgeURL(f"{A}/nothing"),
    PurgePrefix(f"{A}/img/"),
    PurgePrefix(f"{A}/"),
    PurgePrefix(""),
    PurgeTags(("img",)),
    PurgeTags(("gz",)),  # one Vary variant of two
    PurgeTags(("product-1", "product-2")),
    PurgeTags(("img", "product-1", "img")),  # overlapping tags count each variant once
    PurgeTags(("nope",)),
    PurgeTags(()),
    PurgeAll(),
    PurgeAll("a.example"),  # http and https, not :8080, not a.example.evil
    PurgeAll("A.Example:80"),  # normalised as keys are
    PurgeAll("nowhere.example"),
]


async def fill(store: Store, request_time: float) -> list[Entry]:
    return [
        await put(
            store,
            make_entry(
                it.key,
                request_time=request_time,
                tags=it.tags,
                vary=it.vary,
                secondary=it.secondary,
            ),
            it.key.encode(),
        )
        for it in CORPUS
    ]


async def snapshot(store: Store) -> dict[str, Entry]:
    return {e.variant: e for key in {it.key for it in CORPUS} for e in await store.lookup(key)}


def test_the_corpus_exercises_every_target() -> None:
    # Guards the table itself: most targets take some entries and spare others.
    for target in TARGETS:
        hit = [it for it in CORPUS if matches(target, it.key, it.tags)]
        assert len(hit) < len(CORPUS) or target in (PurgePrefix(""), PurgeAll())


@pytest.mark.parametrize("target", TARGETS, ids=repr)
@pytest.mark.parametrize("mode", ["hard", "soft", "dry-run"])
async def test_purge_takes_exactly_what_the_target_matches(
    store: Store, clock: FakeClock, target: Target, mode: str
) -> None:
    stored = await fill(store, clock())
    expected = {e.variant for e in stored if matches(target, e.key, e.tags)}
    clock.advance(1)
    purge = Purge(target, soft=mode == "soft", dry_run=mode == "dry-run", issued_at=clock())
    assert await store.purge(purge) == len(expected)
    after = await snapshot(store)
    if mode == "hard":
        assert set(after) == {e.variant for e in stored} - expected
        for e in stored:
            if e.variant in expected:
                assert await read(store, e) is None
    else:
        assert set(after) == {e.variant for e in stored}
    soft = {v for v, e in after.items() if e.soft_purged}
    assert soft == (expected if mode == "soft" else set())
    assert (await store.stats())["entries"] == len(after)
    for e in after.values():
        assert await read(store, e) == e.key.encode()  # survivors whole, soft ones too


async def test_soft_purge_counts_already_soft_entries_again(store: Store, clock: FakeClock) -> None:
    await fill(store, clock())
    clock.advance(1)
    first = await store.purge(Purge(PurgeTags(("img",)), soft=True, issued_at=clock()))
    again = await store.purge(Purge(PurgeTags(("img",)), soft=True, issued_at=clock()))
    assert first == again == 4


async def test_soft_purged_entry_is_freshened_by_a_later_update(
    store: Store, clock: FakeClock
) -> None:
    stored = await put(store, make_entry(A + "/", request_time=clock(), tags=("home",)))
    clock.advance(1)
    await store.purge(Purge(PurgeURL(A + "/"), soft=True, issued_at=clock()))
    [found] = await store.lookup(A + "/")
    assert found.soft_purged
    clock.advance(1)  # a revalidation that started after the purge (RFC 9111 section 4.3.4)
    merged = found.with_changes(request_time=clock(), response_time=clock(), soft_purged=False)
    assert await store.update(merged)
    [found] = await store.lookup(A + "/")
    assert not found.soft_purged
    assert found.variant == stored.variant


# -- the tag index ------------------------------------------------------------


async def test_tag_index_follows_a_replacing_commit(store: Store) -> None:
    old = await put(store, make_entry(A + "/", tags=("a", "b")))
    new = await put(store, make_entry(A + "/", tags=("b", "c")))
    assert await store.entries(tag="a") == []
    assert [e.variant for e in await store.entries(tag="b")] == [new.variant]
    assert [e.variant for e in await store.entries(tag="c")] == [new.variant]
    assert await store.purge(Purge(PurgeTags(("a",)), dry_run=True)) == 0
    assert await store.purge(Purge(PurgeTags(("c",)))) == 1
    assert await store.lookup(A + "/") == []
    assert await read(store, old) is None


async def test_tag_index_follows_an_update_that_changes_tags(store: Store) -> None:
    stored = await put(store, make_entry(A + "/", tags=("a", "b")))
    assert await store.update(stored.with_changes(tags=("b", "c")))
    assert await store.entries(tag="a") == []
    assert [e.tags for e in await store.entries(tag="c")] == [("b", "c")]
    assert await store.purge(Purge(PurgeTags(("a",)))) == 0
    assert await store.purge(Purge(PurgeTags(("c",)))) == 1


@pytest.mark.parametrize("how", ["delete", "delete_variant", "url-purge"])
async def test_tag_index_forgets_deleted_entries(store: Store, how: str) -> None:
    stored = await put(store, make_entry(A + "/", tags=("a",)))
    kept = await put(store, make_entry(A + "/other", tags=("a",)))
    if how == "delete":
        await store.delete(A + "/")
    elif how == "delete_variant":
        await store.delete_variant(stored)
    else:
        await store.purge(Purge(PurgeURL(A + "/")))
    assert [e.variant for e in await store.entries(tag="a")] == [kept.variant]
    assert await store.purge(Purge(PurgeTags(("a",)), dry_run=True)) == 1


async def test_tag_index_survives_restart(kit: StoreKit) -> None:
    if not kit.persistent:
        pytest.skip(f"{kit.name} keeps nothing across restarts")
    store = await kit.open()
    try:
        await put(store, make_entry(A + "/1", tags=("a", "b")))
        await put(store, make_entry(A + "/2", tags=("b",)))
    finally:
        await store.close()
    store = await kit.open()
    try:
        assert len(await store.entries(tag="b")) == 2
        assert await store.purge(Purge(PurgeTags(("a",)))) == 1
        assert [e.key for e in await store.entries(tag="b")] == [A + "/2"]
    finally:
        await store.close()


async def test_tags_of_vary_variants_are_kept_apart(store: Store) -> None:
    gz = await put(store, make_entry(A + "/v", tags=("v", "gz"), vary=("ae",), secondary=("gzip",)))
    br = await put(store, make_entry(A + "/v", tags=("v", "br"), vary=("ae",), secondary=("br",)))
    assert await store.purge(Purge(PurgeTags(("gz",)))) == 1
    assert await variants(store, A + "/v") == {br.variant}
    assert [e.variant for e in await store.entries(tag="v")] == [br.variant]
    assert await read(store, gz) is None


async def test_purging_one_tag_leaves_other_tags_rows_alone(store: Store, clock: FakeClock) -> None:
    both = await put(store, make_entry(A + "/both", tags=("a", "b")))
    only_b = await put(store, make_entry(A + "/b", tags=("b",)))
    only_a = await put(store, make_entry(A + "/a", tags=("a",)))
    assert await store.purge(Purge(PurgeTags(("a",)), soft=True, issued_at=clock())) == 2
    listed = await store.entries(tag="b")
    assert [(e.variant, e.soft_purged) for e in listed] == [  # key order: /b < /both
        (only_b.variant, False),
        (both.variant, True),
    ]
    assert await store.purge(Purge(PurgeTags(("a",)), issued_at=clock())) == 2
    assert [e.variant for e in await store.entries(tag="b")] == [only_b.variant]
    assert await store.entries(tag="a") == []
    assert await read(store, only_a) is None


# -- bans: a purge kills fills that raced it (purge.py) -----------------------

RACES: list[tuple[Target, bool]] = [
    (PurgeURL(A + "/r"), True),
    (PurgeURL(A + "/other"), False),
    (PurgePrefix(A + "/"), True),
    (PurgePrefix("http://b.example/"), False),
    (PurgeTags(("x", "r")), True),
    (PurgeTags(("x",)), False),
    (PurgeAll(), True),
    (PurgeAll("a.example"), True),
    (PurgeAll("b.example"), False),
]


@pytest.mark.parametrize(("target", "hits"), RACES, ids=[repr(t) for t, _ in RACES])
async def test_hard_purge_refuses_a_fill_that_raced_it(
    store: Store, kit: StoreKit, clock: FakeClock, target: Target, hits: bool
) -> None:
    request_time = clock()  # the fill is sent upstream...
    writer = store.open_writer(A + "/r")
    await writer.write(b"before the purge")
    clock.advance(1)
    assert await store.purge(Purge(target, issued_at=clock())) == 0  # ...the purge lands...
    entry = make_entry(A + "/r", request_time=request_time, tags=("r",))
    if hits:  # ...and the response, generated before it, must not be stored
        with pytest.raises(Banned):
            await writer.commit(entry)
        assert await store.lookup(A + "/r") == []
        assert (await store.stats())["entries"] == 0
    else:
        await writer.commit(entry)
        assert len(await store.lookup(A + "/r")) == 1
    assert kit.leftovers() == []


async def test_ban_refuses_a_racing_fill_of_a_large_body(
    store: Store, kit: StoreKit, clock: FakeClock
) -> None:
    request_time = clock()
    writer = store.open_writer(A + "/r")
    await writer.write(b"x" * 300_000)
    clock.advance(1)
    await store.purge(Purge(PurgeURL(A + "/r"), issued_at=clock()))
    with pytest.raises(Banned):
        await writer.commit(make_entry(A + "/r", request_time=request_time))
    assert kit.leftovers() == []
    assert (await store.stats())["entries"] == 0


async def test_soft_purge_stores_a_racing_fill_already_stale(
    store: Store, clock: FakeClock
) -> None:
    request_time = clock()
    clock.advance(1)
    await store.purge(Purge(PurgeTags(("r",)), soft=True, issued_at=clock()))
    stored = await put(store, make_entry(A + "/r", request_time=request_time, tags=("r",)))
    assert stored.soft_purged
    [found] = await store.lookup(A + "/r")
    assert found.soft_purged


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
async def test_fill_started_after_the_purge_is_stored_fresh(
    store: Store, clock: FakeClock, soft: bool
) -> None:
    await store.purge(Purge(PurgeURL(A + "/r"), soft=soft, issued_at=clock()))
    clock.advance(1)
    stored = await put(store, make_entry(A + "/r", request_time=clock()))
    assert not stored.soft_purged
    [found] = await store.lookup(A + "/r")
    assert not found.soft_purged


async def test_dry_run_records_no_ban(store: Store, clock: FakeClock) -> None:
    request_time = clock()
    clock.advance(1)
    await store.purge(Purge(PurgeAll(), dry_run=True, issued_at=clock()))
    await put(store, make_entry(A + "/r", request_time=request_time))
    assert len(await store.lookup(A + "/r")) == 1


async def test_soft_ban_keeps_a_racing_304_stale(store: Store, clock: FakeClock) -> None:
    stored = await put(store, make_entry(A + "/r", request_time=clock(), tags=("r",)))
    revalidation_sent = clock()
    clock.advance(1)
    await store.purge(Purge(PurgeTags(("r",)), soft=True, issued_at=clock()))
    clock.advance(1)
    merged = stored.with_changes(
        request_time=revalidation_sent, response_time=clock(), soft_purged=False
    )
    assert await store.update(merged) is True
    [found] = await store.lookup(A + "/r")
    assert found.soft_purged
    assert found.response_time == clock()


async def test_hard_ban_refuses_a_racing_304(store: Store, clock: FakeClock) -> None:
    # The entry was committed after the purge by a fill that started after
    # it; a revalidation sent before the purge then must not freshen it.
    revalidation_sent = clock()
    clock.advance(1)
    await store.purge(Purge(PurgeURL(A + "/r"), issued_at=clock()))
    clock.advance(1)
    stored = await put(store, make_entry(A + "/r", request_time=clock()))
    assert await store.update(stored.with_changes(request_time=revalidation_sent)) is False
    assert await store.lookup(A + "/r") == []


# -- listing --------------------------------------------------------------------


async def test_entries_in_key_order_by_prefix_tag_and_limit(store: Store, clock: FakeClock) -> None:
    await fill(store, clock())
    keys = sorted(it.key for it in CORPUS)
    assert [e.key for e in await store.entries(limit=1000)] == keys
    assert [e.key for e in await store.entries(limit=3)] == keys[:3]
    assert await store.entries(limit=0) == []
    assert [e.key for e in await store.entries(prefix=A + "/img/")] == [
        A + "/img/1.png",
        A + "/img/2.png",
    ]
    assert [e.key for e in await store.entries(tag="img")] == sorted(
        it.key for it in CORPUS if "img" in it.tags
    )
    assert [e.key for e in await store.entries(prefix=A + "/", tag="img")] == [
        A + "/img/1.png",
        A + "/img/2.png",
    ]
    assert [e.key for e in await store.entries(tag="img", limit=1)] == [A + "/img/1.png"]
    assert await store.entries(prefix="http://nowhere/") == []
    assert await store.entries(tag="nope") == []


async def test_entries_show_soft_purge_marks(store: Store, clock: FakeClock) -> None:
    await fill(store, clock())
    await store.purge(Purge(PurgeURL(f"{A}/v"), soft=True, issued_at=clock()))
    listed = await store.entries(prefix=f"{A}/v")
    assert [(e.key, e.soft_purged) for e in listed] == [(f"{A}/v", True)] * 2
