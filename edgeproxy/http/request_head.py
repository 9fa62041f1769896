"""A strict, narrow parser for plain HTTP/1.1 GET and HEAD request heads.

The wire fast path (edgeproxy/wire.py) answers hot cache hits before
aiohttp sees the request. It takes only heads this module accepts, and
hands everything else, unread, to aiohttp's full parser: so this parser may
refuse whatever it likes, but what it accepts must read exactly as
aiohttp's parser reads it (tests/unit/http/test_request_head.py holds the
two side by side under hypothesis).

Accepted, per RFC 9112: a complete head (request line and field lines, each
ending in CRLF, then an empty line; sections 2.1-2.2, no bare CR or LF, no
obs-fold, section 5.2) with one Host field (section 3.2), of visible ASCII,
space and tab only; a request line of exactly
`GET|HEAD SP origin-form SP HTTP/1.1` (section 3) with a target of RFC 3986
path and query characters; field names that are tokens, values with
optional whitespace stripped (section 5.1). Refused (left to aiohttp):
any other method or version, absolute/authority/asterisk forms, a fragment,
any message body framing (Content-Length, Transfer-Encoding: section 6),
Connection, Upgrade and Expect (connection management aiohttp does), a
duplicate of a field aiohttp holds to one, and anything over the limits
(aiohttp answers those with 414/431).
"""

from __future__ import annotations

import re
from typing import NamedTuple

_CRLF = b"\r\n"
_END = b"\r\n\r\n"
# Anything but HTAB, CR, LF and visible ASCII + SP anywhere in the head.
_BAD_BYTE = re.compile(rb"[^\t\r\n\x20-\x7e]")
# RFC 3986 pchar plus "/" and "?" (path and query), percent-encoded octets.
_PCHARS = r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*"
_TARGET = re.compile(rf"/{_PCHARS}(?:%[0-9A-Fa-f]{{2}}{_PCHARS})*")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Framing and connection management: aiohttp's business (refused here).
_REFUSED_FIELDS = frozenset(
    {"content-length", "transfer-encoding", "connection", "upgrade", "expect", "keep-alive"}
)
# aiohttp's parser refuses a second one of these (http_parser.SINGLETON_HEADERS).
_SINGLETONS = frozenset(
    {
        "content-location",
        "content-range",
        "content-type",
        "etag",
        "host",
        "max-forwards",
        "server",
        "user-agent",
    }
)
_METHODS = {b"GET ": "GET", b"HEAD": "HEAD"}


class RequestHead(NamedTuple):
    """One parsed head: `end` is the offset just past its empty line."""

    method: str
    target: str
    fields: list[tuple[str, str]]
    end: int


def parse_request_head(
    buf: bytes, start: int, max_line: int, max_field: int, max_fields: int
) -> RequestHead | None:
    """The plain GET/HEAD head starting at `buf[start]`, or None: incomplete,
    or not one this parser takes (the caller hands the bytes to aiohttp)."""
    end = buf.find(_END, start)
    if end < 0:
        return None
    head = buf[start:end]
    if _BAD_BYTE.search(head) is not None:
        return None
    lines = head.split(_CRLF)
    if len(lines) + 1 > max_fields:  # aiohttp counts the request line and the empty one
        return None
    request_line = lines[0]
    method = _METHODS.get(request_line[:4])
    if method is None or len(request_line) > max_line:
        return None
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or parts[0] != method.encode():
        return None
    target = parts[1].decode("ascii")
    if not _TARGET.fullmatch(target):
        return None
    fields: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in lines[1:]:
        if len(line) > max_field or b"\r" in line or b"\n" in line:
            return None
        bname, colon, bvalue = line.partition(b":")
        if not colon:
            return None
        name = bname.decode("ascii")
        if not _TOKEN.fullmatch(name):
            return None  # also catches obs-fold (a leading SP or HTAB) and "Name :"
        lower = name.lower()
        if lower in _REFUSED_FIELDS:
            return None
        if lower in _SINGLETONS:
            if lower in seen:
                return None
            seen.add(lower)
        fields.append((name, bvalue.strip(b" \t").decode("ascii")))
    if "host" not in seen:
        return None  # aiohttp's 400 (RFC 9112 section 3.2)
    return RequestHead(method, target, fields, end + 4)
