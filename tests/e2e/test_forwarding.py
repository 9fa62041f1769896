"""Forwarding through the real proxy: methods, targets, header rewriting, keep-alive.

RFC 9110 section 7.6.1 (hop-by-hop fields, Connection), 7.6.3 (Via),
section 7.2 (Host); X-Forwarded-* are de-facto fields this edge sets.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch

HOP_BY_HOP_REQUEST = {
    "Connection": "X-Conn-Named, Keep-Alive",
    "X-Conn-Named": "must not pass",
    "Keep-Alive": "timeout=5",
    "TE": "trailers",
    "Trailer": "X-Checksum",
    "Upgrade": "h2c",
    "Proxy-Connection": "keep-alive",
    "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
}


@pytest.mark.parametrize(
    ("method", "body", "fwd"),
    [
        # RFC 9110 section 9: every method is forwarded; only GET/HEAD look in the cache.
        ("GET", b"", "uri-miss"),
        ("HEAD", b"", "uri-miss"),
        ("POST", b"post-body", "method"),
        ("PUT", b"put-body", "method"),
        ("PATCH", b"patch-body", "method"),
        ("DELETE", b"", "method"),
        ("OPTIONS", b"", "method"),
        ("FROBNICATE", b"extension-body", "method"),  # 9110 section 16.1: extension method
    ],
)
async def test_every_method_is_forwarded(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    method: str,
    body: bytes,
    fwd: str,
) -> None:
    origin.script("/m", Reply(status=200, body=b"answer", headers={"X-Origin": "yes"}))
    got = await fetch(client, method, proxy.url + "/m?q=1&r=two", data=body or None)
    assert got.status == 200
    assert got.headers["X-Origin"] == "yes"
    assert got.body == (b"" if method == "HEAD" else b"answer")
    if method == "HEAD":
        assert got.headers["Content-Length"] == "6"  # the origin's, for the GET it mirrors
    assert got.headers["Cache-Status"] == f"edgeproxy; fwd={fwd}; fwd-status=200"
    assert origin.hits("/m") == 1
    seen = origin.last()
    assert (seen.method, seen.path_qs, seen.body) == (method, "/m?q=1&r=two", body)


async def test_request_target_is_forwarded_byte_for_byte(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # A proxy must not re-encode the target (RFC 9112 section 3.2: origin-form).
    target = "/p%20a/b%2Fc;x=1?q=%41&q=a+b&empty="
    origin.script("/p a/b/c;x=1", Reply(body=b"ok"))
    got = await fetch(client, "GET", aiohttp.client.URL(proxy.url + target, encoded=True))
    assert got.status == 200
    assert origin.last().raw_path == target


async def test_large_chunked_upload_with_unknown_length(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # The client's Transfer-Encoding is hop-by-hop (9112 section 6.1): the body
    # arrives whole even though this hop re-frames it.
    async def parts():  # type: ignore[no-untyped-def]
        for i in range(50):
            yield bytes([65 + i % 26]) * 10_000

    origin.script("/up", Reply(status=201, body=b"created"))
    got = await fetch(client, "POST", proxy.url + "/up", data=parts())
    assert got.status == 201
    expected = b"".join(bytes([65 + i % 26]) * 10_000 for i in range(50))
    assert origin.last().body == expected


async def test_hop_by_hop_request_fields_are_removed(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # RFC 9110 section 7.6.1: Connection, the fields it names, and the
    # hop-by-hop fields; Proxy-Authorization is for this hop only (11.7.2).
    origin.script("/h", Reply(body=b"ok"))
    got = await fetch(
        client, "GET", proxy.url + "/h", headers={**HOP_BY_HOP_REQUEST, "X-End-To-End": "kept"}
    )
    assert got.status == 200
    seen = origin.last().headers
    assert seen["X-End-To-End"] == "kept"
    for name in HOP_BY_HOP_REQUEST:
        if name == "Connection":
            # The proxy's own connection may carry its own Connection field,
            # never the client's nominations.
            assert "x-conn-named" not in seen.get("Connection", "").lower()
        else:
            assert name not in seen, name


async def test_hop_by_hop_response_fields_are_removed_relayed_and_stored(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    hop = {
        "Connection": "X-Conn-Named",
        "X-Conn-Named": "must not pass",
        "Keep-Alive": "timeout=5, max=100",
        "TE": "trailers",
        "Trailer": "X-Checksum",
        "Upgrade": "h2c",
        "Proxy-Connection": "keep-alive",
        "Proxy-Authenticate": 'Basic realm="edge"',
    }

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                **hop,
                "Cache-Control": "max-age=60",
                "X-End-To-End": "kept",
                "Date": origin.date(),
            }
        )
        resp.enable_chunked_encoding()  # the origin sends Transfer-Encoding: chunked
        await resp.prepare(request)
        await resp.write(b"chunk-one;")
        await resp.write(b"chunk-two")
        await resp.write_eof()
        return resp

    origin.script("/h", chunked)
    relayed = await fetch(client, "GET", proxy.url + "/h")
    served = await fetch(client, "GET", proxy.url + "/h")
    assert origin.hits("/h") == 1
    for got, status in ((relayed, "fwd=uri-miss"), (served, "hit")):
        assert got.status == 200
        assert got.body == b"chunk-one;chunk-two"
        assert status in got.headers["Cache-Status"]
        assert got.headers["X-End-To-End"] == "kept"
        for name in hop:
            if name == "Connection":
                assert "x-conn-named" not in got.headers.get("Connection", "").lower()
            else:
                assert name not in got.headers, name
    # From the store the length is known: framed by Content-Length, not the
    # origin's Transfer-Encoding (which was never stored, RFC 9111 section 3.1).
    assert served.headers["Content-Length"] == str(len(b"chunk-one;chunk-two"))
    assert "Transfer-Encoding" not in served.headers


async def test_via_and_x_forwarded_fields_sent_upstream(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    assert origin.server is not None
    origin.script("/f", Reply(body=b"ok"))
    await fetch(
        client,
        "GET",
        proxy.url + "/f",
        headers={
            "Host": "www.example.test",
            "Via": "1.0 lb.example",
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Host": "spoofed.example",
            "X-Forwarded-Proto": "https",
        },
    )
    seen = origin.last().headers
    # RFC 9110 section 7.6.3: append our own Via to the received ones.
    assert ", ".join(seen.getall("Via")) == "1.0 lb.example, 1.1 edgeproxy"
    assert seen["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"  # appended
    assert seen["X-Forwarded-Host"] == "www.example.test"  # set, client value ignored
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen.getall("X-Forwarded-Host") == ["www.example.test"]
    # The Host sent upstream is the origin's own by default (RFC 9110 section 7.2).
    assert seen["Host"] == f"127.0.0.1:{origin.server.port}"


async def test_x_forwarded_for_is_created_when_absent(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/f", Reply(body=b"ok"))
    await fetch(client, "GET", proxy.url + "/f")
    seen = origin.last().headers
    assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.getall("Via") == ["1.1 edgeproxy"]


@pytest.mark.parametrize("from_cache", [False, True], ids=["relayed", "from-cache"])
async def test_via_appended_to_responses(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    from_cache: bool,
) -> None:
    # RFC 9110 section 7.6.3: a proxy sends Via in each message it forwards,
    # after the ones it received, whether relayed or answered from storage.
    origin.script(
        "/v", Reply(body=b"ok", headers={"Via": "1.1 shield", "Cache-Control": "max-age=60"})
    )
    got = await fetch(client, "GET", proxy.url + "/v")
    if from_cache:
        clock.advance(1)
        got = await fetch(client, "GET", proxy.url + "/v")
        assert "hit" in got.headers["Cache-Status"]
    assert ", ".join(got.headers.getall("Via")) == "1.1 shield, 1.1 edgeproxy"
    assert origin.hits("/v") == 1


async def test_via_on_responses_the_proxy_makes(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    origin.script("/v", Reply(body=b"ok", headers={"Cache-Control": "max-age=60"}))
    miss = await fetch(client, "GET", proxy.url + "/v")
    hit = await fetch(client, "GET", proxy.url + "/v")
    assert miss.headers.getall("Via") == ["1.1 edgeproxy"]
    assert hit.headers.getall("Via") == ["1.1 edgeproxy"]


async def test_keep_alive_to_the_origin(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # One shared client session pools connections per origin: sequential
    # requests of every kind reuse one upstream connection.
    origin.script("/k", Reply(body=b"ok"))
    origin.script("/nobody", Reply(status=204))
    for method, path in [
        ("GET", "/k"),
        ("POST", "/k"),
        ("HEAD", "/k"),
        ("GET", "/nobody"),
        ("PUT", "/k"),
        ("GET", "/k"),
    ]:
        got = await fetch(client, method, proxy.url + path, data=b"x" if method != "GET" else None)
        assert got.status in (200, 204)
    ports = [r.peer_port for r in origin.received]
    assert len(ports) == 6
    assert len(set(ports)) == 1, ports


async def test_keep_alive_from_clients_on_separate_connections(
    proxy: Proxy, origin: ScriptedOrigin
) -> None:
    # Two clients with their own connections to the proxy still share the
    # proxy's one pooled upstream connection when they don't overlap.
    origin.script("/k", Reply(body=b"ok"))
    for _ in range(2):
        async with aiohttp.ClientSession() as c:
            for _ in range(2):
                assert (await fetch(c, "GET", proxy.url + "/k")).status == 200
    assert len({r.peer_port for r in origin.received}) == 1
    assert origin.hits("/k") == 4


async def raw_request(proxy: Proxy, request: bytes) -> bytes:
    """Send bytes as they are (forms aiohttp's client won't produce); read to EOF."""
    assert proxy.server is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_absolute_form_target(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # RFC 9112 section 3.2.2: a server accepts absolute-form, and the target's
    # authority replaces the Host field; upstream it goes in origin-form.
    origin.script("/a", Reply(body=b"absolute", headers={"Cache-Control": "max-age=60"}))
    answer = await raw_request(
        proxy,
        b"GET http://www.example.test/a?x=1 HTTP/1.1\r\n"
        b"Host: ignored.example\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\nabsolute")
    seen = origin.last()
    assert seen.raw_path == "/a?x=1"
    assert seen.headers["X-Forwarded-Host"] == "www.example.test"
    # Stored under that authority: the origin-form request for it is a hit.
    got = await fetch(client, "GET", proxy.url + "/a?x=1", headers={"Host": "www.example.test"})
    assert (got.body, got.headers["Cache-Status"]) == (b"absolute", "edgeproxy; hit; ttl=60")
    assert origin.hits("/a") == 1


async def test_http_1_0_client(proxy: Proxy, origin: ScriptedOrigin) -> None:
    # No chunked framing for an HTTP/1.0 client (RFC 9112 section 6.1); Via
    # names the protocol the message was received with (9110 section 7.6.3).
    origin.script("/old", Reply(body=b"for 1.0", headers={"Cache-Control": "max-age=60"}))
    for _ in range(2):
        answer = await raw_request(proxy, b"GET /old HTTP/1.0\r\nHost: www.example.test\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 ") or head.startswith(b"HTTP/1.1 200 ")
        assert body == b"for 1.0"
        assert b"\r\nVia: 1.0 edgeproxy" in head
        assert b"Transfer-Encoding" not in head
    assert origin.hits("/old") == 1
    assert origin.last().headers["Via"] == "1.0 edgeproxy"
