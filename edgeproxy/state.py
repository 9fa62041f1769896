"""Per-app runtime state, reached through a typed aiohttp AppKey."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from edgeproxy.config import Config, OriginConfig
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.store.base import Store


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
    clock: Callable[[], float]
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    _rotation: collections.Counter[str] = field(default_factory=collections.Counter)

    def next_server(self, origin: OriginConfig) -> str:
        """Round-robin over an origin's servers."""
        n = self._rotation[origin.name]
        self._rotation[origin.name] = n + 1
        return origin.servers[n % len(origin.servers)]


EDGE = web.AppKey("edge", EdgeState)
