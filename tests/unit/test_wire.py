"""wire.wire_head: a template serialised as aiohttp serialises a response head."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from edgeproxy.wire import wire_head

DATE = "Thu, 01 Jan 2026 00:00:00 GMT"
VALUES = (b"7", b"edgeproxy; hit; ttl=3", b"rid")


def template(*extra: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(
        [
            ("Date", DATE),
            ("ETag", '"a"'),
            ("Age", ""),
            ("Cache-Status", ""),
            ("X-Request-Id", ""),
            *extra,
        ]
    )


@pytest.mark.parametrize(
    ("status", "length", "extra", "expected"),
    [
        pytest.param(
            200,
            3,
            (),
            b"HTTP/1.1 200 OK\r\nDate: " + DATE.encode() + b'\r\nETag: "a"\r\nAge: 7\r\n'
            b"Cache-Status: edgeproxy; hit; ttl=3\r\nX-Request-Id: rid\r\n"
            b"Content-Length: 3\r\n\r\n",
            id="content-length last, as StreamResponse.content_length adds it",
        ),
        pytest.param(
            304,
            None,
            (),
            b"HTTP/1.1 304 Not Modified\r\nDate: " + DATE.encode() + b'\r\nETag: "a"\r\n'
            b"Age: 7\r\nCache-Status: edgeproxy; hit; ttl=3\r\nX-Request-Id: rid\r\n\r\n",
            id="304 without Content-Length (RFC 9110 section 15.4.5)",
        ),
        pytest.param(
            404,
            0,
            (("Content-Length", "99"), ("Via", "1.1 e")),
            b"HTTP/1.1 404 Not Found\r\nDate: " + DATE.encode() + b'\r\nETag: "a"\r\nAge: 7\r\n'
            b"Cache-Status: edgeproxy; hit; ttl=3\r\nX-Request-Id: rid\r\n"
            b"Content-Length: 0\r\nVia: 1.1 e\r\n\r\n",
            id="a stored Content-Length replaced in place",
        ),
        pytest.param(200, 1, (("X", "\u00e9"),), None, id="utf-8 as aiohttp encodes it"),
    ],
)
def test_wire_head(
    status: int, length: int | None, extra: tuple[tuple[str, str], ...], expected: bytes | None
) -> None:
    head = wire_head(template(*extra), status, length)
    assert head is not None
    rendered = head.render(VALUES)
    if expected is None:
        assert "\r\nX: \u00e9\r\n".encode() in rendered
    else:
        assert rendered == expected


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param(CIMultiDict([("Age", ""), ("Cache-Status", ""), ("X-Request-Id", "")]), 200,
                     id="no Date: aiohttp would add its own"),
        pytest.param(template(("X", "a\r\nY: b")), 200, id="CR LF: aiohttp refuses it"),
        pytest.param(template(), 299, id="no reason phrase known"),
        pytest.param(CIMultiDict([("Date", DATE), ("Age", "")]), 200,
                     id="a per-request field missing"),
    ],
)  # fmt: skip
def test_wire_head_refused(headers: CIMultiDict[str], status: int) -> None:
    assert wire_head(headers, status, 1) is None


def test_gaps_follow_the_template_order() -> None:
    t = CIMultiDict([("X-Request-Id", ""), ("Date", DATE), ("Cache-Status", ""), ("Age", "")])
    head = wire_head(t, 200, 0)
    assert head is not None
    assert head.render(VALUES) == (
        b"HTTP/1.1 200 OK\r\nX-Request-Id: rid\r\nDate: " + DATE.encode() + b"\r\n"
        b"Cache-Status: edgeproxy; hit; ttl=3\r\nAge: 7\r\nContent-Length: 0\r\n\r\n"
    )
