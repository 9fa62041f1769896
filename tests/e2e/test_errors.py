"""Origin failures mapped to 502/504 with a short text body and Proxy-Status (RFC 9209).

RFC 9110 section 15.6.3 (502 Bad Gateway), 15.6.5 (504 Gateway Timeout);
RFC 9209 section 2.3 (proxy error types).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import (
    Got,
    Proxy,
    RawOrigin,
    Reply,
    ScriptedOrigin,
    closed_port_url,
    fetch,
    full_backlog_listener,
)


@pytest.fixture
async def raw_origin() -> AsyncIterator[RawOrigin]:
    o = RawOrigin()
    await o.start()
    yield o
    await o.close()


def assert_error(got: Got, status: int, error: str) -> None:
    assert got.status == status
    assert got.headers["Content-Type"].startswith("text/plain")
    assert 0 < len(got.body) < 500  # short text, no origin page
    reason = {502: b"Bad Gateway", 504: b"Gateway Timeout"}[status]
    assert got.body.startswith(reason)
    assert got.headers["Proxy-Status"].startswith(f"edgeproxy; error={error}; details=")
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=")
    assert got.headers["Via"] == "1.1 edgeproxy"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_origin_refusing_connections_is_502(
    make_proxy: MakeProxy, client: aiohttp.ClientSession, method: str
) -> None:
    # RFC 9209 section 2.3.7: connection_refused.
    proxy = await make_proxy(closed_port_url())
    got = await fetch(client, method, proxy.url + "/x", data=b"body" if method == "POST" else None)
    assert_error(got, 502, "connection_refused")


async def test_origin_read_timeout_is_504(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # The origin accepts and reads the request, then says nothing for longer
    # than read_timeout (RFC 9209 section 2.3.13: http_response_timeout).
    release = asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="too late")

    assert origin.server is not None
    origin.script("/slow", silent)
    proxy = await make_proxy(f"http://127.0.0.1:{origin.server.port}", read_timeout=0.3)
    try:
        got = await fetch(client, "GET", proxy.url + "/slow")
    finally:
        release.set()
    assert_error(got, 504, "http_response_timeout")
    assert origin.hits("/slow") == 1  # the request did reach it


async def test_origin_connect_timeout_is_504(
    make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    # A loopback listener with a full accept queue never completes the TCP
    # handshake, so the connect itself times out (RFC 9209 section 2.3.9:
    # connection_timeout), distinct from a refused connection.
    with full_backlog_listener() as url:
        proxy = await make_proxy(url, connect_timeout=0.3)
        got = await fetch(client, "GET", proxy.url + "/x")
    assert_error(got, 504, "connection_timeout")


@pytest.mark.parametrize(
    ("method", "attempts"),
    [
        # RFC 9112 section 9.3.1: an idempotent request may be retried once
        # automatically (aiohttp's client does); a POST never is.
        ("GET", 2),
        ("POST", 1),
    ],
)
async def test_origin_closing_without_answer_is_502(
    make_proxy: MakeProxy,
    raw_origin: RawOrigin,
    client: aiohttp.ClientSession,
    method: str,
    attempts: int,
) -> None:
    raw_origin.script("/x", b"")  # read the request, close without a byte
    proxy = await make_proxy(raw_origin.url)
    got = await fetch(client, method, proxy.url + "/x", data=b"b" if method == "POST" else None)
    assert_error(got, 502, "connection_terminated")
    assert [r.method for r in raw_origin.received] == [method] * attempts


async def test_origin_sending_garbage_is_502(
    make_proxy: MakeProxy, raw_origin: RawOrigin, client: aiohttp.ClientSession
) -> None:
    raw_origin.script("/x", b"SMTP ready\r\n\r\n")
    proxy = await make_proxy(raw_origin.url)
    got = await fetch(client, "GET", proxy.url + "/x")
    assert_error(got, 502, "http_protocol_error")


async def test_origin_errors_are_passed_on_not_replaced(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # An origin's own 5xx is a response, not a proxy error: relayed as is.
    origin.script("/e", Reply(status=503, body=b"origin maintenance", headers={"Retry-After": "5"}))
    got = await fetch(client, "GET", proxy.url + "/e")
    assert got.status == 503
    assert got.body == b"origin maintenance"
    assert got.headers["Retry-After"] == "5"
    assert "Proxy-Status" not in got.headers
    assert got.headers["Cache-Status"] == "edgeproxy; fwd=uri-miss; fwd-status=503"


async def test_proxy_recovers_after_origin_error(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
) -> None:
    # A timeout poisons nothing: the next request on the pool succeeds.
    release = asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="too late")

    assert origin.server is not None
    origin.script("/slow", silent)
    origin.script("/ok", Reply(body=b"fine"))
    proxy = await make_proxy(f"http://127.0.0.1:{origin.server.port}", read_timeout=0.3)
    try:
        assert (await fetch(client, "GET", proxy.url + "/slow")).status == 504
    finally:
        release.set()
    got = await fetch(client, "GET", proxy.url + "/ok")
    assert (got.status, got.body) == (200, b"fine")
