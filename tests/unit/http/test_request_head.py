"""The wire fast path's request-head parser (edgeproxy/http/request_head.py).

It may refuse any head (aiohttp then parses it), but a head it accepts must
read exactly as aiohttp's own parser (the one the server runs,
server._StrictRequestParser) reads it: same method, target, version and
field lines, a keep-alive request without a body. The hypothesis tests hold
the two side by side on generated heads, near-misses included.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web_protocol
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.http.request_head import RequestHead, parse_request_head
from edgeproxy.server import _StrictRequestParser

LINE, FIELD, FIELDS = 8190, 8190, 32


def parse(raw: bytes, start: int = 0) -> RequestHead | None:
    return parse_request_head(raw, start, LINE, FIELD, FIELDS)


def aiohttp_parse(raw: bytes) -> tuple[list[Any], bytes] | Exception:
    """aiohttp's reading of `raw` under the same limits: the messages, or its error."""

    class _Proto:
        transport = None

    loop = asyncio.new_event_loop()
    try:
        parser = _StrictRequestParser(
            _Proto(),
            loop,
            2**16,
            max_line_size=LINE,
            max_field_size=FIELD,
            max_headers=FIELDS,
            payload_exception=web_protocol.RequestPayloadError,
        )
        try:
            messages, _upgraded, tail = parser.feed_data(raw)
        except Exception as e:  # any refusal is an answer here
            return e
        return [m for m, _ in messages], tail
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", ("GET", "/", [("Host", "a")])),
        # the HTTP/1.1 default, sent by browsers (RFC 9112 section 9.3)
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n",
            ("GET", "/", [("Host", "a"), ("Connection", "Keep-Alive")]),
        ),
        (b"HEAD /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n", ("HEAD", "/x?y=1", [("Host", "a")])),
        # OWS around the value is not part of it (RFC 9112 section 5.1)
        (
            b"GET / HTTP/1.1\r\nHost:  a \t\r\nX-A:\r\n\r\n",
            ("GET", "/", [("Host", "a"), ("X-A", "")]),
        ),
        # repeated list fields stay separate lines, in order (RFC 9110 section 5.3)
        (
            b"GET /%41b HTTP/1.1\r\nAccept: a\r\nHost: h\r\naccept: b\r\n\r\n",
            ("GET", "/%41b", [("Accept", "a"), ("Host", "h"), ("accept", "b")]),
        ),
    ],
)
def test_accepted(raw: bytes, expected: tuple[str, str, list[tuple[str, str]]]) -> None:
    head = parse(raw)
    assert head is not None
    assert (head.method, head.target, head.fields) == expected
    assert head.end == len(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # incomplete: aiohttp buffers it
        b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",  # other methods
        b"GETS / HTTP/1.1\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",  # methods are case-sensitive (RFC 9110 section 9.1)
        b"GET / HTTP/1.0\r\n\r\n",  # keep-alive rules differ: aiohttp's
        b"GET / HTTP/2.0\r\n\r\n",  # 505 from aiohttp
        b"GET  / HTTP/1.1\r\n\r\n",  # one SP exactly (RFC 9112 section 3)
        b"GET http://a/ HTTP/1.1\r\n\r\n",  # absolute-form: routed by proxy._route
        b"GET * HTTP/1.1\r\n\r\n",
        b"GET /a#f HTTP/1.1\r\n\r\n",  # a fragment is no part of a target
        b"GET /a%zz HTTP/1.1\r\n\r\n",
        b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",  # non-ASCII
        b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",  # obs-fold (RFC 9112 section 5.2)
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon (5.1)
        b"GET / HTTP/1.1\r\nHost\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",  # bare CR (RFC 9112 section 2.2)
        b"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",  # framing: aiohttp's
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",  # aiohttp: duplicate Host
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # a leading empty line: aiohttp skips it
        b"GET / HTTP/1.1\r\n\r\n",  # no Host: aiohttp's 400 (RFC 9112 section 3.2)
    ],
)
def test_refused(raw: bytes) -> None:
    assert parse(raw) is None


def test_limits_are_aiohttps() -> None:
    """Nothing aiohttp would answer 414/431 gets through (it answers those):
    a head longer than a line may be is left to it whole."""
    host = b"Host: a\r\n\r\n"
    # The head (but its last CRLF) at the line limit: taken; a byte more: left.
    fits = b"GET /" + b"a" * (LINE - 25) + b" HTTP/1.1\r\n" + host
    assert len(fits) - 2 == LINE and parse(fits) is not None
    assert parse(fits.replace(b"GET /", b"GET /a")) is None
    # aiohttp would take this one (its lines are short), the fast path leaves it.
    long = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 400) for i in range(25))
    assert aiohttp_parse(long + host) and parse(long + host) is None
    many = b"Host: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(FIELDS - 3))
    assert parse(b"GET / HTTP/1.1\r\n" + many + b"\r\n") is not None
    assert parse(b"GET / HTTP/1.1\r\n" + many + b"Y: v\r\n\r\n") is None


def test_pipelined_heads() -> None:
    one = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
    raw = one + b"HEAD /b HTTP/1.1\r\nHost: b\r\n\r\n" + b"GET /c HT"
    first = parse(raw)
    assert first is not None and first.target == "/a"
    second = parse(raw, first.end)
    assert second is not None and (second.method, second.target) == ("HEAD", "/b")
    assert parse(raw, second.end) is None  # incomplete


# -- side by side with aiohttp ------------------------------------------------

_token = st.text("!#$%&'*+-.^_`|~0123456789abcXYZ", min_size=1, max_size=12)
# Each part of a head: the kinds this parser accepts, and near-misses.
PARTS: dict[str, tuple[st.SearchStrategy[str], st.SearchStrategy[str]]] = {
    "method": (
        st.sampled_from(["GET", "HEAD"]),
        st.sampled_from(["POST", "get", "GET ", "PURGE", "HEAD\t"]),
    ),
    "target": (
        st.lists(st.sampled_from(["a", "/", "?", "=", "&", "*", ":", "@", "~", "%41", "%e9"])).map(
            lambda parts: "/" + "".join(parts)
        ),
        st.one_of(
            st.text("/abc%?#* \x7f\x00", max_size=8),
            st.sampled_from(["http://h/", "*", "h:80", "/a b", "/%4", "//"]),
        ),
    ),
    "version": (
        st.just("HTTP/1.1"),
        st.sampled_from(["HTTP/1.0", "HTTP/2.0", "HTTP/1.1 ", "http/1.1", "HTTP/1.10"]),
    ),
    "name": (
        st.one_of(_token, st.sampled_from(["Accept", "accept", "ETag", "Cookie", "If-None-Match"])),
        st.one_of(
            st.sampled_from(["Host", "Content-Length", "Connection", "Expect", "Upgrade", "etag"]),
            st.text(" \t:()\x00a\x80", max_size=4),  # not tokens
        ),
    ),
    "sep": (st.sampled_from([":", ": ", ":\t", ":  "]), st.sampled_from([" :", "", "\t:"])),
    "value": (
        st.text(st.sampled_from(' \t!~azAZ09,;="/'), max_size=20),
        st.text(st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=6),
    ),
    "eol": (st.just("\r\n"), st.sampled_from(["\n", "\r", "\r\n ", "\r\n\t"])),
}


@st.composite
def heads(draw: st.DrawFn, odd: str | None = None) -> bytes:
    """A head built from valid parts; `odd`: that part is a near-miss, in
    one place (a field part: in one field line)."""
    odd_field = -1

    def part(name: str) -> str:
        valid, near = PARTS[name]
        return draw(near if name == odd and odd_field in (-1, len(fields)) else valid)

    fields: list[str] = []
    n = draw(st.integers(0, 6))
    if odd in ("name", "sep", "value", "eol"):
        n = max(n, 1)
        odd_field = draw(st.integers(0, n - 1))
    line = f"{part('method')} {part('target')} {part('version')}"
    for _ in range(n):
        fields.append(f"{part('name')}{part('sep')}{part('value')}{part('eol')}")
    fields.insert(draw(st.integers(0, len(fields))), f"Host: {draw(_token)}\r\n")
    if draw(st.booleans()):  # browsers' "Connection: keep-alive", in any case and OWS
        value = draw(st.sampled_from(["keep-alive", "Keep-Alive", " KEEP-ALIVE\t"]))
        fields.insert(draw(st.integers(0, len(fields))), f"Connection:{value}\r\n")
    return f"{line}\r\n{''.join(fields)}\r\n".encode("latin-1")


def assert_read_alike(raw: bytes, head: RequestHead) -> None:
    theirs = aiohttp_parse(raw)
    assert not isinstance(theirs, Exception), theirs
    messages, tail = theirs
    assert tail == b"" and len(messages) == 1
    (msg,) = messages
    assert msg.method == head.method
    assert msg.path == head.target
    assert (msg.version.major, msg.version.minor) == (1, 1)
    assert [(n.decode(), v.decode()) for n, v in msg.raw_headers] == head.fields
    assert list(msg.headers.items()) == head.fields
    assert not msg.should_close and not msg.upgrade and not msg.chunked
    assert head.end == len(raw)


@settings(max_examples=800, deadline=None)
@given(heads())
def test_valid_heads_read_as_aiohttp_reads(raw: bytes) -> None:
    head = parse(raw)
    if head is None:
        # Only for the fields it leaves to aiohttp, drawn as valid tokens.
        assert b"\r\netag:" in raw.lower() or raw.lower().count(b"\r\nhost:") > 1
        return
    assert_read_alike(raw, head)


@pytest.mark.parametrize("odd", sorted(PARTS))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_near_misses_refused_or_read_alike(odd: str, data: st.DataObject) -> None:
    raw = data.draw(heads(odd))
    head = parse(raw)
    if head is not None:
        assert_read_alike(raw, head)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_refused_or_read_alike(raw: bytes) -> None:
    head = parse(raw)
    if head is None:
        return
    theirs = aiohttp_parse(raw[: head.end])
    assert not isinstance(theirs, Exception), theirs
    (msg,) = theirs[0]
    assert (msg.method, msg.path) == (head.method, head.target)
