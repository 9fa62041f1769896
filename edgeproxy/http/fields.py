"""Field-value lists, tokens and hop-by-hop fields (RFC 9110 section 5.6, 7.6.1).

Header collections are `multidict` multi-mappings (the same type aiohttp hands
us), read through `MultiMapping` so this module never imports aiohttp.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

from multidict import CIMultiDict, MultiMapping

Headers = MultiMapping[str]

# RFC 9110 section 7.6.1 lists these, plus the legacy Keep-Alive and
# Proxy-Connection; Proxy-Authenticate/Authorization are per-hop by RFC 9110
# section 11.7 and must never be stored (RFC 9111 section 3.1).
HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-authentication-info",
    }
)

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def is_token(value: str) -> bool:
    """token = 1*tchar (RFC 9110 section 5.6.2)."""
    return bool(value) and all(c in _TCHAR for c in value)


def split_list(value: str) -> Iterator[str]:
    """Split a #rule list on commas outside quoted strings (RFC 9110 section 5.6.1).

    Empty elements are dropped, as the list syntax requires recipients to do.
    """
    start = 0
    in_quotes = False
    escaped = False
    for i, c in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes and c == "\\":
            escaped = True
        elif c == '"':
            in_quotes = not in_quotes
        elif c == "," and not in_quotes:
            item = value[start:i].strip(" \t")
            if item:
                yield item
            start = i + 1
    item = value[start:].strip(" \t")
    if item:
        yield item


def list_values(headers: Headers, name: str) -> list[str]:
    """All members of a list-based field, across repeated field lines."""
    out: list[str] = []
    for line in headers.getall(name, ()):
        out.extend(split_list(line))
    return out


def combined(headers: Headers, name: str) -> str | None:
    """Field lines combined with ", " (RFC 9110 section 5.3), or None when absent."""
    values = headers.getall(name, ())
    if not values:
        return None
    return ", ".join(values)


def connection_named(headers: Headers) -> frozenset[str]:
    """Field names listed in Connection, lower-cased (RFC 9110 section 7.6.1)."""
    lines = headers.getall("connection", ())
    if len(lines) == 1:  # most often one token ("keep-alive", "close"): no list to parse
        one = lines[0].strip(" \t")
        if one and _TCHAR.issuperset(one):
            return frozenset((one.lower(),))
    return frozenset(v.lower() for v in list_values(headers, "connection"))


def strip_hop_by_hop(headers: Headers, extra: Iterable[str] = ()) -> CIMultiDict[str]:
    """A copy without hop-by-hop fields, those Connection names, and `extra`."""
    drop = _dropped(tuple(extra))
    if "connection" in headers:
        drop = drop | connection_named(headers)
    return CIMultiDict([(k, v) for k, v in headers.items() if k.lower() not in drop])


@functools.lru_cache(maxsize=64)
def _dropped(extra: tuple[str, ...]) -> frozenset[str]:
    """HOP_BY_HOP and `extra`, lower-cased: a few fixed tuples on every request."""
    return HOP_BY_HOP | {e.lower() for e in extra}


def unquote(value: str) -> str:
    """Remove quoted-string quoting (RFC 9110 section 5.6.4); tokens pass as is."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for c in inner:
            if escaped:
                out.append(c)
                escaped = False
            elif c == "\\":
                escaped = True
            else:
                out.append(c)
        return "".join(out)
    return value
