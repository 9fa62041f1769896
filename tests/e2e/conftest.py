from __future__ import annotations

from collections.abc import AsyncIterator

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


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        auto_decompress=False, skip_auto_headers=("Accept-Encoding", "User-Agent")
    ) as s:
        yield s
