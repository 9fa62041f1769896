"""Assembly: config -> aiohttp application with its lifecycle (cleanup_ctx)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

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


def run(config: Config) -> None:
    app = build_app(config)
    origin_url = config.origin.url if config.origin else "(none)"
    log.info(
        "edgeproxy listening on http://%s in front of %s, cache in %s",
        config.listen,
        origin_url,
        config.cache.directory,
    )
    web.run_app(
        app,
        host=config.listen.host,
        port=config.listen.port,
        access_log=None,
        print=None,
        handler_cancellation=False,
    )
