"""The lean origin client's framing, fed bytes directly (no sockets): any split
of a response gives the same status, fields and body; request heads parse
back to what was asked. Sockets, pools and timeouts: tests/e2e/test_h1client.py.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import httptools
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from edgeproxy.h1client import OriginResponse, Server, _Connection, request_head


class _Transport:
    """What OriginResponse calls on its connection's transport."""

    def __init__(self) -> None:
        self.reading = True
        self.closed = False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _exchange(method: str = "GET") -> tuple[_Connection, OriginResponse, _Transport]:
    server = Server("http://127.0.0.1:9", 1)
    server.count = 1
    conn = _Connection(server)
    transport = _Transport()
    conn.transport = transport  # type: ignore[assignment]
    response = OriginResponse(conn, method, None, "o", asyncio.get_running_loop())
    conn.response = response
    return conn, response, transport


async def _body(response: OriginResponse) -> bytes:
    return b"".join([c async for c in response.content.iter_chunked(1000)])


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
_fields = st.lists(
    st.tuples(_token.map(lambda t: "x-" + t), _value), max_size=6
)  # x- names: never a framing field


def _response(
    status: int, fields: list[tuple[str, str]], body: bytes, framing: str, sizes: list[int]
) -> bytes:
    head = f"HTTP/1.1 {status} Whatever\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields)
    if framing == "length":
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    if framing == "close":
        return (head + "Connection: close\r\n\r\n").encode() + body
    out, i = [(head + "Transfer-Encoding: chunked\r\n\r\n").encode()], 0
    for size in [*sizes, len(body)]:
        piece = body[i : i + max(size, 1)]
        if piece:
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        i += len(piece)
        if i >= len(body):
            break
    out.append(b"0\r\n\r\n")
    return b"".join(out)


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from([200, 203, 404, 500]),
    fields=_fields,
    body=st.binary(max_size=3000),
    framing=st.sampled_from(["length", "chunked", "close"]),
    sizes=st.lists(st.integers(1, 700), max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_any_split_of_a_response_reads_the_same(
    status: int,
    fields: list[tuple[str, str]],
    body: bytes,
    framing: str,
    sizes: list[int],
    cuts: list[int],
) -> None:
    raw = _response(status, fields, body, framing, sizes)

    async def run() -> tuple[int, list[tuple[str, str]], bytes, bool]:
        conn, response, _ = _exchange()
        points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
        for a, b in itertools.pairwise(points):
            conn.data_received(raw[a:b])
        if framing == "close":
            conn.eof_received()
        await response._head
        got = await _body(response)
        reused = response._complete and conn.open
        return response.status, list(response.headers.items()), got, reused

    got_status, got_fields, got_body, reused = asyncio.run(run())
    assert got_status == status
    assert [f for f in got_fields if f[0].startswith("x-")] == fields
    assert got_body == body
    assert reused == (framing != "close")  # kept alive unless the body ended with it


@pytest.mark.parametrize(
    ("method", "raw", "status", "body", "reusable"),
    [
        # RFC 9112 section 6.3: a HEAD response or a 304/204 has no content.
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, b"", True),
        ("GET", b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n', 304, b"", True),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
        # RFC 9110 section 15.2: informational responses come before the final one.
        (
            "GET",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            200,
            b"ok",
            True,
        ),
        (
            "GET",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            200,
            b"ok",
            False,
        ),
        ("GET", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
    ],
)
async def test_framing_table(
    method: str, raw: bytes, status: int, body: bytes, reusable: bool
) -> None:
    conn, response, transport = _exchange(method)
    conn.data_received(raw)
    await response._head
    assert response.status == status
    assert "link" not in response.headers  # an informational response's fields are dropped
    assert await _body(response) == body
    assert (conn.open and not transport.closed) == reusable
    assert (conn in conn.server.idle) == reusable


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b"SMTP ready\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 300_000, "head"),  # past HEAD_LIMIT
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "body"),
    ],
)
async def test_malformed_responses_fail_where_they_break(raw: bytes, where: str) -> None:
    import aiohttp

    from edgeproxy.errors import OriginProtocolError

    conn, response, transport = _exchange()
    conn.data_received(raw)
    if where == "head":
        with pytest.raises(OriginProtocolError):
            await response._head
    else:
        await response._head
        with pytest.raises(aiohttp.ClientPayloadError):
            await _body(response)
    assert transport.closed and not conn.open


async def test_body_cut_short_is_a_payload_error_not_a_short_body() -> None:
    import aiohttp

    conn, response, _ = _exchange()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    conn.connection_lost(None)
    await response._head
    with pytest.raises(aiohttp.ClientPayloadError):
        await _body(response)


async def test_a_slow_reader_pauses_the_socket_and_resumes_it() -> None:
    conn, response, transport = _exchange()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n")
    for _ in range(10):
        conn.data_received(b"x" * 100_000)
    assert not transport.reading  # 1 MB buffered, nobody reading: stop reading the socket
    chunks = response.content.iter_chunked(65536)
    for _ in range(20):  # 1 MB read: below the low-water mark again
        await anext(chunks)
    assert transport.reading


async def test_a_response_that_ends_while_paused_leaves_its_connection_reading() -> None:
    # The connection goes back to the pool at the response's end, even if
    # its reader has not caught up: it must not stay paused (it would never
    # see the next response).
    conn, response, transport = _exchange()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 600000\r\n\r\n" + b"y" * 600_000)
    assert conn in conn.server.idle
    assert transport.reading
    assert len(await _body(response)) == 600_000


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    target=st.from_regex(r"\A/[a-z0-9/?=&%.-]{0,30}\Z"),
    fields=_fields,
)
def test_request_head_parses_back(method: str, target: str, fields: list[tuple[str, str]]) -> None:
    headers = CIMultiDict(fields)
    got: dict[str, Any] = {"fields": []}

    class Sink:
        def on_url(self, url: bytes) -> None:
            got["url"] = url.decode()

        def on_header(self, name: bytes, value: bytes) -> None:
            got["fields"].append((name.decode(), value.decode()))

    parser = httptools.HttpRequestParser(Sink())
    parser.feed_data(request_head(method, target, headers, "origin:81"))
    assert parser.get_method().decode() == method
    assert got["url"] == target
    assert got["fields"][0] == ("Host", "origin:81")
    assert [f for f in got["fields"] if f[0].startswith("x-")] == [
        (k, v.strip()) for k, v in fields
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-A", "1\r\nX-Evil: 1"), ("X-A", "a\nb"), ("X\r\nY", "1"), ("X-A", "\x00")],
)
def test_request_head_refuses_fields_that_would_split_it(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        request_head("GET", "/", CIMultiDict({name: value}), "o")


_OLD_RULE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ANY_TEXT = st.text(st.sampled_from("aZ0 \t\r\n\x00\x0b\x1f\x7f:-\u00e9"), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "G T", "GE\nT"]),
    target=st.sampled_from(["/", "/a b", "/a\r", "/\x7f", "/x?y=\t"]),
    fields=st.lists(st.tuples(_ANY_TEXT.filter(bool), _ANY_TEXT), max_size=4),
    body=st.booleans(),
)
@example(method="GET", target="/", fields=[("X-A", "a\rb")], body=False)  # a lone CR
@example(method="GET", target="/", fields=[("X-A", "a\r\n")], body=False)  # a CRLF of its own
def test_request_head_refuses_exactly_control_characters_that_came_in(
    method: str, target: str, fields: list[tuple[str, str]], body: bool
) -> None:
    """Refused iff the method, target, a field name or value holds a control
    character other than tab (CR and LF included: they would split the
    request), or the method or target a space."""
    came_in = "".join((method, target, *(f for pair in fields for f in pair)))
    refused = _OLD_RULE.search(came_in) is not None or " " in method or " " in target
    headers = CIMultiDict(fields)
    if refused:
        with pytest.raises(ValueError):
            request_head(method, target, headers, "o", body)
    else:
        head = request_head(method, target, headers, "o", body)
        assert head.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("method", "body", "expected"),
    [
        ("GET", False, None),
        ("POST", False, "Content-Length: 0"),  # RFC 9110 section 8.6
        ("POST", True, "Transfer-Encoding: chunked"),  # no length known: RFC 9112 section 7.1
        ("DELETE", False, "Content-Length: 0"),
    ],
)
def test_request_head_framing(method: str, body: bool, expected: str | None) -> None:
    head = request_head(method, "/", CIMultiDict(), "o", body).decode()
    framing = [
        line for line in head.split("\r\n") if line.startswith(("Content-Length", "Transfer"))
    ]
    assert framing == ([expected] if expected else [])


async def test_a_finished_response_leaves_no_cycles_for_the_gc() -> None:
    # Freed by reference counts alone: a response a request kept in a cycle
    # (parser <-> response, `content = self`) waited for the cyclic GC, 16
    # objects per proxied request, and a collection per few hundred.
    import gc

    gc.collect()
    gc.disable()
    try:
        for _ in range(100):
            conn, response, _ = _exchange()
            conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            assert await _body(response) == b"ok"
            conn.close()
        del conn, response
        assert gc.collect() == 0
    finally:
        gc.enable()


@pytest.mark.parametrize("handed", ["slot", "connection"])
async def test_a_waiter_cancelled_as_it_is_served_passes_its_turn_on(handed: str) -> None:
    server = Server("http://127.0.0.1:9", 1)
    assert await server.acquire(0.0) is None  # the one slot, taken
    first = asyncio.create_task(server.acquire(0.0))
    second = asyncio.create_task(server.acquire(0.0))
    await asyncio.sleep(0)  # both queued
    conn = _Connection(server)
    conn.transport = _Transport()  # type: ignore[assignment]
    if handed == "slot":
        server.freed()  # the connection closed: its slot goes to `first`
    else:
        server.give_back(conn, 0.0)  # reusable: it goes to `first`
    first.cancel()  # ... which is cancelled before it runs
    got = await second
    assert got is (None if handed == "slot" else conn)
    assert first.cancelled()
    assert server.count == 1 and not server.waiters


@pytest.mark.parametrize(
    ("url", "netloc", "port"),
    [
        ("http://origin.example", "origin.example", 80),
        ("http://origin.example:80", "origin.example", 80),  # as aiohttp: no default port
        ("http://Origin.Example:8080", "origin.example:8080", 8080),
        ("http://[::1]:81", "[::1]:81", 81),
    ],
)
def test_the_host_a_request_without_one_gets(url: str, netloc: str, port: int) -> None:
    server = Server(url, 1)
    assert (server.netloc, server.port) == (netloc, port)
