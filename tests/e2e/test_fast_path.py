"""The hot hit path answers exactly as the disk path does.

A hit from the per-worker hot tier (store/tiered.py) is answered from a
per-entry header template (serving._send_stored_head: only Age, Cache-Status
and the request id are set per request), by the wire fast path (wire.py) or,
with `fast_path: false` (the [aiohttp] runs), by aiohttp's handler; with
`memory_size: 0` every hit is built field by field from the disk store.
Each scenario below runs against both, and the heads must agree field for
field (order included), apart from the request id (fresh per request). The rules checked on the way:
freshness and Age (RFC 9111 sections 4.2, 5.1), request Cache-Control
(5.2.1), Vary (4.1), client conditionals (RFC 9110 section 13: 304 with the
15.4.5 fields, 412), Range (14), qualified no-cache (RFC 9111 5.2.2.4),
route response edits, and purges (a hot entry is never served once purged).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from edgeproxy.config import HeaderEdits
from edgeproxy.purge import Purge, PurgeURL
from edgeproxy.state import EDGE
from edgeproxy.store.tiered import TieredStore
from tests.conftest import FakeClock
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch

ETAG = '"v1"'
STORED = {
    "Cache-Control": "max-age=100",
    "ETag": ETAG,
    "Content-Type": "text/plain",
    "Vary": "Accept-Language",
    "X-Origin": "a",
}

# (name, request fields, clock advance before it): one request each, in order.
SCENARIOS: list[tuple[str, dict[str, str], float]] = [
    ("miss", {"Accept-Language": "en"}, 0),  # stored (RFC 9111 section 3)
    ("hit", {"Accept-Language": "en"}, 5),  # RFC 9111 4.2: fresh, Age 5
    ("hit-later", {"Accept-Language": "en"}, 10),  # Age grows with the clock
    ("vary-miss", {"Accept-Language": "de"}, 0),  # 4.1: another variant
    ("inm-304", {"Accept-Language": "en", "If-None-Match": ETAG}, 0),  # 9110 13.1.2
    ("inm-weak-304", {"Accept-Language": "en", "If-None-Match": 'W/"v1"'}, 0),
    ("inm-other", {"Accept-Language": "en", "If-None-Match": '"v2"'}, 0),
    ("if-match-412", {"Accept-Language": "en", "If-Match": '"v2"'}, 0),  # 9110 13.1.1
    ("range", {"Accept-Language": "en", "Range": "bytes=2-5"}, 0),  # 9110 14
    ("if-range-no", {"Accept-Language": "en", "Range": "bytes=2-5", "If-Range": '"v2"'}, 0),
    ("req-max-age", {"Accept-Language": "en", "Cache-Control": "max-age=3"}, 0),  # 5.2.1.1
    ("head", {"Accept-Language": "en"}, 0),
    ("stale", {"Accept-Language": "en"}, 200),  # 4.2: past max-age: upstream again
]


async def run_scenarios(client: aiohttp.ClientSession, p: Proxy, clock: FakeClock) -> list[Any]:
    seen = []
    for name, headers, advance in SCENARIOS:
        clock.advance(advance)
        method = "HEAD" if name == "head" else "GET"
        got = await fetch(client, method, p.url + "/obj", headers=headers)
        fields = [(k, v) for k, v in got.headers.items() if k.lower() != "x-request-id"]
        seen.append((name, got.status, fields, got.body))
    return seen


@pytest.fixture
def obj_origin(origin: ScriptedOrigin) -> ScriptedOrigin:
    origin.script("/obj", Reply(body=b"0123456789", headers=dict(STORED)))
    return origin


def origin_url(origin: ScriptedOrigin) -> str:
    assert origin.server is not None
    return f"http://127.0.0.1:{origin.server.port}"


async def test_hot_and_disk_paths_answer_alike(
    make_proxy: MakeProxy,
    obj_origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    tmp_path: Any,
    hit_path: str,
) -> None:
    start = clock.now
    hot = await make_proxy(origin_url(obj_origin), cache_dir=str(tmp_path / "hot"))
    assert isinstance(hot.app[EDGE].store, TieredStore)
    hot_seen = await run_scenarios(client, hot, clock)
    hot_hits = hot.app[EDGE].store.memory_stats()["memory_hits"]
    # [wire]: the hot hits went the wire fast path (wire.py); [aiohttp]: none did.
    wire_hits = hot.app[EDGE].counters["wire_hits"]
    assert wire_hits >= 3 if hit_path == "wire" else wire_hits == 0, wire_hits
    hot_origin = obj_origin.hits("/obj")
    clock.now = start
    disk = await make_proxy(origin_url(obj_origin), cache_dir=str(tmp_path / "disk"), memory_size=0)
    assert not isinstance(disk.app[EDGE].store, TieredStore)
    disk_seen = await run_scenarios(client, disk, clock)
    assert hot_hits > 5, "the hot tier answered the hits"
    for h, d in zip(hot_seen, disk_seen, strict=True):
        assert h == d, h[0]
    statuses = {name: status for name, status, _, _ in hot_seen}
    assert statuses == {
        "miss": 200,
        "hit": 200,
        "hit-later": 200,
        "vary-miss": 200,
        "inm-304": 304,
        "inm-weak-304": 304,
        "inm-other": 200,
        "if-match-412": 412,
        "range": 206,
        "if-range-no": 200,
        "req-max-age": 200,
        "head": 200,
        "stale": 200,
    }
    fields = {name: CIMultiDict(f) for name, _, f, _ in hot_seen}
    assert fields["hit"]["Age"] == "5" and fields["hit-later"]["Age"] == "15"
    assert fields["hit"]["Cache-Status"] == "edgeproxy; hit; ttl=95"
    assert fields["hit"]["Accept-Ranges"] == "bytes"
    assert fields["hit"]["X-Origin"] == "a"
    assert "fwd=vary-miss" in fields["vary-miss"]["Cache-Status"]
    assert "Content-Type" not in fields["inm-304"]  # 9110 15.4.5: not a 304 field
    assert fields["inm-304"]["ETag"] == ETAG
    assert "fwd=request" in fields["req-max-age"]["Cache-Status"]  # Age 15 > 3
    assert fields["range"]["Content-Range"] == "bytes 2-5/10"
    assert "fwd=stale" in fields["stale"]["Cache-Status"]
    # Each path went upstream for the same requests.
    assert obj_origin.hits("/obj") == 2 * hot_origin


async def test_route_edits_apply_on_the_hot_path(
    make_proxy: MakeProxy, obj_origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    p = await make_proxy(origin_url(obj_origin))
    edits = HeaderEdits(add=(("X-Edge", "1"),), set=(("X-Origin", "b"),), remove=("Vary",))
    # An edit naming a per-request field (Age) turns the template off for it.
    per_request = HeaderEdits(remove=("Age",))
    headers = {"Accept-Language": "en"}
    for chosen in (edits, per_request):
        edge = p.app[EDGE]
        cfg = edge.snapshot.config
        route = dataclasses.replace(cfg.routes[0], response_headers=chosen)
        edge.snapshot = dataclasses.replace(
            edge.snapshot, config=dataclasses.replace(cfg, routes=(route,))
        )
        for _ in range(3):  # the miss, then hits from the template
            got = await fetch(client, "GET", p.url + "/obj", headers=headers)
            assert got.body == b"0123456789"
        if chosen is edits:
            assert got.headers["X-Edge"] == "1" and got.headers["X-Origin"] == "b"
            assert "Vary" not in got.headers
        else:
            assert "Age" not in got.headers
        assert got.headers["Cache-Status"].startswith("edgeproxy; hit")


async def test_hot_entry_purged_is_never_served(
    make_proxy: MakeProxy, obj_origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # A purge through the store: the template goes with the entry.
    p = await make_proxy(origin_url(obj_origin))
    headers = {"Accept-Language": "en"}
    for _ in range(2):
        got = await fetch(client, "GET", p.url + "/obj", headers=headers)
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")
    store = p.app[EDGE].store
    stored = await store.entries()
    assert len(stored) == 1
    await store.purge(Purge(target=PurgeURL(stored[0].key)))
    got = await fetch(client, "GET", p.url + "/obj", headers=headers)
    assert "fwd=uri-miss" in got.headers["Cache-Status"]
    assert obj_origin.hits("/obj") == 2
