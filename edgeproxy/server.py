"""Assembly: config -> aiohttp application with its lifecycle (cleanup_ctx)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_parser import HttpRequestParserPy

from edgeproxy import origin, proxy
from edgeproxy.admin import build_admin_app, check_bind, read_token
from edgeproxy.cluster import Cluster
from edgeproxy.config import Config
from edgeproxy.reload import Loader, Reloader
from edgeproxy.state import EDGE, EdgeState, Snapshot
from edgeproxy.store.base import Store
from edgeproxy.store.disk import DiskStore
from edgeproxy.store.tiered import TieredStore

log = logging.getLogger("edgeproxy")


def snapshot(config: Config) -> Snapshot:
    return Snapshot(config=config, policy=config.cache.policy())


async def open_store(config: Config) -> Store:
    """diskcache, behind the per-worker hot tier unless `cache.memory_size` is 0."""
    cache = config.cache
    disk = await DiskStore.open(cache.directory, size_limit=cache.size_limit)
    if cache.memory_size <= 0:
        return disk
    return await TieredStore.open(
        disk, max_bytes=cache.memory_size, max_object=cache.memory_max_object
    )


def build_app(
    config: Config,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The public proxy application. `clock` (HTTP time) and `monotonic` (pool
    time: ejections, health checks) are injectable for tests."""
    app = web.Application(client_max_size=0, handler_args={"max_field_size": 65536})

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = await open_store(config)
        max_conns = config.origin.max_connections if config.origin else 100
        session = origin.make_session(max_conns)
        edge = EdgeState(snapshot(config), store, session, clock, monotonic)
        app[EDGE] = edge
        checks = asyncio.get_running_loop().create_task(
            origin.health_checks(edge), name="health checks"
        )
        try:
            yield
        finally:
            # Our own tasks first (background revalidations use the session and store).
            checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checks
            await edge.stop_tasks()
            await session.close()
            await store.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app


class _AnyMethodProtocol(web_protocol.RequestHandler):
    """aiohttp's request handler, parsing request heads with its pure-Python parser.

    The C parser (llhttp) rejects any method outside its fixed list with a
    400, but a method is any token (RFC 9110 section 9.1) and a proxy forwards
    extension methods it doesn't know. The Python parser accepts every token;
    it costs ~20us more per request head, which is worth forwarding
    everything. tests/e2e/test_forwarding.py guards this against aiohttp
    changes.
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        auto_decompress: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, auto_decompress=auto_decompress, **kwargs)
        queue = getattr(web_protocol, "MAX_MSG_QUEUE_SIZE", None)
        self._parser = HttpRequestParserPy(
            self,
            loop,
            self._read_bufsize,
            max_line_size=self.max_line_size,
            max_field_size=self.max_field_size,
            max_headers=self.max_headers,
            payload_exception=web_protocol.RequestPayloadError,
            auto_decompress=auto_decompress,
            **({} if queue is None else {"max_msg_queue_size": queue}),
        )


class _AnyMethodServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _AnyMethodProtocol(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _AnyMethodServer  # same state, our protocol factory
        return server


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The public listener's runner; `run` and the e2e harness both use it.

    Handlers are not cancelled when a client disconnects: the proxy notices
    on its next write and aborts what it was storing.
    """
    return _Runner(app, handler_cancellation=False, access_log=None, **kwargs)


async def serve_app(app: web.Application, host: str, port: int) -> None:
    """One app on one address until cancelled (the demo origin uses it)."""
    runner = make_runner(app, handle_signals=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_app(app: web.Application, host: str, port: int) -> None:
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(serve_app(app, host, port))


def apply_config(edge: EdgeState) -> Callable[[Config], None]:
    """The reloader's swap: one reference, read once per request."""

    def apply(config: Config) -> None:
        edge.snapshot = snapshot(config)

    return apply


async def serve(config: Config, load: Loader | None, config_path: str | None) -> None:
    """Run the public and admin listeners until SIGINT/SIGTERM, then clean up.

    SIGHUP reloads the config; so do `POST /reload` and edits to the file.
    """
    token = read_token(config.admin)
    check_bind(config.admin, token)
    if token is None:
        log.warning("admin listener %s has no token: open to local users only", config.admin.listen)
    proxy_app = build_app(config)
    runner = make_runner(proxy_app, handle_signals=True)
    await runner.setup()
    admin_runner: web.AppRunner | None = None
    cluster: Cluster | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        edge = proxy_app[EDGE]
        if config.cluster.redis_url is not None:
            # Before the listeners open: a returning edge replays missed purges first.
            cluster = await Cluster.start(config, edge)
        reloader = Reloader(config, load, apply_config(edge), edge.clock)
        admin_runner = web.AppRunner(
            build_admin_app(edge, reloader, token, cluster=cluster), access_log=None
        )
        await admin_runner.setup()
        await web.TCPSite(runner, config.listen.host, config.listen.port).start()
        await web.TCPSite(admin_runner, config.admin.listen.host, config.admin.listen.port).start()
        loop = asyncio.get_running_loop()
        if load is not None:
            loop.add_signal_handler(
                signal.SIGHUP, lambda: tasks.append(loop.create_task(_reload(reloader)))
            )
        if config_path is not None:
            tasks.append(loop.create_task(reloader.watch(config_path)))
        log.info(
            "edgeproxy listening on http://%s (admin http://%s), %d routes, cache in %s",
            config.listen,
            config.admin.listen,
            len(config.routes),
            config.cache.directory,
        )
        await asyncio.Event().wait()
    finally:
        for task in tasks:
            task.cancel()
        if admin_runner is not None:
            await admin_runner.cleanup()
        if cluster is not None:
            await cluster.stop()
        await runner.cleanup()
        if cluster is not None:
            await cluster.close()


async def _reload(reloader: Reloader) -> None:
    await reloader.reload("SIGHUP")


def run(config: Config, load: Loader | None = None, config_path: str | None = None) -> None:
    # On a signal asyncio.run cancels serve(), whose finally cleans up.
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(serve(config, load, config_path))
