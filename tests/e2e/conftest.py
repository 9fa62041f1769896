from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from edgeproxy import server
from tests.conftest import FakeClock
from tests.e2e import harness
from tests.e2e.harness import Proxy, ScriptedOrigin, make_config
from tests.spying import SpiedDiskStore

# A hit has two implementations: the wire fast path (edgeproxy/wire.py) and
# aiohttp's handler (proxy.handle). Every test in these modules runs on both
# ([wire] and [aiohttp] in its id): the rules must not depend on the path.
BOTH_HIT_PATHS = frozenset(
    {
        "test_access_log",
        "test_admin_purge",
        "test_cdn_cache_control",
        "test_collapsing",
        "test_compression",
        "test_conditionals",
        "test_core_flow",
        "test_fast_path",
        "test_invalidation",
        "test_metrics",
        "test_poisoning",
        "test_purge_method",
        "test_ranges",
        "test_routing",
        "test_sendfile",
        "test_serving",
        "test_stale",
        "test_storing",
        "test_validation",
        "test_wire",
        "test_wire_miss",
        "test_wire_revalidation",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rpartition(".")[2] in BOTH_HIT_PATHS:
        metafunc.parametrize("hit_path", ["wire", "aiohttp"], indirect=True)


@pytest.fixture(autouse=True)
def hit_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which path answers hits in the proxies this test starts in-process
    (harness.Proxy); "aiohttp" turns `cache.fast_path` off in them."""
    path: str = getattr(request, "param", "wire")
    harness.FAST_PATH = path == "wire"
    yield path
    harness.FAST_PATH = True


@pytest.fixture
def spied_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies started after it open their disk store as a SpiedDiskStore,
    whose methods a test may replace (tests/spying.py). Ask for it first."""
    monkeypatch.setattr(server, "DiskStore", SpiedDiskStore)


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
