"""Assembly: config -> aiohttp application with its lifecycle (cleanup_ctx)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_parser import HttpRequestParserPy

from edgeproxy import origin, proxy
from edgeproxy.config import Config
from edgeproxy.state import EDGE, EdgeState, Snapshot
from edgeproxy.store.disk import DiskStore

log = logging.getLogger("edgeproxy")


def snapshot(config: Config) -> Snapshot:
    return Snapshot(config=config, policy=config.cache.policy())


def build_app(config: Config, clock: Callable[[], float] = time.time) -> web.Application:
    """The public proxy application. `clock` is injectable for tests."""
    app = web.Application(client_max_size=0, handler_args={"max_field_size": 65536})

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = await DiskStore.open(config.cache.directory, size_limit=config.cache.size_limit)
        max_conns = config.origin.max_connections if config.origin else 100
        session = origin.make_session(max_conns)
        app[EDGE] = EdgeState(snapshot(config), store, session, clock)
        try:
            yield
        finally:
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


async def serve(app: web.Application, host: str, port: int) -> None:
    """Listen until cancelled (on SIGINT/SIGTERM), then clean up."""
    runner = make_runner(app, handle_signals=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_app(app: web.Application, host: str, port: int) -> None:
    # On a signal asyncio.run cancels serve(), whose finally cleans up.
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(serve(app, host, port))


def run(config: Config) -> None:
    origin_url = config.origin.url if config.origin else "(none)"
    log.info(
        "edgeproxy listening on http://%s in front of %s, cache in %s",
        config.listen,
        origin_url,
        config.cache.directory,
    )
    run_app(build_app(config), config.listen.host, config.listen.port)
