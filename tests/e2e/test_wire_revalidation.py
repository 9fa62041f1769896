"""Revalidations answered on the wire (edgeproxy/wire_revalidation.py).

A stale hot entry is revalidated upstream from the listener's protocol and,
on a 304 that validates it (RFC 9111 section 4.3.4), answered there; any
other answer is handed to aiohttp's handler with the request, which must
then take it rather than send the request again. Each test runs on both
paths ([wire] and [aiohttp]: `cache.fast_path: false`) with the same
expectations, and the first one runs both proxies side by side and holds
the responses, field for field, and the requests the origin received to
be the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, generate_latest

from edgeproxy.purge import Purge, PurgeURL
from edgeproxy.state import EDGE
from edgeproxy.store.tiered import TieredStore
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Proxy, ScriptedOrigin, fetch, until
from tests.e2e.test_wire import Conn, get, origin_url

BODY = b"0123456789" * 100
V1, V2 = '"v1"', '"v2"'
LAST_MODIFIED = "Sat, 01 Jan 2000 00:00:00 GMT"


class Validating:
    """An origin object that answers a matching If-None-Match with a 304
    (RFC 9110 section 13.1.2) and anything else with the whole object.
    `mode` scripts what the next requests get instead."""

    def __init__(self, origin: ScriptedOrigin) -> None:
        self.origin = origin
        self.etag = V1
        self.body = BODY
        self.cache_control = 'max-age=10, no-cache="X-Secret"'
        self.mode = "normal"  # or: "500", "304-other-etag", "304-no-store", "304-max-age"
        self.hold: asyncio.Event | None = None  # set: answers wait for it

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self.hold is not None:
            await self.hold.wait()
        date = self.origin.date()
        if self.mode == "500":
            return web.Response(status=500, text="down\n", headers={"Date": date})
        fields = {
            "Date": date,
            "ETag": self.etag,
            "Cache-Control": self.cache_control,
            "Last-Modified": LAST_MODIFIED,
        }
        if request.headers.get("If-None-Match") == self.etag:
            if self.mode == "304-other-etag":
                fields["ETag"] = '"elsewhere"'
            elif self.mode == "304-no-store":
                fields["Cache-Control"] = "no-store"
            elif self.mode == "304-max-age":
                fields["Cache-Control"] = "max-age=50"
            return web.Response(status=304, headers=fields)
        fields |= {"Content-Type": "text/plain", "X-Secret": "s3", "X-Origin": "a"}
        return web.Response(body=self.body, headers=fields)


@pytest.fixture
def obj(origin: ScriptedOrigin) -> Validating:
    v = Validating(origin)
    origin.script("/obj", v)
    return v


@pytest.fixture
async def stale(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    obj: Validating,
    client: aiohttp.ClientSession,
    clock: FakeClock,
) -> Proxy:
    """A proxy holding /obj hot (a miss, then a hit), now 10 s stale."""
    p = await make_proxy(origin_url(origin))
    await warm(client, p)
    clock.advance(20)
    return p


def metric_lines(registry: CollectorRegistry) -> list[str]:
    """The counters that tell what was answered how (no timings)."""
    names = (
        "edgeproxy_requests_total",
        "edgeproxy_origin_requests_total",
        "edgeproxy_response_bytes_total",
    )
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith(names)]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edgeproxy.access"]


def inflight(proxy: Proxy) -> int:
    """Requests the proxy's pools count as under way (pool.Pool.acquire)."""
    pools = proxy.app[EDGE].pools().values()
    return sum(s.inflight for pool in pools for s in pool._state.values())


def wire_revalidations(proxy: Proxy) -> int:
    return proxy.app[EDGE].counters["wire_revalidations"]


async def warm(client: aiohttp.ClientSession, proxy: Proxy, path: str = "/obj") -> None:
    """A miss, then a hit: the entry and its body are hot."""
    for _ in range(2):
        got = await fetch(client, "GET", proxy.url + path)
        assert got.status == 200
    assert isinstance(proxy.app[EDGE].store, TieredStore)


async def warm_raw(proxy: Proxy, path: str) -> None:
    """`warm`, on a raw connection (test_wire.get's Host: another key)."""
    conn = await Conn.open(proxy)
    for _ in range(2):
        await conn.send(get(path))
        await conn.response()
    conn.close()


def upstream_view(origin: ScriptedOrigin) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """What reached the origin, but the request id (compared on its own)."""
    names = (
        "host",
        "if-none-match",
        "if-modified-since",
        "via",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "accept-encoding",
        "cache-control",
        "content-length",
    )
    seen = []
    for r in origin.received:
        fields = [(n, r.headers.get(n, "-")) for n in names]
        # X-Forwarded-Host names the proxy, whose port differs from run to run.
        fields = [(n, v.rpartition(":")[0] if n == "x-forwarded-host" else v) for n, v in fields]
        seen.append((r.method, r.path_qs, fields))
    return seen


# (name, request fields, clock advance, origin mode): one request each, in order.
STEPS: list[tuple[str, dict[str, str], float, str]] = [
    ("stale-304", {}, 20, "normal"),  # 4.3.4: freshened, the stored body served
    ("fresh-after", {}, 1, "normal"),  # a hit again, Age from the 304's Date
    ("stale-client-inm", {"If-None-Match": V1}, 20, "normal"),  # 9110 13.1.2: a 304 to it
    ("stale-client-ims", {"If-Modified-Since": LAST_MODIFIED}, 20, "normal"),  # 13.1.3
    ("stale-client-other", {"If-None-Match": V2}, 20, "normal"),  # our own INM goes upstream
    ("stale-max-age", {}, 20, "304-max-age"),  # the 304's Cache-Control replaces the stored
    ("fresh-longer", {}, 30, "normal"),  # fresh for 50 now
    ("stale-500", {}, 40, "500"),  # relayed by the full path, sent once
    ("stale-again", {}, 0, "normal"),  # the 500 wasn't stored: revalidated again
    ("stale-other-etag", {}, 60, "304-other-etag"),  # 4.3.4: not ours: fetched whole
    ("after-refetch", {}, 1, "normal"),
    ("stale-no-store", {}, 20, "304-no-store"),  # the merged response served, then gone
    ("miss-after", {}, 0, "normal"),
]


async def run_steps(
    client: aiohttp.ClientSession, proxy: Proxy, obj: Validating, clock: FakeClock
) -> list[Any]:
    seen = []
    for name, headers, advance, mode in STEPS:
        clock.advance(advance)
        obj.mode = mode
        before = len(obj.origin.received)
        got = await fetch(client, "GET", proxy.url + "/obj", headers=headers)
        went = obj.origin.received[before:]
        rid = got.headers.get("X-Request-Id")
        # What went upstream carried the request id the client got back.
        assert all(r.headers.get("X-Request-Id") == rid for r in went), name
        fields = [(k, v) for k, v in got.headers.items() if k.lower() != "x-request-id"]
        seen.append((name, got.status, fields, got.body, len(went)))
    return seen


async def test_both_paths_revalidate_alike(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    obj: Validating,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    tmp_path: Any,
    hit_path: str,
) -> None:
    start = clock.now
    runs = []
    tallies = []
    for fast in (True, False):
        clock.now = start
        origin.received.clear()
        obj.mode = "normal"
        p = await make_proxy(
            origin_url(origin), cache_dir=str(tmp_path / str(fast)), fast_path=fast
        )
        await warm(client, p)
        seen = await run_steps(client, p, obj, clock)
        runs.append((seen, upstream_view(origin), wire_revalidations(p)))
        edge = p.app[EDGE]
        await asyncio.sleep(0.01)  # the metrics flush once per loop turn
        # What /stats and the metrics say (the wire path's own counts
        # aside): the same story on both paths.
        tallies.append(
            (
                {k: v for k, v in edge.counters.items() if not k.startswith("wire_")},
                dict(edge.outcomes),
                edge.store.memory_stats()["memory_hits"],
                metric_lines(edge.metrics.registry),
            )
        )
    (wire_seen, wire_up, on_wire), (full_seen, full_up, off_wire) = runs
    assert tallies[0] == tallies[1]
    assert any('cache="revalidated"' in line for line in tallies[0][3]), tallies[0][3]
    for w, f in zip(wire_seen, full_seen, strict=True):
        assert w == f, w[0]
    assert wire_up == full_up
    # Every 304 that validated the entry was answered on the wire (7 of
    # them), none with the fast path off ([aiohttp]: both proxies are).
    assert off_wire == 0
    assert on_wire == (7 if hit_path == "wire" else 0)
    got = {
        name: (status, CIMultiDict(fields), body, sent)
        for name, status, fields, body, sent in wire_seen
    }
    status, fields, body, sent = got["stale-304"]
    assert (status, body, sent) == (200, BODY, 1)
    assert fields["Cache-Status"] == "edgeproxy; fwd=stale; fwd-status=304; ttl=10"
    assert fields["Age"] == "0"
    assert fields["X-Secret"] == "s3"  # just validated: qualified no-cache allows it (5.2.2.4)
    status, fields, body, sent = got["fresh-after"]
    assert (status, sent) == (200, 0) and fields["Age"] == "1"
    assert "X-Secret" not in fields  # a hit withholds it
    assert got["stale-client-inm"][0] == 304 and got["stale-client-inm"][3] == 1
    assert got["stale-client-ims"][0] == 304
    assert got["stale-client-other"][0] == 200
    assert "ttl=50" in got["stale-max-age"][1]["Cache-Status"]
    assert got["fresh-longer"][3] == 0  # fresh for 50 after the 304 said so
    status, fields, _, sent = got["stale-500"]
    assert (status, sent) == (500, 1)  # the origin's 500, sent once
    assert got["stale-again"][3] == 1 and got["stale-again"][0] == 200
    # A 304 for another tag: the object is fetched whole (conditional, then plain).
    assert got["stale-other-etag"][0] == 200 and got["stale-other-etag"][3] == 2
    # A 304 that makes it unstorable still answers this request (4.3.4),
    # once: the stored copy is dropped after, not fetched again.
    assert got["stale-no-store"][0] == 200 and got["stale-no-store"][2] == BODY
    assert got["stale-no-store"][3] == 1
    assert "fwd=uri-miss" in got["miss-after"][1]["Cache-Status"]
    # The conditional request that went upstream: our validator, our fields.
    conditional = [fields for _, _, fields in wire_up if dict(fields)["if-none-match"] != "-"]
    assert conditional and all(dict(f)["if-none-match"] == V1 for f in conditional)
    first = dict(conditional[0])
    assert first["if-modified-since"] == LAST_MODIFIED
    assert first["via"] == "1.1 edgeproxy" and first["x-forwarded-for"] == "127.0.0.1"
    assert first["content-length"] == "-"


async def test_a_changed_object_goes_upstream_once(
    stale: Proxy,
    origin: ScriptedOrigin,
    obj: Validating,
    client: aiohttp.ClientSession,
) -> None:
    """A new object instead of a 304: the full path relays and stores the
    answer the wire path got (upstream.Prefetched); the origin sees one request."""
    p = stale
    obj.etag, obj.body = V2, b"new" * 10
    before = len(origin.received)
    got = await fetch(client, "GET", p.url + "/obj")
    assert len(origin.received) == before + 1
    assert origin.received[-1].headers["If-None-Match"] == V1
    assert got.status == 200 and got.body == b"new" * 10
    assert got.headers["ETag"] == V2
    assert "fwd=stale; fwd-status=200; stored" in got.headers["Cache-Status"]
    again = await fetch(client, "GET", p.url + "/obj")
    assert again.body == b"new" * 10 and "hit" in again.headers["Cache-Status"]
    assert len(origin.received) == before + 1
    assert wire_revalidations(p) == 0  # answered by the full path
    assert inflight(p) == 0  # the handed-over response gave its server back


async def test_origin_down_stale_if_error_tried_once(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    obj: Validating,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No origin at all: the failure the wire path met is the full path's to
    answer (stale-if-error, RFC 5861 section 4), without a second attempt."""
    obj.cache_control = "max-age=10, stale-if-error=600"
    p = await make_proxy(origin_url(origin))
    await warm(client, p)
    await origin.close()
    clock.advance(20)
    edge = p.app[EDGE]
    attempts = edge.counters["origin_requests"]
    got = await fetch(client, "GET", p.url + "/obj")
    assert got.status == 200 and got.body == BODY
    assert "fwd=stale" in got.headers["Cache-Status"]
    assert edge.counters["origin_requests"] == attempts + 1
    assert edge.counters["stale_if_error"] == 1
    # One server: no retry, and no log line announcing one.
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


async def test_concurrent_requests_share_one_revalidation(
    stale: Proxy,
    origin: ScriptedOrigin,
    obj: Validating,
    client: aiohttp.ClientSession,
    hit_path: str,
) -> None:
    """Requests for a key being revalidated wait for it (collapse.py) and are
    answered from the freshened entry: one conditional request upstream."""
    p = stale
    obj.hold = asyncio.Event()
    before = len(origin.received)
    first = asyncio.ensure_future(fetch(client, "GET", p.url + "/obj"))
    for _ in range(200):  # until the first one's request has reached the origin
        if p.app[EDGE].flights.waiting():
            break
        await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(fetch(client, "GET", p.url + "/obj")) for _ in range(4)]
    for _ in range(200):
        if sum(p.app[EDGE].flights.waiting().values()) >= 4:
            break
        await asyncio.sleep(0.01)
    obj.hold.set()
    answers = await asyncio.gather(first, *rest)
    assert [a.status for a in answers] == [200] * 5
    assert all(a.body == BODY for a in answers)
    assert len(origin.received) == before + 1
    assert "fwd-status=304" in answers[0].headers["Cache-Status"]
    assert all("collapsed" in a.headers["Cache-Status"] for a in answers[1:])
    assert wire_revalidations(p) == (1 if hit_path == "wire" else 0)


async def test_client_gone_the_entry_is_still_freshened(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    obj: Validating,
    clock: FakeClock,
    hit_path: str,
) -> None:
    """A client that leaves mid-revalidation: the 304 still freshens the
    store, and the next request is a hit."""
    p = await make_proxy(origin_url(origin))
    await warm_raw(p, "/obj")
    clock.advance(20)
    obj.hold = asyncio.Event()
    before = len(origin.received)
    conn = await Conn.open(p)
    await conn.send(get("/obj"))
    for _ in range(200):
        if len(origin.received) > before:
            break
        await asyncio.sleep(0.01)
    conn.close()
    await asyncio.sleep(0.05)
    obj.hold.set()
    for _ in range(200):
        if not p.app[EDGE].flights.waiting():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    obj.hold = None
    conn = await Conn.open(p)
    await conn.send(get("/obj"))
    _, fields, body = await conn.response()
    conn.close()
    assert body == BODY
    assert fields["cache-status"].startswith("edgeproxy; hit"), fields["cache-status"]
    assert fields["age"] == "0"
    assert len(origin.received) == before + 1
    assert inflight(p) == 0
    # [wire]: the revalidation went on without its client (not counted as
    # answered: nothing was written).
    assert p.app[EDGE].counters["revalidated_304"] == 1


async def test_pipelined_requests_answered_in_order(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    obj: Validating,
    client: aiohttp.ClientSession,
    clock: FakeClock,
) -> None:
    """Requests the client sent behind a revalidation wait for it, then are
    answered in order (RFC 9112 section 9.3.2), whichever path takes each."""
    origin.script("/other", obj)
    p = await make_proxy(origin_url(origin))
    await warm_raw(p, "/obj")
    await warm_raw(p, "/other")
    clock.advance(20)
    conn = await Conn.open(p)
    await conn.send(get("/obj") + get("/other", b"X-N: 2\r\n") + get("/obj"))
    heads = []
    for _ in range(3):
        _, fields, body = await conn.response()
        assert body == BODY
        heads.append(fields["cache-status"])
    conn.close()
    assert "fwd-status=304" in heads[0] and "fwd-status=304" in heads[1]
    assert heads[2].startswith("edgeproxy; hit")


async def test_request_id_and_access_line(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    obj: Validating,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client's request id goes upstream and comes back, and the access
    line (JSON, then combined) tells a revalidation: outcome, the origin's
    304 and its time, the body bytes, that id."""
    p = await make_proxy(origin_url(origin))
    await warm(client, p)
    edge = p.app[EDGE]
    caplog.set_level(logging.INFO, logger="edgeproxy.access")
    lines: list[str] = []
    for fmt, rid in (("json", "abc-123"), ("combined", "def-456")):
        cfg = edge.snapshot.config
        log_cfg = dataclasses.replace(cfg.log, access_log=True, access_format=fmt)
        cfg = dataclasses.replace(cfg, log=log_cfg)
        edge.snapshot = dataclasses.replace(edge.snapshot, config=cfg)
        clock.advance(20)
        got = await fetch(client, "GET", p.url + "/obj", headers={"X-Request-Id": rid})
        assert got.headers["X-Request-Id"] == rid
        assert origin.received[-1].headers["X-Request-Id"] == rid
        assert "fwd-status=304" in got.headers["Cache-Status"]
        seen = len(lines)
        await until(lambda n=seen: len(access_lines(caplog)) > n, f"the {fmt} access line")
        lines = access_lines(caplog)
    record = json.loads(lines[0])
    asked = ("method", "url", "status", "bytes", "cache", "origin_status")
    assert {k: record[k] for k in asked} == {
        "method": "GET",
        "url": "/obj",
        "status": 200,
        "bytes": len(BODY),
        "cache": "revalidated",
        "origin_status": 304,
    }
    assert isinstance(record["origin_ms"], float) and record["request_id"] == "abc-123"
    assert '"GET /obj HTTP/1.1" 200 1000' in lines[1]
    assert "cache=revalidated" in lines[1] and "origin_status=304" in lines[1]
    assert "request_id=def-456" in lines[1]
    assert edge.outcomes["revalidated"] == 2


async def test_purged_while_upstream_is_not_served(
    stale: Proxy,
    origin: ScriptedOrigin,
    obj: Validating,
    client: aiohttp.ClientSession,
) -> None:
    """A purge that lands while the conditional request is upstream: the
    304 that follows freshens nothing, and the purged body is not what the
    client gets: the object is fetched again, on either path."""
    p = stale
    obj.hold = asyncio.Event()
    before = len(origin.received)
    pending = asyncio.ensure_future(fetch(client, "GET", p.url + "/obj"))
    await until(lambda: len(origin.received) > before, "the conditional request upstream")
    store = p.app[EDGE].store
    (entry,) = await store.entries()
    await store.purge(Purge(target=PurgeURL(entry.key)))
    obj.body = b"after the purge"  # same tag: the held request still gets its 304
    obj.hold.set()
    got = await pending
    assert got.status == 200 and got.body == b"after the purge"
    assert [r.headers.get("If-None-Match") for r in origin.received[before:]] == [V1, None]
    assert inflight(p) == 0


async def test_waiters_share_a_changed_object(
    stale: Proxy,
    origin: ScriptedOrigin,
    obj: Validating,
    client: aiohttp.ClientSession,
) -> None:
    """Requests collapsed on a revalidation whose answer is a new object get
    it from that one response (the full path leads the flight on from the
    wire path), not one origin request each."""
    p = stale
    obj.etag, obj.body = V2, b"changed" * 100
    obj.hold = asyncio.Event()
    before = len(origin.received)
    first = asyncio.ensure_future(fetch(client, "GET", p.url + "/obj"))
    flights = p.app[EDGE].flights
    await until(lambda: bool(flights.waiting()), "the first request's flight")
    rest = [asyncio.ensure_future(fetch(client, "GET", p.url + "/obj")) for _ in range(4)]
    await until(lambda: sum(flights.waiting().values()) >= 4, "four waiters")
    obj.hold.set()
    answers = await asyncio.gather(first, *rest)
    assert [a.body for a in answers] == [b"changed" * 100] * 5
    assert len(origin.received) == before + 1
    assert "fwd-status=200; stored" in answers[0].headers["Cache-Status"]
    assert all("collapsed" in a.headers["Cache-Status"] for a in answers[1:])
    assert not flights.waiting()
    assert inflight(p) == 0


async def test_waiters_served_when_the_leader_left(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    obj: Validating,
    clock: FakeClock,
) -> None:
    """The leading client leaves before a changed object comes back: the
    waiters still get it, promptly (well within `collapse_wait`, 30 s here),
    and nothing is left in flight or holding a pool server."""
    p = await make_proxy(origin_url(origin), collapse_wait=30.0)
    await warm_raw(p, "/obj")
    clock.advance(20)
    obj.etag, obj.body = V2, b"changed"
    obj.hold = asyncio.Event()
    leader = await Conn.open(p)
    await leader.send(get("/obj"))
    flights = p.app[EDGE].flights
    await until(lambda: bool(flights.waiting()), "the leader's flight")
    waiters = []
    for _ in range(3):
        conn = await Conn.open(p)
        await conn.send(get("/obj"))
        waiters.append(conn)
    await until(lambda: sum(flights.waiting().values()) >= 3, "three waiters")
    leader.close()
    await asyncio.sleep(0.05)
    obj.hold.set()
    for conn in waiters:
        _, fields, body = await asyncio.wait_for(conn.response(), 5)
        assert body == b"changed", fields
        conn.close()
    await until(lambda: not flights.waiting(), "no flight left")
    await until(lambda: inflight(p) == 0, "every pool server given back")


async def test_shutdown_waits_for_a_revalidation_in_flight(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    obj: Validating,
    clock: FakeClock,
) -> None:
    """The drain waits for a revalidation under way, as for aiohttp's own
    handlers: its client gets the whole answer."""
    p = await make_proxy(origin_url(origin))
    await warm_raw(p, "/obj")
    clock.advance(20)
    obj.hold = asyncio.Event()
    before = len(origin.received)
    conn = await Conn.open(p)
    await conn.send(get("/obj"))
    await until(lambda: len(origin.received) > before, "the conditional request upstream")
    closing = asyncio.create_task(p.close())
    await asyncio.sleep(0.1)
    assert not closing.done()  # waiting for the revalidation
    obj.hold.set()
    _, fields, body = await asyncio.wait_for(conn.response(), 5)
    assert body == BODY and "fwd-status=304" in fields["cache-status"]
    conn.close()
    await asyncio.wait_for(closing, 10)
