from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, ScriptedOrigin, make_config


@pytest.fixture
async def origin(clock: FakeClock) -> AsyncIterator[ScriptedOrigin]:
    o = ScriptedOrigin(clock)
    await o.start()
    yield o
    await o.close()


@pytest.fixture
async def proxy(origin: ScriptedOrigin, clock: FakeClock, tmp_path) -> AsyncIterator[Proxy]:  # type: ignore[no-untyped-def]
    assert origin.server is not None
    p = Proxy(make_config(f"http://127.0.0.1:{origin.server.port}", str(tmp_path / "cache")), clock)
    await p.start()
    yield p
    await p.close()


MakeProxy = Callable[..., Awaitable[Proxy]]


@pytest.fixture
async def make_proxy(clock: FakeClock, tmp_path) -> AsyncIterator[MakeProxy]:  # type: ignore[no-untyped-def]
    """Start more proxies: `await make_proxy(origin_url, cache_dir=..., **make_config kwargs)`.

    The cache directory defaults to the one the `proxy` fixture uses, so a new
    proxy on it is a restart. All are closed at teardown.
    """
    started: list[Proxy] = []

    async def start(origin_url: str, cache_dir: str | None = None, **kw: Any) -> Proxy:
        p = Proxy(make_config(origin_url, cache_dir or str(tmp_path / "cache"), **kw), clock)
        await p.start()
        started.append(p)
        return p

    yield start
    for p in started:
        await p.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    # Bounded: a proxy that stalls a response fails the test instead of hanging it.
    async with aiohttp.ClientSession(
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
        timeout=aiohttp.ClientTimeout(total=60, sock_read=5),
    ) as s:
        yield s
