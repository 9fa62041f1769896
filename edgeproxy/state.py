"""Per-app runtime state, reached through a typed aiohttp AppKey."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from edgeproxy.collapse import Flights
from edgeproxy.config import Config, OriginConfig
from edgeproxy.h1client import OriginConnections
from edgeproxy.metrics import Metrics
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.pool import Pool
from edgeproxy.purge import Purge
from edgeproxy.store.base import Store

log = logging.getLogger("edgeproxy")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a request reads from config, swapped as one reference."""

    config: Config
    policy: CachePolicy


@dataclass
class EdgeState:
    snapshot: Snapshot
    store: Store
    session: aiohttp.ClientSession
    clock: Callable[[], float]  # HTTP time: freshness, Date, purges
    # Pool time (ejection timeouts, health-check schedule): monotonic, so a
    # wall-clock step never ejects or restores a server.
    monotonic: Callable[[], float] = time.monotonic
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    # Requests by cache outcome (accesslog.cache_outcome), for /stats and the
    # dashboard; the Prometheus series carry the same with route and method.
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    flights: Flights = field(default_factory=Flights)
    # Work the proxy owns beyond any one request (background revalidations,
    # deletions): cancelled and awaited by the app's cleanup.
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _pools: dict[str, tuple[OriginConfig, Pool]] = field(default_factory=dict)
    admin_token: str | None = None  # for `PURGE <url>` on the public listener
    metrics: Metrics = field(default_factory=Metrics)  # GET /metrics (metrics.py)
    # The lean client's connections (h1client.py); None: aiohttp's client only.
    conns: OriginConnections | None = None

    def pool(self, origin: OriginConfig) -> Pool:
        """The origin's pool, rebuilt when a reload changed its servers or settings.

        Health state carries over for servers the old pool also had.
        """
        held = self._pools.get(origin.name)
        if held is not None and held[0] is origin:
            return held[1]
        if held is not None and held[1].servers == origin.servers and held[0].pool == origin.pool:
            pool = held[1]
        else:
            pool = Pool(origin.servers, origin.pool)
            if held is not None:
                pool.adopt(held[1])
        self._pools[origin.name] = (origin, pool)
        return pool

    def pools(self) -> dict[str, Pool]:
        """The pools of the current config's origins (dropping removed ones)."""
        origins = self.snapshot.config.origins
        for name in [n for n in self._pools if n not in origins]:
            del self._pools[name]
        return {name: self.pool(o) for name, o in origins.items()}

    async def purge(self, purge: Purge) -> int:
        """Apply a purge: the one way in for the admin API and the purge bus.

        In-flight fills that began before it stop taking new waiters first,
        so no request that starts after this returns joins one of them.
        """
        if not purge.dry_run:
            self.flights.note_purge(purge.issued_at)
        count = await self.store.purge(purge)
        if not purge.dry_run:
            self.metrics.purged(purge.target, count)
        return count

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Run `coro` as the proxy's own task: no client waits for it or can cancel it."""
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self.tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            log.error("%s failed", task.get_name(), exc_info=e)

    async def drain(self) -> None:
        """Wait for the background tasks running now (and those they start)."""
        while self.tasks:
            pending = list(self.tasks)
            await asyncio.gather(*pending, return_exceptions=True)
            self.tasks.difference_update(pending)

    async def stop_tasks(self) -> None:
        while self.tasks:
            pending = list(self.tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.tasks.difference_update(pending)


EDGE = web.AppKey("edge", EdgeState)
