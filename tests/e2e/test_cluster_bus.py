"""The purge bus (cluster.py) in process, under the blockbuster guard: two buses
over two DiskStores and one real redis-server. The edge processes of
test_cluster.py show the same end to end; here nothing may block the loop,
and the position file and the outage queue are checked directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgeproxy.cluster import POSITION_FILE, PurgeBus, make_client, read_position
from edgeproxy.config import ClusterConfig
from edgeproxy.purge import Purge, PurgeURL
from edgeproxy.store.base import Banned
from edgeproxy.store.disk import DiskStore
from tests.conftest import FakeClock
from tests.contract.helpers import T0, make_entry, put
from tests.e2e.test_cluster import REDIS, RedisServer, poll

pytestmark = pytest.mark.skipif(
    REDIS is None,
    reason="redis-server not found: the cluster tests need it "
    "(scripts/test installs Debian's redis-server package)",
)

KEY = "http://shop.example/p"


@pytest.fixture
async def rs(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    yield server
    await server.kill()


class Node:
    def __init__(self, tmp: Path, name: str) -> None:
        self.dir = tmp / name
        self.name = name

    async def start(self, rs: RedisServer, clock: FakeClock) -> None:
        self.settings = ClusterConfig(redis_url=rs.url, heartbeat=0.1, edge_ttl=2.0)
        self.client = make_client(self.settings)
        self.store = await DiskStore.open(str(self.dir))
        self.bus = PurgeBus(
            self.settings, self.client, self.store.purge, clock, str(self.dir), self.name
        )
        await self.bus.start()

    async def stop(self) -> None:
        await self.bus.stop()
        await self.store.close()
        await self.client.aclose()


@pytest.fixture
async def nodes(
    tmp_path: Path, rs: RedisServer, clock: FakeClock
) -> AsyncIterator[tuple[Node, Node]]:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    await a.start(rs, clock)
    await b.start(rs, clock)
    yield a, b
    for n in (a, b):
        await n.stop()


async def test_a_published_purge_is_applied_by_the_other_bus(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    await put(b.store, make_entry(KEY, request_time=T0))
    purge = Purge(PurgeURL(KEY), issued_at=T0 + 1)
    await a.store.purge(purge)  # the admin API applies locally first
    seq = await a.bus.publish(purge)
    assert seq == 1
    done = await a.bus.wait_applied(seq, 5.0)
    assert done.complete and sorted(done.applied) == ["a", "b"]
    assert await b.store.lookup(KEY) == []
    # The original issue time came along: B's ban refuses a fill that raced it.
    with pytest.raises(Banned):
        await put(b.store, make_entry(KEY, request_time=T0 + 0.5))
    assert b.bus.applied == 1 and a.bus.applied == 0  # A skipped its own
    saved = await asyncio.to_thread(read_position, str(b.dir / POSITION_FILE), "edgeproxy")
    assert saved.last_seq == 1 and saved.epoch is not None
    assert b.bus.status()["last_applied"] == 1


async def test_purges_queue_while_redis_is_down_and_flush_in_order(
    nodes: tuple[Node, Node], rs: RedisServer
) -> None:
    a, b = nodes
    for i in range(3):
        await put(b.store, make_entry(f"{KEY}/{i}"))
    await rs.kill()

    async def a_down() -> bool:
        return not a.bus.connected

    await poll(a_down, "A notices Redis is gone")
    for i in range(3):
        assert await a.bus.publish(Purge(PurgeURL(f"{KEY}/{i}"), issued_at=T0 + 1)) is None
    assert a.bus.status()["queued"] == 3
    await rs.start()

    async def b_applied() -> bool:
        return b.bus.applied == 3

    await poll(b_applied, "B applies the three queued purges", tries=400)
    assert a.bus.status()["queued"] == 0
    for i in range(3):
        assert await b.store.lookup(f"{KEY}/{i}") == []
