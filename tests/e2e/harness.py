"""End-to-end harness: a scripted, counting origin and the real proxy on loopback.

The origin is a real aiohttp server on 127.0.0.1 (port 0). Each test scripts
its answers per path and then asserts what reached it: `origin.hits(path)`
and the recorded requests with their headers and bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.config import CacheConfig, Config, OriginConfig, default_route
from edgeproxy.http.dates import format_http_date
from edgeproxy.server import build_app, make_runner

# False: proxies started here answer every request through aiohttp (the
# `hit_path` fixture in conftest.py sets it per test).
FAST_PATH = True


@dataclass
class Received:
    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body: bytes
    peer_port: int | None = None  # the proxy's end of the connection: shows keep-alive
    raw_path: str = ""  # the request target as received, never re-encoded


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Reply:
    """A scripted answer. `headers` may hold callables of the origin's clock."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    date: bool = True  # send Date from the test clock


class ProductionTestServer(TestServer):
    """aiohttp's TestServer on edgeproxy's own runner (`server.make_runner`).

    The plain TestServer would cancel handlers on client disconnect and parse
    with llhttp, which refuses extension methods; production does neither.
    """

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs.pop("handler_cancellation", None)
        return make_runner(self.app, **kwargs)


class ScriptedOrigin:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.received: list[Received] = []
        self.routes: dict[str, Reply | Handler] = {}
        self.streaming: set[str] = set()
        self.server: TestServer | None = None

    def script(self, path: str, reply: Reply | Handler, *, read_body: bool = True) -> None:
        """Answer `path` with `reply`. read_body=False hands a handler the request
        with its body unread, so it can consume an upload chunk by chunk; the
        recorded body is then empty."""
        self.routes[path] = reply
        if read_body:
            self.streaming.discard(path)
        else:
            self.streaming.add(path)

    def hits(self, path: str | None = None) -> int:
        return sum(1 for r in self.received if path is None or r.path_qs.split("?")[0] == path)

    def date(self, offset: float = 0) -> str:
        """An HTTP-date on the test clock, for custom handlers (aiohttp's own is wall time)."""
        return format_http_date(self.clock() + offset)

    def last(self) -> Received:
        return self.received[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        reply = self.routes.get(request.path) or self.routes.get(request.path_qs)
        streamed = request.path in self.streaming or request.path_qs in self.streaming
        body = b"" if streamed else await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.received.append(
            Received(
                request.method,
                request.path_qs,
                request.headers,
                body,
                peer[1] if peer else None,
                request.raw_path,
            )
        )
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
        # Extension methods must reach it too: same runner as the proxy.
        self.server = ProductionTestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()
        return f"http://127.0.0.1:{self.server.port}"

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


class Proxy:
    """The real edgeproxy app listening on a loopback port, started as `edgeproxy run` starts it."""

    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.server: TestServer | None = None

    async def start(self) -> None:
        if not FAST_PATH and self.config.cache.fast_path:
            cache = replace(self.config.cache, fast_path=False)
            self.config = replace(self.config, cache=cache)
        app = build_app(self.config, clock=self.clock)
        self.server = ProductionTestServer(app, host="127.0.0.1", port=0)
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
            server, self.server = self.server, None
            await server.close()


def make_config(
    origin_url: str,
    cache_dir: str,
    *,
    connect_timeout: float = 2.0,
    read_timeout: float = 2.0,
    **cache: Any,
) -> Config:
    """One origin named "default" and the catch-all route to it."""
    origin = OriginConfig(
        "default", (origin_url,), connect_timeout=connect_timeout, read_timeout=read_timeout
    )
    cfg = Config(
        origins=MappingProxyType({"default": origin}),
        cache=CacheConfig(directory=cache_dir, **cache),
    )
    return replace(cfg, routes=(default_route(cfg, "default"),))


@dataclass
class Got:
    """What a client saw: status, header fields and the whole body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def fetch(client: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Got:
    kw.setdefault("allow_redirects", False)
    async with client.request(method, url, **kw) as r:
        return Got(r.status, r.headers, await r.read())


async def settle() -> None:
    """Let background store work scheduled by a finished response complete."""
    await asyncio.sleep(0)


@dataclass
class RawReceived:
    method: str
    target: str
    head: bytes


class RawOrigin:
    """A loopback origin that answers with exact bytes, then closes the connection.

    For framing faults aiohttp's server won't produce: a Content-Length longer
    than the body sent, a chunked body cut mid-chunk.
    """

    def __init__(self) -> None:
        self.received: list[RawReceived] = []
        self.routes: dict[str, bytes] = {}
        self.server: asyncio.Server | None = None
        self.url = ""

    def script(self, path: str, raw: bytes) -> None:
        self.routes[path] = raw

    def hits(self, path: str | None = None) -> int:
        return sum(1 for r in self.received if path is None or r.target.split("?")[0] == path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            self.received.append(RawReceived(method, target, head))
            writer.write(self.routes.get(target.split("?")[0], not_found))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self.url

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@contextlib.contextmanager
def full_backlog_listener() -> Iterator[str]:
    """A loopback port whose accept queue is full: a new connect hangs (no SYN-ACK).

    Linux drops SYNs to a listener whose accept queue is full
    (net.ipv4.tcp_abort_on_overflow=0, the default), so the connecting side
    times out instead of being refused, all without leaving 127.0.0.1.
    """
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):  # backlog 0 still queues one; the rest stay in SYN_SENT
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        yield f"http://127.0.0.1:{port}"
    finally:
        for s in fillers:
            s.close()
        listener.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def rss_bytes() -> int:
    """This process's resident set size (the proxy, origin and client all live here)."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RssWatch:
    """Peak RSS growth over a baseline, sampled while a transfer runs."""

    def __init__(self) -> None:
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self.samples = 0

    def sample(self) -> None:
        self.samples += 1
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


async def until(cond: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Wait (bounded) for a state the test needs before it goes on."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)


# -- a real `edgeproxy serve` process -------------------------------------------


def free_port() -> int:
    """A port nobody listens on now (for a subprocess's config, which can't
    report the port it bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def spawn_serve(
    config: Path,
    *flags: str,
    preexec: Callable[[], None] | None = None,
    stderr: int | IO[bytes] = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    """`python -m edgeproxy serve --workers 1 --config CONFIG FLAGS`, stderr
    piped (the caller drains it) unless given, stdout dropped, no admin token
    inherited (the admin listener is loopback-only and open, as tests want it)."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEPROXY_ADMIN_TOKEN"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgeproxy",
        "serve",
        "--workers",
        "1",
        "--config",
        str(config),
        *flags,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
        env=env,
        preexec_fn=preexec,
    )


async def wait_healthy(admin_url: str, proc: asyncio.subprocess.Process) -> bool:
    """Poll /healthz until 200 (True), or until the process died or ~10 s
    passed (False)."""
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(admin_url + "/healthz") as r:
                    if r.status == 200:
                        return True
            except aiohttp.ClientConnectionError:
                pass
            if proc.returncode is not None:
                return False
            await asyncio.sleep(0.05)
    return False
