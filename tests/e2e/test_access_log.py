"""The access log: one line per request on `edgeproxy.access`, and the request id.

Each line is asserted field by field for the outcomes an operator reads it
for (miss, hit, client 304, revalidated, bypass, pass, 502, 404 no route),
with the request id the client and the origin saw. The cache outcome is read
from the Cache-Status sent (RFC 9211), so the mapping is a table here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest

from edgeproxy import proxy as proxy_module
from edgeproxy.accesslog import (
    AccessRecord,
    Format,
    cache_outcome,
    format_combined,
    format_json,
    request_id,
    rfc3339,
)
from edgeproxy.config import LogConfig, Route, RouteMatch, parse_config
from edgeproxy.errors import ConfigError
from edgeproxy.http.cache_status import CacheStatus, Fwd
from edgeproxy.state import EDGE
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, closed_port_url, fetch

START = "2027-01-15T08:00:00.000Z"  # FakeClock's start, 1_800_000_000
ETAG = '"v1"'
CACHEABLE = {"Cache-Control": "max-age=60", "ETag": ETAG}
HEX_ID = re.compile(r"[0-9a-f]{32}")
KEYS = {
    "time",
    "client",
    "method",
    "url",
    "status",
    "bytes",
    "duration_ms",
    "cache",
    "route",
    "origin_status",
    "origin_ms",
    "request_id",
}


class _Count(logging.Handler):
    """Wakes `lines` on each access line: a streamed response reaches the
    client a moment before its handler returns (and logs), and the handler
    may still be on the thread pool (an invalidation), so no fixed number of
    loop turns is enough."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.changed.set()


@dataclass
class Access:
    caplog: pytest.LogCaptureFixture
    counter: _Count

    @property
    def records(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.name == "edgeproxy.access"]


ON = LogConfig(access_log=True)


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture, proxy: Proxy) -> Iterator[Access]:
    """Access lines captured, and turned on for the `proxy` fixture (off by default)."""
    set_config(proxy, log=ON)
    caplog.set_level(logging.INFO, logger="edgeproxy.access")
    counter = _Count()
    logger = logging.getLogger("edgeproxy.access")
    logger.addHandler(counter)
    try:
        yield Access(caplog, counter)
    finally:
        logger.removeHandler(counter)


async def lines(access: Access, n: int) -> list[str]:
    """The first `n` access lines, waiting (bounded) for handlers to finish."""
    async with asyncio.timeout(10):
        while access.counter.count < n:
            access.counter.changed.clear()
            await access.counter.changed.wait()
    got = [r.getMessage() for r in access.records]
    assert len(got) == n, got  # one line per request, never more
    return got


async def records(access: Access, n: int) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in await lines(access, n)]
    for r in out:
        assert set(r) == KEYS
        assert r["client"] == "127.0.0.1"
        assert isinstance(r["duration_ms"], float) and r["duration_ms"] >= 0
    return out


def set_config(proxy: Proxy, **changes: Any) -> None:
    """Swap the running proxy's config snapshot (as a reload does)."""
    edge = proxy.app[EDGE]
    edge.snapshot = replace(edge.snapshot, config=replace(edge.snapshot.config, **changes))


def timed(r: dict[str, Any]) -> None:
    assert isinstance(r["origin_ms"], float) and r["origin_ms"] >= 0


# -- the outcomes, end to end -------------------------------------------------


async def test_miss_then_hit(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    access: Access,
) -> None:
    origin.script("/a", Reply(body=b"hello", headers=CACHEABLE))
    miss = await fetch(client, "GET", proxy.url + "/a?x=1")
    clock.advance(10)
    hit = await fetch(client, "GET", proxy.url + "/a?x=1")
    first, second = await records(access, 2)
    timed(first)
    assert first == {
        **first,
        "time": START,
        "method": "GET",
        "url": "/a?x=1",
        "status": 200,
        "bytes": 5,
        "cache": "miss",
        "route": "default",
        "origin_status": 200,
    }
    assert HEX_ID.fullmatch(first["request_id"])
    assert miss.headers["X-Request-Id"] == first["request_id"]
    assert origin.last().headers["X-Request-Id"] == first["request_id"]
    assert second == {
        **second,
        "time": "2027-01-15T08:00:10.000Z",
        "url": "/a?x=1",
        "status": 200,
        "bytes": 5,
        "cache": "hit",
        "route": "default",
        "origin_status": None,
        "origin_ms": None,
    }
    assert hit.headers["X-Request-Id"] == second["request_id"] != first["request_id"]
    assert origin.hits("/a") == 1


async def test_client_304_from_cache(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, access: Access
) -> None:
    # The cache answers the conditional itself (RFC 9111 section 4.3.2).
    origin.script("/a", Reply(body=b"hello", headers=CACHEABLE))
    await fetch(client, "GET", proxy.url + "/a")
    got = await fetch(client, "GET", proxy.url + "/a", headers={"If-None-Match": ETAG})
    assert got.status == 304
    _, r = await records(access, 2)
    assert r == {
        **r,
        "time": START,
        "method": "GET",
        "url": "/a",
        "status": 304,
        "bytes": 0,
        "cache": "client-304",
        "route": "default",
        "origin_status": None,
        "origin_ms": None,
        "request_id": got.headers["X-Request-Id"],
    }


async def test_revalidated_with_304(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    access: Access,
) -> None:
    # A stale entry freshened by the origin's 304 (RFC 9111 section 4.3.4).
    origin.script("/a", Reply(body=b"hello", headers={"Cache-Control": "max-age=5", "ETag": ETAG}))
    await fetch(client, "GET", proxy.url + "/a")
    clock.advance(6)
    origin.script("/a", Reply(status=304, headers={"Cache-Control": "max-age=5", "ETag": ETAG}))
    got = await fetch(client, "GET", proxy.url + "/a")
    assert got.status == 200
    _, r = await records(access, 2)
    timed(r)
    assert r == {
        **r,
        "time": "2027-01-15T08:00:06.000Z",
        "status": 200,
        "bytes": 5,
        "cache": "revalidated",
        "route": "default",
        "origin_status": 304,
        "request_id": got.headers["X-Request-Id"],
    }
    assert origin.last().headers["X-Request-Id"] == r["request_id"]


async def test_bypass_route(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, access: Access
) -> None:
    set_config(proxy, routes=(Route(name="nocache", origin="default", cache=False),))
    origin.script("/a", Reply(body=b"hello", headers=CACHEABLE))
    got = await fetch(client, "GET", proxy.url + "/a")
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=bypass; fwd-status=200"
    (r,) = await records(access, 1)
    timed(r)
    assert r == {
        **r,
        "time": START,
        "method": "GET",
        "url": "/a",
        "status": 200,
        "bytes": 5,
        "cache": "bypass",
        "route": "nocache",
        "origin_status": 200,
        "request_id": got.headers["X-Request-Id"],
    }


async def test_unsafe_method_is_a_pass(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, access: Access
) -> None:
    origin.script("/form", Reply(status=201, body=b"made"))
    got = await fetch(client, "POST", proxy.url + "/form", data=b"x=1")
    assert got.status == 201
    (r,) = await records(access, 1)
    assert (r["method"], r["status"], r["bytes"], r["cache"]) == ("POST", 201, 4, "pass")
    assert (r["origin_status"], r["request_id"]) == (201, got.headers["X-Request-Id"])


async def test_origin_down_is_a_502_line(
    make_proxy: MakeProxy, client: aiohttp.ClientSession, access: Access
) -> None:
    proxy = await make_proxy(closed_port_url())
    set_config(proxy, log=ON)
    got = await fetch(client, "GET", proxy.url + "/a", headers={"X-Request-Id": "trace-502"})
    assert got.status == 502
    assert got.headers["X-Request-Id"] == "trace-502"
    (r,) = await records(access, 1)
    timed(r)  # how long the failed attempt took
    assert r == {
        **r,
        "time": START,
        "method": "GET",
        "url": "/a",
        "status": 502,
        "bytes": len(got.body),
        "cache": "error",
        "route": "default",
        "origin_status": None,
        "request_id": "trace-502",
    }


async def test_no_route_is_a_404_line(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, access: Access
) -> None:
    only = Route(name="site", origin="default", match=RouteMatch(hosts=("site.example",)))
    set_config(proxy, routes=(only,), default_route=None)
    got = await fetch(client, "GET", proxy.url + "/a", headers={"X-Request-Id": "abc-1"})
    assert got.status == 404
    assert got.headers["X-Request-Id"] == "abc-1"
    (r,) = await records(access, 1)
    assert r == {
        **r,
        "time": START,
        "method": "GET",
        "url": "/a",
        "status": 404,
        "bytes": len(got.body),
        "cache": "none",
        "route": None,
        "origin_status": None,
        "origin_ms": None,
        "request_id": "abc-1",
    }
    assert origin.hits() == 0


async def test_refused_request_is_logged_with_its_id(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, access: Access
) -> None:
    # A foreign absolute-form target (RFC 9112 section 3.2.2): a 400, still one line.
    got = await fetch(
        client, "GET", proxy.url + "/", headers={"Host": "bad host", "X-Request-Id": "r-400"}
    )
    assert got.status == 400
    (r,) = await records(access, 1)
    assert (r["status"], r["cache"], r["route"], r["request_id"]) == (400, "none", None, "r-400")
    assert got.headers["X-Request-Id"] == "r-400"


# -- the request id ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123", True),
        ("0f:1e.2d_3C-4b", True),
        ("a" * 128, True),
        ("a" * 129, False),  # too long
        ("two words", False),
        ('quote"d', False),
        ("tab\there", False),
        ("ünïcode", False),
        ("", False),
    ],
)
async def test_request_id_passed_through_or_replaced(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    access: Access,
    sent: str,
    kept: bool,
) -> None:
    origin.script("/a", Reply(body=b"a"))
    got = await fetch(client, "GET", proxy.url + "/a", headers={"X-Request-Id": sent})
    rid = got.headers["X-Request-Id"]
    assert rid == sent if kept else HEX_ID.fullmatch(rid)
    assert origin.last().headers.getall("X-Request-Id") == [rid]  # replaced, not added
    (r,) = await records(access, 1)
    assert r["request_id"] == rid


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc", True), ("A.b:c_d-9", True), ("x" * 128, True), ("x" * 129, False), ("a/b", False)],
)
def test_request_id_table(sent: str, kept: bool) -> None:
    assert (request_id(sent) == sent) is kept


def test_request_id_generated_is_fresh() -> None:
    a, b = request_id(None), request_id(None)
    assert HEX_ID.fullmatch(a) and HEX_ID.fullmatch(b) and a != b


# -- formats, config, secrets, cost --------------------------------------------


async def test_combined_format(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, access: Access
) -> None:
    set_config(proxy, log=LogConfig(access_log=True, access_format="combined"))
    origin.script("/a", Reply(body=b"hello", headers=CACHEABLE))
    await fetch(
        client,
        "GET",
        proxy.url + "/a?q=1",
        headers={"X-Request-Id": "cmb-1", "Referer": "http://ref.example/", "User-Agent": 'ua "1"'},
    )
    (line,) = await lines(access, 1)
    m = re.fullmatch(
        r'127\.0\.0\.1 - - \[15/Jan/2027:08:00:00 \+0000\] "GET /a\?q=1 HTTP/1\.1" 200 5 '
        r'"http://ref\.example/" "ua \\x221\\x22" duration_ms=(\d+\.\d+) cache=miss '
        r"route=default origin_status=200 origin_ms=(\d+\.\d+) request_id=cmb-1",
        line,
    )
    assert m is not None, line


async def test_access_log_off(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, access: Access
) -> None:
    set_config(proxy, log=LogConfig(access_log=False))
    origin.script("/a", Reply(body=b"a"))
    got = await fetch(client, "GET", proxy.url + "/a")
    assert got.status == 200
    await proxy.close()  # every handler has returned
    assert access.records == []
    assert HEX_ID.fullmatch(got.headers["X-Request-Id"])  # the id is not a logging feature


async def test_no_line_built_when_logger_disabled(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING, logger="edgeproxy.access")
    # Recorded, not raised: a raise in handle's `finally` comes after the
    # response went out, so only this list can show the record was built.
    built: list[tuple[Any, ...]] = []

    def build(*args: Any) -> AccessRecord:
        built.append(args)
        raise AssertionError("access record built with the logger off")

    monkeypatch.setattr(proxy_module, "_access_record", build)
    set_config(proxy, log=ON)  # on in the config: the logger alone gates the work
    origin.script("/a", Reply(body=b"a"))
    got = await fetch(client, "GET", proxy.url + "/a")
    assert got.status == 200
    await proxy.close()
    assert built == []
    assert [r for r in caplog.records if r.name == "edgeproxy.access"] == []


@pytest.mark.parametrize("fmt", ["json", "combined"])
async def test_credentials_never_logged(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    access: Access,
    fmt: Format,
) -> None:
    edge = proxy.app[EDGE]
    cfg = edge.snapshot.config
    admin = replace(cfg.admin, purge_method=True)
    set_config(proxy, admin=admin, log=LogConfig(access_log=True, access_format=fmt))
    edge.admin_token = "s3cret-token"
    origin.script("/a", Reply(body=b"a", headers=CACHEABLE))
    auth = {"Authorization": "Bearer s3cret-token", "Cookie": "session=s3cret-cookie"}
    await fetch(client, "GET", proxy.url + "/a", headers=auth)
    purged = await fetch(client, "PURGE", proxy.url + "/a", headers=auth)
    assert purged.status == 200
    got = await lines(access, 2)
    assert "PURGE /a" in got[1] or '"method":"PURGE"' in got[1]
    for line in got:
        assert "s3cret" not in line


async def test_one_line_per_request(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, access: Access
) -> None:
    origin.script("/a", Reply(body=b"a", headers=CACHEABLE))
    for _ in range(5):
        await fetch(client, "GET", proxy.url + "/a")
    got = await records(access, 5)
    assert [r["cache"] for r in got] == ["miss", "hit", "hit", "hit", "hit"]
    assert len({r["request_id"] for r in got}) == 5


def test_json_line_escapes_a_forged_newline() -> None:
    r = AccessRecord(
        time=1_800_000_000.0,
        client=None,
        method="GET",
        url='/a\n{"forged":1}',
        status=200,
        bytes=0,
        duration_ms=1.5,
        cache="hit",
        route=None,
        origin_status=None,
        origin_ms=None,
        request_id="x",
    )
    line = format_json(r)
    assert "\n" not in line and json.loads(line)["url"] == '/a\n{"forged":1}'
    combined = format_combined(r)
    assert "\n" not in combined and '"GET /a\\x0A{\\x22forged\\x22:1} HTTP/1.1"' in combined
    assert combined.startswith("- - - [15/Jan/2027:08:00:00 +0000]")


def test_rfc3339_is_utc_with_millis() -> None:
    assert rfc3339(1_800_000_000.25) == "2027-01-15T08:00:00.250Z"  # RFC 3339 section 5.6


@pytest.mark.parametrize(
    ("cs", "status", "from_store", "outcome"),
    [
        pytest.param(None, 404, False, "none", id="no-cache-status"),
        pytest.param(CacheStatus(hit=True, ttl=50), 200, True, "hit", id="9211-2.1-hit"),
        pytest.param(CacheStatus(hit=True, ttl=-3), 200, True, "stale", id="9211-2.4-neg-ttl"),
        pytest.param(CacheStatus(hit=True, ttl=50), 304, True, "client-304", id="9111-4.3.2"),
        pytest.param(CacheStatus(hit=True, ttl=50), 412, False, "hit", id="9110-13.1.1-412"),
        pytest.param(
            CacheStatus(hit=True, ttl=-2, detail="stale-while-revalidate"),
            200,
            True,
            "stale",
            id="5861-3-swr",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.STALE, fwd_status=500, ttl=-9, detail="stale-if-error"),
            200,
            True,
            "stale",
            id="5861-4-sie",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.URI_MISS, fwd_status=200, stored=True, ttl=60),
            200,
            False,
            "miss",
            id="9211-2.2-uri-miss",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.VARY_MISS, fwd_status=200), 200, False, "miss", id="vary-miss"
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.STALE, fwd_status=200, stored=True, ttl=5),
            200,
            False,
            "miss",
            id="stale-refetched",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.URI_MISS, fwd_status=304),
            304,
            False,
            "miss",
            id="origin-304-relayed",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.STALE, fwd_status=304, ttl=5),
            200,
            True,
            "revalidated",
            id="9111-4.3.4-revalidated",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.REQUEST, fwd_status=304, ttl=5),
            200,
            True,
            "revalidated",
            id="9111-5.2.1.4-no-cache",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.STALE, fwd_status=304, ttl=5),
            304,
            True,
            "client-304",
            id="revalidated-then-client-304",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.URI_MISS, fwd_status=200, collapsed=True, ttl=60),
            200,
            True,
            "collapsed",
            id="9211-2.8-collapsed",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.BYPASS, fwd_status=200), 200, False, "bypass", id="bypass"
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.METHOD, fwd_status=201), 201, False, "pass", id="9111-4.4-method"
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.URI_MISS, detail="connection_refused"),
            502,
            False,
            "error",
            id="9209-2.3-502",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.STALE, detail="http_response_timeout"),
            504,
            False,
            "error",
            id="9209-2.3-504",
        ),
        pytest.param(CacheStatus(detail="only-if-cached"), 504, False, "miss", id="9111-5.2.1.7"),
    ],
)
def test_cache_outcome_table(
    cs: CacheStatus | None, status: int, from_store: bool, outcome: str
) -> None:
    assert cache_outcome(cs, status, from_store) == outcome


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("", LogConfig()),
        ("log: {access_format: combined}", LogConfig(access_format="combined")),
        ("log: {access_log: false}", LogConfig(access_log=False)),
        ("log: {access_log: true}", LogConfig(access_log=True)),
        (
            "log: {access_log: true, access_format: json}",
            LogConfig(access_log=True, access_format="json"),
        ),
    ],
)
def test_log_config(yaml_text: str, expected: LogConfig) -> None:
    assert parse_config(yaml_text, "edge.yaml").log == expected


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("log: {access_format: apache}", "log.access_format: expected json or combined"),
        ("log: {access_log: maybe}", "log.access_log: expected true or false"),
        ("log: {level: debug}", "log.level: unknown key"),
    ],
)
def test_log_config_errors(yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(yaml_text, "edge.yaml")
    assert message in str(e.value)
