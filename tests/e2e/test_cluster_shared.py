"""The shared tier (store/shared.py) in process: two edges' stores over one real
redis-server, driven through the Store protocol with a FakeClock.

What the edge processes of test_cluster.py can't show easily: a shared copy
that raced a purge is refused by the reading edge's own bans and dropped
from Redis; tag, prefix and host purges empty the matching shared entries;
the size bound and the expiry; and Redis being gone costs misses, never an
error.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as redis

from edgeproxy.cluster import make_client
from edgeproxy.config import ClusterConfig
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.purge import Purge, PurgeAll, PurgePrefix, PurgeTags, PurgeURL
from edgeproxy.store.disk import DiskStore
from edgeproxy.store.shared import SharedTier, SharedTierStore, shared_ttl
from tests.conftest import FakeClock
from tests.contract.helpers import T0, make_entry, put, read
from tests.e2e.test_cluster import REDIS, RedisServer

pytestmark = pytest.mark.skipif(
    REDIS is None,
    reason="redis-server not found: the cluster tests need it "
    "(scripts/test installs Debian's redis-server package)",
)

INDEX = "edgeproxy:sh:i"
MAX_OBJECT = 1000


@dataclass
class Pair:
    a: SharedTierStore
    b: SharedTierStore
    redis: redis.Redis

    async def settle(self) -> None:
        """The background writes to Redis done (a bounded wait on tasks, no sleep)."""
        await self.a.drain()
        await self.b.drain()

    async def members(self) -> list[bytes]:
        got: list[bytes] = await self.redis.zrange(INDEX, 0, -1)
        return got


@pytest.fixture
async def rs(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    yield server
    await server.kill()


async def shared_store(
    tmp: Path, name: str, rs: RedisServer, clock: FakeClock
) -> tuple[SharedTierStore, redis.Redis]:
    settings = ClusterConfig(redis_url=rs.url)
    client = make_client(settings)
    disk = await DiskStore.open(str(tmp / name))
    tier = SharedTier(client, "edgeproxy", timeout=0.5)
    store = SharedTierStore(
        disk, tier, max_object=MAX_OBJECT, clock=clock, policy_for=lambda e: CachePolicy()
    )
    return store, client


@pytest.fixture
async def pair(tmp_path: Path, rs: RedisServer, clock: FakeClock) -> AsyncIterator[Pair]:
    a, ca = await shared_store(tmp_path, "a", rs, clock)
    b, cb = await shared_store(tmp_path, "b", rs, clock)
    probe = redis.Redis.from_url(rs.url)
    yield Pair(a, b, probe)
    for store, client in ((a, ca), (b, cb)):
        await store.close()
        await client.aclose()
    await probe.aclose()


KEY = "http://shop.example/p"


async def test_a_miss_on_b_is_filled_from_what_a_stored(pair: Pair) -> None:
    stored = await put(pair.a, make_entry(KEY, tags=("t",)), b"from the origin once")
    await pair.settle()
    [copied] = await pair.b.lookup(KEY)
    assert copied.key == KEY and copied.tags == ("t",)
    assert copied.request_time == stored.request_time  # ban checks see the original fill time
    assert await read(pair.b, copied) == b"from the origin once"
    assert (await pair.b.stats())["shared_hits"] == 1
    # Now B's own: a second lookup does not ask Redis.
    assert [e.variant for e in await pair.b.lookup(KEY)] == [copied.variant]
    assert (await pair.b.stats())["shared_hits"] == 1


async def test_a_shared_copy_that_raced_a_purge_is_refused_and_dropped(pair: Pair) -> None:
    # B applied a purge issued at T0 + 1; A (late) stores a fill requested at T0.
    await pair.b.purge(Purge(PurgeURL(KEY), issued_at=T0 + 1))
    await put(pair.a, make_entry(KEY, request_time=T0))
    await pair.settle()
    assert len(await pair.members()) == 1
    assert await pair.b.lookup(KEY) == []  # B's ban refuses the copy
    await pair.settle()
    assert await pair.members() == []  # and it is gone for every edge


async def test_a_fill_after_the_purge_is_shared(pair: Pair) -> None:
    await pair.b.purge(Purge(PurgeURL(KEY), issued_at=T0 + 1))
    await put(pair.a, make_entry(KEY, request_time=T0 + 2))
    await pair.settle()
    assert len(await pair.b.lookup(KEY)) == 1


@pytest.mark.parametrize(
    ("purge", "left"),
    [
        (Purge(PurgeURL(KEY), issued_at=T0 + 1), {"/d/1", "/d/2", "/other"}),
        (
            Purge(PurgeTags(("sale", "nope")), issued_at=T0 + 1),
            {"/p", "/p#accept=gzip", "/d/2", "/other"},
        ),
        (
            Purge(PurgePrefix("http://shop.example/d"), issued_at=T0 + 1),
            {"/p", "/p#accept=gzip", "/other"},
        ),
        (Purge(PurgeAll("shop.example"), soft=True, issued_at=T0 + 1), set()),
        (Purge(PurgeAll(), issued_at=T0 + 1), set()),
    ],
    ids=["url (and its #extras)", "tags", "prefix", "host (soft too)", "all"],
)
async def test_purges_empty_the_shared_tier(pair: Pair, purge: Purge, left: set[str]) -> None:
    paths = {"/p": (), "/p#accept=gzip": (), "/d/1": ("sale",), "/d/2": (), "/other": ()}
    for path, tags in paths.items():
        await put(pair.a, make_entry("http://shop.example" + path, tags=tags))
    await pair.settle()
    assert len(await pair.members()) == 5
    await pair.a.purge(purge)  # the shared part is awaited, not in the background
    expected = {"http://shop.example" + p for p in left}
    have = {m.split(b"\x00")[0].decode() for m in await pair.members()}
    assert have == expected
    if isinstance(purge.target, PurgeAll) and purge.target.host is None:
        assert await pair.redis.keys("edgeproxy:sh:t:*") == []


async def test_large_bodies_and_soft_purged_entries_are_not_shared(pair: Pair) -> None:
    await put(pair.a, make_entry(KEY), b"x" * (MAX_OBJECT + 1))
    await pair.settle()
    assert await pair.members() == []
    assert await pair.b.lookup(KEY) == []
    # A fill that raced a soft purge is stored stale here, and not shared.
    other = "http://shop.example/soft"
    await pair.a.purge(Purge(PurgeURL(other), soft=True, issued_at=T0 + 1))
    stored = await put(pair.a, make_entry(other, request_time=T0))
    assert stored.soft_purged
    await pair.settle()
    assert await pair.members() == []


async def test_the_shared_copy_expires_with_freshness_plus_retention(
    pair: Pair, clock: FakeClock
) -> None:
    entry = make_entry(KEY)  # max-age=60 and an ETag: grace applies
    await put(pair.a, entry)
    await pair.settle()
    [m] = await pair.members()
    ttl_ms = await pair.redis.pttl(pair.a.tier.vkey(m))
    expected = shared_ttl(entry, CachePolicy(), clock())
    assert math.isclose(ttl_ms / 1000, expected, abs_tol=5)


async def test_redis_gone_costs_misses_never_errors(pair: Pair, rs: RedisServer) -> None:
    await put(pair.a, make_entry(KEY))
    await pair.settle()
    await rs.kill()
    assert await pair.b.lookup(KEY) == []  # fail open: a miss
    assert (await pair.b.stats())["shared_errors"] == 1
    # Local work goes on: store, purge (the shared part is logged and skipped).
    other = "http://shop.example/other"
    await put(pair.b, make_entry(other))
    assert len(await pair.b.lookup(other)) == 1
    assert await pair.b.purge(Purge(PurgeURL(other), issued_at=T0 + 1)) == 1
    assert await pair.b.lookup(other) == []
    await pair.settle()
