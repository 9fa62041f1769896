"""End-to-end harness: a scripted, counting origin and the real proxy on loopback.

The origin is a real aiohttp server on 127.0.0.1 (port 0). Each test scripts
its answers per path and then asserts what reached it: `origin.hits(path)`
and the recorded requests with their headers and bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.config import CacheConfig, Config, OriginConfig
from edgeproxy.http.dates import format_http_date
from edgeproxy.server import build_app


@dataclass
class Received:
    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body: bytes


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Reply:
    """A scripted answer. `headers` may hold callables of the origin's clock."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    date: bool = True  # send Date from the test clock


class ScriptedOrigin:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.received: list[Received] = []
        self.routes: dict[str, Reply | Handler] = {}
        self.server: TestServer | None = None

    def script(self, path: str, reply: Reply | Handler) -> None:
        self.routes[path] = reply

    def hits(self, path: str | None = None) -> int:
        return sum(1 for r in self.received if path is None or r.path_qs.split("?")[0] == path)

    def last(self) -> Received:
        return self.received[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.method, request.path_qs, request.headers, body))
        reply = self.routes.get(request.path) or self.routes.get(request.path_qs)
        if reply is None:
            return web.Response(status=404, text="not scripted\n")
        if not isinstance(reply, Reply):
            return await reply(request)
        headers: CIMultiDict[str] = CIMultiDict(reply.headers)
        if reply.date and "date" not in headers:
            headers["Date"] = format_http_date(self.clock())
        return web.Response(status=reply.status, body=reply.body or None, headers=headers)

    async def start(self) -> str:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()
        return f"http://127.0.0.1:{self.server.port}"

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


class Proxy:
    """The real edgeproxy app listening on a loopback port."""

    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.server: TestServer | None = None

    async def start(self) -> None:
        self.server = TestServer(build_app(self.config, clock=self.clock), host="127.0.0.1", port=0)
        await self.server.start_server()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def app(self) -> web.Application:
        assert self.server is not None
        return self.server.app

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


def make_config(origin_url: str, cache_dir: str, **cache: Any) -> Config:
    return Config(
        origin=OriginConfig("default", origin_url, connect_timeout=2.0, read_timeout=2.0),
        cache=CacheConfig(directory=cache_dir, **cache),
    )


async def settle() -> None:
    """Let background store work scheduled by a finished response complete."""
    await asyncio.sleep(0)
