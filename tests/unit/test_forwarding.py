"""Header fields of forwarded messages (RFC 9110 section 7.6): pure rewriting."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.forwarding import request_headers, response_headers, storable_fields, via_value
from edgeproxy.http.fields import HOP_BY_HOP, connection_named
from tests.unit.http.helpers import Lines, hdrs, header_lines, headers_st


def fwd_request(lines: Lines, **overrides: Any) -> CIMultiDict[str]:
    kwargs: dict[str, Any] = {
        "version": (1, 1),
        "client_ip": "192.0.2.7",
        "host": "www.example.com",
        "scheme": "https",
        "pseudonym": "edge",
        "upstream_host": None,
    }
    kwargs.update(overrides)
    return request_headers(hdrs(lines), **kwargs)


# -- Via (RFC 9110 section 7.6.3) ------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ((1, 0), "1.0 edge"),
        ((1, 1), "1.1 edge"),
        # received-protocol is the version as HTTP names it: "2", "3"
        ((2, 0), "2 edge"),
        ((3, 0), "3 edge"),
    ],
)
def test_via_value(version: tuple[int, int], expected: str) -> None:
    assert via_value(version, "edge") == expected


def test_request_via_appended_after_existing() -> None:
    # 7.6.3: "Each intermediary appends its own information"
    out = fwd_request([("Via", "1.0 fred"), ("Via", "1.1 p.example.net")], version=(1, 0))
    assert out.getall("via") == ["1.0 fred", "1.1 p.example.net", "1.0 edge"]
    assert fwd_request({}).getall("via") == ["1.1 edge"]


def test_response_via_appended_after_existing() -> None:
    out = response_headers(hdrs({"Via": "1.1 origin-lb"}), version=(2, 0), pseudonym="edge")
    assert out.getall("via") == ["1.1 origin-lb", "2 edge"]


# -- hop-by-hop removal (RFC 9110 section 7.6.1), both ways ------------------

HOP = [
    ("Connection", "keep-alive, X-Hop"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "websocket"),
    ("Proxy-Authorization", "Basic eA=="),
    ("Proxy-Authenticate", "Basic"),
    ("X-Hop", "named in Connection"),
    ("x-hop", "twice"),
]
END_TO_END = [("Accept", "text/html"), ("Cache-Control", "no-cache"), ("X-End", "1")]


def test_request_drops_hop_by_hop_and_connection_named() -> None:
    out = fwd_request([*HOP, *END_TO_END])
    assert not {k.lower() for k in out} & (HOP_BY_HOP | {"x-hop"})
    for name, value in END_TO_END:
        assert out.getall(name) == [value]


def test_response_drops_hop_by_hop_and_connection_named() -> None:
    out = response_headers(hdrs([*HOP, *END_TO_END]), version=(1, 1), pseudonym="edge")
    assert not {k.lower() for k in out} & (HOP_BY_HOP | {"x-hop"})
    assert [(k, v) for k, v in out.items() if k.lower() != "via"] == END_TO_END


def test_response_drops_content_length_and_extra() -> None:
    # the shell frames this hop itself (RFC 9112 section 6.3)
    up = hdrs([("Content-Length", "3"), ("Set-Cookie", "a=1"), ("ETag", '"x"')])
    out = response_headers(up, version=(1, 1), pseudonym="edge", drop=("SET-COOKIE",))
    assert list(out.items()) == [("ETag", '"x"'), ("Via", "1.1 edge")]


def test_storable_fields() -> None:
    # RFC 9111 section 3.1: hop-by-hop fields are not stored; no Via of ours either
    up = hdrs([*HOP, ("Content-Length", "3"), ("ETag", '"x"'), ("Set-Cookie", "a")])
    assert list(storable_fields(up, drop=("set-cookie",)).items()) == [("ETag", '"x"')]


# -- X-Forwarded-* and Host ----------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "client_ip", "expected"),
    [
        ({}, "192.0.2.7", ["192.0.2.7"]),
        # appended to what a load balancer in front already added
        ({"X-Forwarded-For": "198.51.100.1"}, "192.0.2.7", ["198.51.100.1, 192.0.2.7"]),
        (
            [("X-Forwarded-For", "198.51.100.1, 198.51.100.2"), ("x-forwarded-for", "203.0.113.9")],
            "192.0.2.7",
            ["198.51.100.1, 198.51.100.2, 203.0.113.9, 192.0.2.7"],
        ),
        # empty lines or members add nothing
        (
            [("X-Forwarded-For", ""), ("X-Forwarded-For", " , 198.51.100.1,")],
            "192.0.2.7",
            ["198.51.100.1, 192.0.2.7"],
        ),
        ({"X-Forwarded-For": ""}, "192.0.2.7", ["192.0.2.7"]),
        # IPv6 peers as the socket reports them
        ({}, "2001:db8::7", ["2001:db8::7"]),
        # no peer address: the prior value passes unchanged
        ({"X-Forwarded-For": "198.51.100.1"}, None, ["198.51.100.1"]),
        ({}, None, []),
    ],
)
def test_x_forwarded_for(lines: Lines, client_ip: str | None, expected: list[str]) -> None:
    assert fwd_request(lines, client_ip=client_ip).getall("x-forwarded-for", []) == expected


def test_x_forwarded_host_and_proto_replace_client_values() -> None:
    # client-sent values are never trusted: this hop says what it saw
    out = fwd_request(
        [
            ("X-Forwarded-Host", "evil.example"),
            ("x-forwarded-host", "evil2.example"),
            ("X-Forwarded-Proto", "https"),
        ],
        host="www.example.com",
        scheme="http",
    )
    assert out.getall("x-forwarded-host") == ["www.example.com"]
    assert out.getall("x-forwarded-proto") == ["http"]


@pytest.mark.parametrize(
    ("upstream_host", "expected"),
    [
        ("origin.internal:8080", ["origin.internal:8080"]),
        # None: the client's Host is dropped and the HTTP client sets the origin's
        (None, []),
    ],
)
def test_host(upstream_host: str | None, expected: list[str]) -> None:
    out = fwd_request({"Host": "www.example.com"}, upstream_host=upstream_host)
    assert out.getall("host", []) == expected


def test_drop_and_add() -> None:
    out = fwd_request(
        [("If-None-Match", '"client"'), ("If-Modified-Since", "x"), ("Accept", "a")],
        drop=("if-none-match", "IF-MODIFIED-SINCE"),
        add=[("If-None-Match", '"stored"'), ("X-Extra", "1"), ("X-Extra", "2")],
    )
    assert out.getall("if-none-match") == ['"stored"']
    assert "if-modified-since" not in out
    assert out.getall("x-extra") == ["1", "2"]
    assert out.getall("accept") == ["a"]


def test_end_to_end_order_and_input_untouched() -> None:
    incoming = hdrs([("A", "1"), ("B", "2"), ("a", "3"), ("Connection", "close")])
    out = request_headers(
        incoming,
        version=(1, 1),
        client_ip=None,
        host="h",
        scheme="http",
        pseudonym="edge",
        upstream_host=None,
    )
    assert [(k, v) for k, v in out.items()][:3] == [("A", "1"), ("B", "2"), ("a", "3")]
    assert len(incoming) == 4


# -- never raises ------------------------------------------------------------


@given(header_lines, st.none() | st.text(), st.text(), st.none() | st.text())
def test_request_headers_total(
    lines: list[tuple[str, str]], client_ip: str | None, host: str, upstream: str | None
) -> None:
    incoming = hdrs(lines)
    out = request_headers(
        incoming,
        version=(1, 1),
        client_ip=client_ip,
        host=host,
        scheme="http",
        pseudonym="edge",
        upstream_host=upstream,
    )
    ours = {"via", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "host"}
    assert not {k.lower() for k in out} & (HOP_BY_HOP | (connection_named(incoming) - ours))
    assert out.getall("via")[-1] == "1.1 edge"
    assert out.getall("x-forwarded-host") == [host]
    assert out.getall("host", []) == ([] if upstream is None else [upstream])


@given(headers_st)
def test_response_headers_total(upstream: CIMultiDictProxy[str]) -> None:
    out = response_headers(upstream, version=(1, 1), pseudonym="edge")
    assert not {k.lower() for k in out} & (HOP_BY_HOP | {"content-length"})
    assert out.getall("via")[-1] == "1.1 edge"


def test_url_override_fields_are_never_forwarded() -> None:
    # Cache poisoning: the key lacks these, so an origin that obeys them could
    # serve /admin under the key of /a. They never reach the origin.
    from multidict import CIMultiDict as _CI

    from edgeproxy.forwarding import request_headers as _rh

    incoming = _CI(
        [
            ("X-Original-URL", "/admin"),
            ("X-Rewrite-URL", "/admin"),
            ("X-Forwarded-Scheme", "nothttps"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("Accept", "*/*"),
        ]
    )
    out = _rh(
        incoming,
        version=(1, 1),
        client_ip="127.0.0.1",
        host="a.example",
        scheme="http",
        pseudonym="edge",
        upstream_host=None,
    )
    for name in ("X-Original-URL", "X-Rewrite-URL", "X-Forwarded-Scheme", "X-HTTP-Method-Override"):
        assert name not in out
    assert out["Accept"] == "*/*"
