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
Connection other than "keep-alive", Upgrade and Expect (connection
management aiohttp does), a
duplicate of a field aiohttp holds to one, and anything over the limits
(aiohttp answers those with 414/431).
"""

from __future__ import annotations

import re
from typing import NamedTuple

_END = b"\r\n\r\n"
_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"  # RFC 9110 section 5.6.2
# RFC 3986 pchar plus "/" and "?" (path and query), percent-encoded octets.
_PCHARS = r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*"
# The whole head but its last CRLF, in one match: the request line, then
# field lines of a token, a colon and a value of HTAB and visible ASCII + SP.
_HEAD = re.compile(
    rf"(GET|HEAD) (/{_PCHARS}(?:%[0-9A-Fa-f]{{2}}{_PCHARS})*) HTTP/1\.1\r\n"
    rf"((?:{_TCHAR}+:[\t\x20-\x7e]*\r\n)*)"
)
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
    or not one this parser takes (the caller hands the bytes to aiohttp).

    A head longer than a line may be (`max_line` for the request line,
    `max_field` for a field line) is left to aiohttp, which holds each line
    to its limit; so is one of more than `max_fields` lines in all.
    """
    end = buf.find(_END, start)
    if end < 0:
        return None
    head = buf[start : end + 2]
    if len(head) > max_line or len(head) > max_field or not head.isascii():
        return None
    m = _HEAD.fullmatch(head.decode("ascii"))
    if m is None:
        return None
    method, target, block = m.groups()
    if block.count("\r\n") + 2 > max_fields:  # aiohttp counts the request line and the empty one
        return None
    fields: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in block.split("\r\n")[:-1]:  # each `token:value`, as _HEAD matched it
        name, _, value = line.partition(":")
        fields.append((name, value.strip(" \t")))
        lower = name.lower()
        # Browsers send "Connection: keep-alive" on HTTP/1.1, where it is the
        # default (RFC 9112 section 9.3): taken; any other option is aiohttp's.
        if lower in _REFUSED_FIELDS and (
            lower != "connection" or fields[-1][1].lower() != "keep-alive"
        ):
            return None
        if lower in _SINGLETONS:
            if lower in seen:
                return None
            seen.add(lower)
    if "host" not in seen:
        return None  # aiohttp's 400 (RFC 9112 section 3.2)
    return RequestHead(method, target, fields, end + 4)
