"""Hostile requests over raw sockets: each is refused with its status and a
closed connection, and nothing reaches the origin (RFC 9112 sections 2-7)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from tests.e2e.harness import Proxy, ScriptedOrigin

CRLF_HOST = b"Host: www.example.test\r\n"
GET = b"GET / HTTP/1.1\r\n" + CRLF_HOST


async def exchange(proxy: Proxy, raw: bytes) -> bytes:
    """Send raw bytes, read until the proxy closes the connection (bounded)."""
    assert proxy.server is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)  # EOF: the proxy closed
    finally:
        writer.close()


CASES = [
    # RFC 9112 section 3: request-line = method SP request-target SP HTTP-version
    pytest.param(b"GET\r\n\r\n", 400, id="9112-3 no target"),
    pytest.param(b"GET /a b HTTP/1.1\r\n" + CRLF_HOST + b"\r\n", 400, id="9112-3 SP in target"),
    pytest.param(b"GET / HTTP/1.x\r\n" + CRLF_HOST + b"\r\n", 400, id="9112-2.3 bad version"),
    pytest.param(b"GET / HTTP/2.0\r\n" + CRLF_HOST + b"\r\n", 505, id="9110-15.6.6 HTTP/2.0"),
    # RFC 9112 section 5: field-name is a token, no whitespace before the colon
    pytest.param(GET + b"Bad Name: v\r\n\r\n", 400, id="9112-5 bad name"),
    pytest.param(GET + b"X : a\r\n\r\n", 400, id="9112-5.1 SP colon"),
    # RFC 9110 section 5.5: CTLs, bare CR in a value; RFC 9112 section 2.2 bare LF
    pytest.param(GET + b"X: a\x01b\r\n\r\n", 400, id="9110-5.5 CTL"),
    pytest.param(GET + b"X: a\rb\r\n\r\n", 400, id="9110-5.5 bare CR"),
    pytest.param(b"GET / HTTP/1.1\nHost: www.example.test\n\n", 400, id="9112-2.2 bare LF"),
    # RFC 9112 section 5.2: obs-fold in a request is rejected with 400
    pytest.param(GET + b"X: a\r\n b\r\n\r\n", 400, id="9112-5.2 fold"),
    # RFC 9112 section 3.2: Host missing or repeated in HTTP/1.1
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="9112-3.2 no Host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="9112-3.2 two Hosts"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, id="9112-3.2 invalid Host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, id="9112-3.2 Host with path"),
    # RFC 9112 section 6.1 / 6.3: framing ambiguity (smuggling)
    pytest.param(
        b"POST / HTTP/1.1\r\n" + CRLF_HOST + b"Content-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        id="9112-6.1 CL and TE",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + CRLF_HOST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        id="9112-6.3 two CL",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + CRLF_HOST + b"Content-Length: 3, 4\r\n\r\nabcd",
        400,
        id="9112-6.3 CL list",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + CRLF_HOST + b"Transfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n",
        400,
        id="9112-7.1 bad chunk size",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + CRLF_HOST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
        id="9112-6.3 chunked not last",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + CRLF_HOST + b"Transfer-Encoding: gzip\r\n\r\n",
        400,
        id="9112-6.3 TE without chunked",
    ),
    # RFC 9112 section 3.2: only origin-form and absolute-form reach an origin
    pytest.param(b"OPTIONS * HTTP/1.1\r\n" + CRLF_HOST + b"\r\n", 400, id="9112-3.2.4 asterisk"),
    pytest.param(
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        400,
        id="9112-3.2.3 authority-form",
    ),
    pytest.param(
        b"GET http://user@www.example.test/ HTTP/1.1\r\n" + CRLF_HOST + b"\r\n",
        400,
        id="9110-4.2.4 userinfo",
    ),
    pytest.param(
        b"GET ftp://www.example.test/ HTTP/1.1\r\n" + CRLF_HOST + b"\r\n", 400, id="9112-3.2.2 ftp"
    ),
    # RFC 9112 section 3: long request line 414; RFC 6585 section 5: fields 431
    pytest.param(
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n" + CRLF_HOST + b"\r\n", 414, id="9112-3 long line"
    ),
    pytest.param(
        GET + b"X: " + b"a" * 100_000 + b"\r\n\r\n",
        431,
        id="6585-5 big field",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n"
        + CRLF_HOST
        + b"".join(b"X%d: a\r\n" % i for i in range(500))
        + b"\r\n",
        431,
        id="6585-5 many fields",
    ),
]


@pytest.mark.parametrize(("raw", "status"), CASES)
async def test_malformed_request_refused(
    proxy: Proxy, origin: ScriptedOrigin, raw: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    origin.script("/", lambda request: _never(request))
    with caplog.at_level(logging.INFO):
        answer = await exchange(proxy, raw)  # returns only once the proxy closed
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0]
    assert status_line.split(b" ")[1] == str(status).encode(), answer[:300]
    assert body and len(body) < 300  # a short reason
    assert origin.received == []
    # No traceback flood: a bad request is one log line at most, without exc_info.
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


async def _never(request: object) -> object:
    raise AssertionError("a refused request reached the origin")


async def test_valid_absolute_form_for_served_host_still_works(
    proxy: Proxy, origin: ScriptedOrigin
) -> None:
    # Guard for the table above: the refusals are about the target, not absolute-form itself.
    from tests.e2e.harness import Reply

    origin.script("/ok", Reply(body=b"ok"))
    answer = await exchange(
        proxy,
        b"GET http://WWW.Example.test:80/ok HTTP/1.1\r\n"
        + CRLF_HOST
        + b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert origin.last().headers["X-Forwarded-Host"] == "www.example.test"  # normalised


async def restart_with(proxy: Proxy, **limits: object) -> None:
    """Restart the same proxy with other limits (read as each connection opens)."""
    await proxy.close()
    proxy.config = dataclasses.replace(
        proxy.config, limits=dataclasses.replace(proxy.config.limits, **limits)
    )
    await proxy.start()


async def test_limits_are_configurable(proxy: Proxy, origin: ScriptedOrigin) -> None:
    await restart_with(proxy, max_request_line=100, max_header_size=200, max_headers=5)
    line = await exchange(proxy, b"GET /" + b"a" * 150 + b" HTTP/1.1\r\n" + CRLF_HOST + b"\r\n")
    assert line.startswith(b"HTTP/1.0 414 ")
    field = await exchange(proxy, GET + b"X: " + b"a" * 250 + b"\r\n\r\n")
    assert field.startswith(b"HTTP/1.0 431 ")
    many = b"".join(b"X%d: a\r\n" % i for i in range(6))
    count = await exchange(proxy, GET + many + b"\r\n")
    assert count.startswith(b"HTTP/1.0 431 ")
    assert origin.received == []


async def test_dribbled_head_is_cut_off(proxy: Proxy, origin: ScriptedOrigin) -> None:
    # A head sent a byte at a time never completes: the deadline runs from its
    # first byte, so the dribble is not "progress" (RFC 9110 section 15.5.9: 408).
    await restart_with(proxy, header_timeout=0.2)
    assert proxy.server is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    try:
        head = b"GET / HTTP/1.1\r\nHost: www.example.test\r\nX-Slow: " + b"a" * 1000
        answer = b""
        for byte in head:  # bounded: the proxy closes long before the head ends
            writer.write(bytes([byte]))
            await writer.drain()
            chunk = await _read_some(reader, 0.02)
            answer += chunk
            if chunk == b"" and reader.at_eof():
                break
        answer += await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert origin.received == []


async def _read_some(reader: asyncio.StreamReader, wait: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(4096), wait)
    except TimeoutError:
        return b""


async def test_stalled_body_is_cut_off(proxy: Proxy, origin: ScriptedOrigin) -> None:
    # A body that never finishes: after body_timeout without a byte the
    # connection is closed, and the upload to the origin is aborted.
    await restart_with(proxy, body_timeout=0.2)
    from tests.e2e.harness import Reply

    origin.script("/up", Reply(body=b"stored"))
    assert proxy.server is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\n" + CRLF_HOST + b"Content-Length: 100\r\n\r\nabc")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # EOF: the proxy gave up
    finally:
        writer.close()
    assert b"200" not in answer.split(b"\r\n")[0]
    # Whatever reached the origin is not a complete 100-byte body.
    assert all(len(r.body) < 100 for r in origin.received)


async def test_idle_connection_is_closed(proxy: Proxy, origin: ScriptedOrigin) -> None:
    # Many idle connections are bounded in time: each closes after keepalive_timeout.
    await restart_with(proxy, keepalive_timeout=0.2)
    assert proxy.server is not None
    conns = [await asyncio.open_connection("127.0.0.1", proxy.server.port) for _ in range(20)]
    try:
        for reader, _ in conns:
            assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        for _, writer in conns:
            writer.close()
    assert origin.received == []
