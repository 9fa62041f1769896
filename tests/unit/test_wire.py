"""wire.py's pure parts: the head serialised as aiohttp does, the route memo."""

from __future__ import annotations

import dataclasses
from http import HTTPStatus
from types import MappingProxyType

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.cachekey import KeyRules, route_key
from edgeproxy.config import Config, OriginConfig, PathMatch, Route, RouteMatch
from edgeproxy.policy.entry import Entry
from edgeproxy.state import Snapshot
from edgeproxy.wire import _RouteMemo
from edgeproxy.wire_head import WireHead, response_head, wire_head

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


# -- _RouteMemo: the full path's routing, once per URL and snapshot ------------


def snapshot(*routes: Route) -> Snapshot:
    cfg = Config(
        origins=MappingProxyType({"o": OriginConfig("o", ("http://127.0.0.1:1",))}),
        routes=routes,
    )
    return Snapshot(config=cfg, policy=cfg.cache.policy())


PLAIN = Route("plain", RouteMatch(path=PathMatch("prefix", "/p")), origin="o")
BY_FIELD = Route("lang", RouteMatch(path=PathMatch("prefix", "/l")), origin="o",
                 key=KeyRules(headers=("accept-language",)))  # fmt: skip
UNCACHED = Route("pass", RouteMatch(path=PathMatch("prefix", "/u")), origin="o", cache=False)
NO_ORIGIN = Route("none", RouteMatch(path=PathMatch("prefix", "/n")))


@pytest.mark.parametrize(
    ("host", "target", "method", "expected"),
    [
        pytest.param("Edge.Test:80", "/p/a?x=1", "GET", ("plain", "edge.test", True),
                     id="normalised host, key as the full path builds it"),
        pytest.param("edge.test", "/l/a", "GET", ("lang", "edge.test", False),
                     id="a key with request fields: built per request"),
        pytest.param("edge.test", "/u/a", "GET", None, id="no caching: the full path's"),
        pytest.param("edge.test", "/n/a", "GET", None, id="no origin: the full path's 404"),
        pytest.param("edge.test", "/x", "GET", None, id="no route"),
        pytest.param(None, "/p/a", "GET", None, id="no Host: the full path's 400"),
        pytest.param("a b", "/p/a", "GET", None, id="invalid Host"),
    ],
)  # fmt: skip
def test_route_memo_finds_what_the_full_path_does(
    host: str | None, target: str, method: str, expected: tuple[str, str, bool] | None
) -> None:
    snap = snapshot(PLAIN, BY_FIELD, UNCACHED, NO_ORIGIN)
    memo = _RouteMemo()
    for _ in range(2):  # worked out, then remembered: the same answer
        found = memo.find(snap, host, target, method)
        if expected is None:
            assert found is None
            continue
        assert found is not None
        route, normalised, key = found
        name, want_host, keyed = expected
        assert (route.name, normalised) == (name, want_host)
        if keyed:
            assert key == route_key(route.key, normalised, target, CIMultiDict())
        else:
            assert key is None


def test_route_memo_follows_the_snapshot_and_is_bounded() -> None:
    memo = _RouteMemo()
    before = snapshot(PLAIN)
    found = memo.find(before, "edge.test", "/p/a", "GET")
    assert found is not None and found[0].name == "plain"
    renamed = dataclasses.replace(PLAIN, name="renamed")
    found = memo.find(snapshot(renamed), "edge.test", "/p/a", "GET")  # a reload
    assert found is not None and found[0].name == "renamed"
    for i in range(_RouteMemo.MAX + 10):
        memo.find(before, "edge.test", f"/p/{i}", "GET")
    assert len(memo._found) <= _RouteMemo.MAX


# -- WireHead.redated: a head carried over a 304 that changed only Date --------

NEW_DATE = "Thu, 01 Jan 2026 00:00:09 GMT"


def stored(fields: list[tuple[str, str]], size: int = 3) -> Entry:
    return Entry("k", 200, CIMultiDictProxy(CIMultiDict(fields)), 0.0, 0.0, body_size=size)


def built(entry: Entry) -> WireHead:
    """The head wire_head builds for `entry`'s fields (a stand-in template)."""
    head = wire_head(
        CIMultiDict(
            [*entry.fields.items(), ("Age", ""), ("Cache-Status", ""), ("X-Request-Id", "")]
        ),
        200,
        entry.body_size,
    )
    assert head is not None
    return head


BASE = [("Date", DATE), ("ETag", '"a"'), ("Cache-Control", "max-age=0")]


@pytest.mark.parametrize(
    ("after", "size", "carried"),
    [
        pytest.param([("Date", NEW_DATE), *BASE[1:]], 3, True, id="only Date: carried"),
        pytest.param(BASE, 3, True, id="nothing changed: the same head"),
        pytest.param([*BASE[:2], ("Cache-Control", "max-age=9")], 3, False, id="another field"),
        pytest.param([("Date", NEW_DATE), *BASE[1:]], 4, False, id="another body size"),
        pytest.param([BASE[1], ("Date", NEW_DATE), BASE[2]], 3, False, id="fields reordered"),
        pytest.param([*BASE, ("X-New", "1")], 3, False, id="a field added"),
        pytest.param([("date", NEW_DATE), *BASE[1:]], 3, False, id="name case changed"),
    ],
)
def test_redated_only_when_date_alone_changed(
    after: list[tuple[str, str]], size: int, carried: bool
) -> None:
    before = stored(BASE)
    head = built(before)
    new = stored(after, size)
    got = head.redated(before, new)
    if not carried:
        assert got is None
        return
    assert got is not None
    assert got.render(VALUES) == built(new).render(VALUES)


def test_redated_refuses_a_date_it_cannot_find_once() -> None:
    # Two Date lines with one value: which one is which is not known.
    before = stored([("Date", DATE), ("X-Copy", "1"), ("Date", DATE)])
    after = stored([("Date", NEW_DATE), ("X-Copy", "1"), ("Date", DATE)])
    assert built(before).redated(before, after) is None


_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_NAME = st.sampled_from(["ETag", "Cache-Control", "X-A", "Vary", "Last-Modified", "Via"])
# The per-request gaps, placed among the fields: Date may sit next to any.
_GAPS = st.permutations([("Age", ""), ("Cache-Status", ""), ("X-Request-Id", "")])


@given(
    others=st.lists(st.tuples(_NAME, _VALUE), max_size=6),
    gaps=_GAPS,
    spots=st.lists(st.integers(min_value=0, max_value=9), min_size=4, max_size=4),
    old=_VALUE,
    new=_VALUE,
)
def test_redated_is_a_fresh_build(
    others: list[tuple[str, str]],
    gaps: list[tuple[str, str]],
    spots: list[int],
    old: str,
    new: str,
) -> None:
    """Whatever the other fields and wherever Date and the gaps sit, a head
    carried over renders as one built from scratch; refused only when the
    stored fields are not Date-alone apart."""
    fields = list(others)
    for pair, spot in zip([("Date", old), *gaps], spots, strict=True):
        fields.insert(min(spot, len(fields)), pair)
    stored_fields = [f for f in fields if f not in gaps]
    after_stored = [("Date", new) if f == ("Date", old) else f for f in stored_fields]
    template = [("Date", new) if f == ("Date", old) else f for f in fields]
    first = wire_head(CIMultiDict(fields), 200, 3)
    fresh = wire_head(CIMultiDict(template), 200, 3)
    assert first is not None and fresh is not None
    got = first.redated(stored(stored_fields), stored(after_stored))
    assert got is not None
    assert got.render(VALUES) == fresh.render(VALUES)


def _head_as_aiohttp_sends(
    fields: CIMultiDict[str], status: int, length: int | None
) -> bytes | None:
    """response_head's rule, written plainly: aiohttp's head for these
    fields, or None where it would not send them as they are."""
    headers = CIMultiDict(fields)
    if length is not None:
        headers["Content-Length"] = str(length)
    if "Date" not in headers:
        return None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return None
    if any(c in k or c in v for k, v in headers.items() for c in "\r\n"):
        return None
    text = f"HTTP/1.1 {status} {phrase}\r\n"
    text += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


_FIELD_TEXT = st.text(st.sampled_from("aZ09 -:;\t\r\n\u00e9\udc80"), max_size=5)


@given(
    fields=st.lists(
        st.tuples(st.sampled_from(["Date", "ETag", "X-A", "content-length"]), _FIELD_TEXT),
        max_size=5,
    ),
    status=st.sampled_from([200, 203, 299, 404]),
    length=st.none() | st.integers(0, 5000),
)
@example(fields=[("Date", "d"), ("X-A", "a\rb")], status=200, length=3)  # a lone CR
@example(fields=[("Date", "d\r\n")], status=200, length=None)
def test_response_head_is_aiohttps_head(
    fields: list[tuple[str, str]], status: int, length: int | None
) -> None:
    headers = CIMultiDict(fields)
    assert response_head(headers, status, length) == _head_as_aiohttp_sends(headers, status, length)
