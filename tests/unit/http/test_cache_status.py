"""Cache-Status (RFC 9211) and Proxy-Status (RFC 9209) values.

Both are sf-lists (RFC 8941); a member is the cache's name, a token or a
string, with parameters. A rendered member with a key-shaped name is also a
valid sf-dictionary, which lets `parse_dictionary` check the syntax.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.http.cache_status import CacheStatus, Fwd, ProxyError, proxy_status
from edgeproxy.http.structured import parse_dictionary
from tests.unit.http.helpers import any_text

NAME = "edgeproxy"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        # the combinations proxy.py builds
        pytest.param(
            CacheStatus(hit=True, ttl=120), "edgeproxy; hit; ttl=120", id="2.1 hit + 2.4 ttl"
        ),
        # 2.4: ttl is negative once the response is stale
        pytest.param(CacheStatus(hit=True, ttl=-5), "edgeproxy; hit; ttl=-5", id="hit stale ttl"),
        pytest.param(
            CacheStatus(fwd=Fwd.URI_MISS, fwd_status=200, stored=True, ttl=60),
            "edgeproxy; fwd=uri-miss; fwd-status=200; stored; ttl=60",
            id="2.2 fwd + 2.3 fwd-status + 2.5 stored",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.VARY_MISS, fwd_status=200, stored=False, ttl=None),
            "edgeproxy; fwd=vary-miss; fwd-status=200",
            id="not stored, no ttl",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.STALE, fwd_status=304, ttl=60),
            "edgeproxy; fwd=stale; fwd-status=304; ttl=60",
            id="revalidated",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.REQUEST, fwd_status=304, ttl=0),
            "edgeproxy; fwd=request; fwd-status=304; ttl=0",
            id="client forced revalidation",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.MISS, detail="only-if-cached"),
            "edgeproxy; fwd=miss; detail=only-if-cached",
            id="2.8 detail token",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.MISS, detail=ProxyError.CONNECTION_REFUSED.value),
            "edgeproxy; fwd=miss; detail=connection_refused",
            id="detail from error",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.BYPASS, fwd_status=200),
            "edgeproxy; fwd=bypass; fwd-status=200",
            id="bypass",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.METHOD, fwd_status=201),
            "edgeproxy; fwd=method; fwd-status=201",
            id="method",
        ),
        pytest.param(
            CacheStatus(fwd=Fwd.URI_MISS, fwd_status=200, stored=True, collapsed=True, ttl=5),
            "edgeproxy; fwd=uri-miss; fwd-status=200; stored; collapsed; ttl=5",
            id="2.6 collapsed",
        ),
        pytest.param(CacheStatus(), "edgeproxy", id="nothing to say"),
        # 2.8: detail is a token when it can be, else a string
        pytest.param(CacheStatus(detail="a b"), 'edgeproxy; detail="a b"', id="detail string"),
        pytest.param(
            CacheStatus(detail="1abc"), 'edgeproxy; detail="1abc"', id="detail digit first"
        ),
        pytest.param(
            CacheStatus(detail='say "hi" \\o/'),
            r'edgeproxy; detail="say \"hi\" \\o/"',
            id="detail escapes",
        ),
        pytest.param(
            CacheStatus(detail="caf\u00e9"), 'edgeproxy; detail="caf"', id="detail non-ASCII"
        ),
        pytest.param(CacheStatus(detail=""), 'edgeproxy; detail=""', id="detail empty"),
        pytest.param(
            CacheStatus(detail="*a:b/c"), "edgeproxy; detail=*a:b/c", id="detail token chars"
        ),
    ],
)
def test_render(status: CacheStatus, expected: str) -> None:
    assert status.render(NAME) == expected
    assert parse_dictionary(expected) is not None  # valid sf syntax


def test_every_fwd_value_is_the_rfc_token() -> None:
    # RFC 9211 section 2.2's list of fwd values
    assert {f.value for f in Fwd} == {
        "bypass",
        "method",
        "uri-miss",
        "vary-miss",
        "miss",
        "request",
        "stale",
        "partial",
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # the identifier is an sf-token or sf-string (RFC 9211 section 2)
        ("ExampleCache", "ExampleCache; hit"),
        ("cdn.example.net", "cdn.example.net; hit"),
        ("Edge Cache", '"Edge Cache"; hit'),
        ("9cache", '"9cache"; hit'),
        ("\u00e9dge", '"dge"; hit'),
    ],
)
def test_cache_name_token_or_string(name: str, expected: str) -> None:
    assert CacheStatus(hit=True).render(name) == expected


@pytest.mark.parametrize(
    ("error", "details", "expected"),
    [
        # RFC 9209 section 2.1.1 error, 2.1.5 details (an sf-string, always quoted)
        (ProxyError.DNS_ERROR, None, "edgeproxy; error=dns_error"),
        (ProxyError.DNS_ERROR, "", "edgeproxy; error=dns_error"),
        (
            ProxyError.CONNECTION_TIMEOUT,
            "timed out",
            'edgeproxy; error=connection_timeout; details="timed out"',
        ),
        (
            ProxyError.CONNECTION_REFUSED,
            "token",
            'edgeproxy; error=connection_refused; details="token"',
        ),
        (
            ProxyError.HTTP_PROTOCOL_ERROR,
            'bad "x" \\ y',
            r'edgeproxy; error=http_protocol_error; details="bad \"x\" \\ y"',
        ),
        (
            ProxyError.PROXY_INTERNAL_ERROR,
            "line\nbreak\t\u00e9",
            'edgeproxy; error=proxy_internal_error; details="linebreak"',
        ),
    ],
)
def test_proxy_status(error: ProxyError, details: str | None, expected: str) -> None:
    assert proxy_status(NAME, error, details) == expected
    assert parse_dictionary(expected) is not None


def test_proxy_status_name_quoted_when_not_a_token() -> None:
    assert proxy_status("my edge", ProxyError.DNS_ERROR) == '"my edge"; error=dns_error'


def test_error_types_are_registered_tokens() -> None:
    # RFC 9209 section 2.3: the types this proxy reports
    assert {e.value for e in ProxyError} <= {
        "dns_timeout",
        "dns_error",
        "destination_not_found",
        "destination_unavailable",
        "destination_ip_prohibited",
        "destination_ip_unroutable",
        "connection_refused",
        "connection_terminated",
        "connection_timeout",
        "connection_read_timeout",
        "connection_write_timeout",
        "connection_limit_reached",
        "tls_protocol_error",
        "tls_certificate_error",
        "tls_alert_received",
        "http_request_error",
        "http_request_denied",
        "http_response_incomplete",
        "http_response_header_section_size",
        "http_response_header_size",
        "http_response_body_size",
        "http_response_trailer_section_size",
        "http_response_trailer_size",
        "http_response_transfer_coding",
        "http_response_content_coding",
        "http_response_timeout",
        "http_upgrade_failed",
        "http_protocol_error",
        "proxy_internal_response",
        "proxy_internal_error",
        "proxy_configuration_error",
        "proxy_loop_detected",
    }


@given(
    st.booleans(),
    st.none() | st.sampled_from(list(Fwd)),
    st.none() | st.integers(100, 599),
    st.booleans(),
    st.booleans(),
    st.none() | st.integers(-(2**31), 2**31),
    st.none() | any_text,
)
def test_render_is_always_valid_sf(
    hit: bool,
    fwd: Fwd | None,
    fwd_status: int | None,
    stored: bool,
    collapsed: bool,
    ttl: int | None,
    detail: str | None,
) -> None:
    cs = CacheStatus(hit, fwd, fwd_status, stored, collapsed, ttl, detail)
    assert parse_dictionary(cs.render(NAME)) is not None


@given(st.sampled_from(list(ProxyError)), st.none() | any_text, any_text)
def test_proxy_status_is_always_valid_sf(error: ProxyError, details: str | None, name: str) -> None:
    params = proxy_status(NAME, error, details)[len(NAME) :]
    assert parse_dictionary(NAME + params) is not None
    # any configured name renders as an sf-token or sf-string (RFC 9209 section 2)
    rendered = proxy_status(name, error, details)
    assert rendered.endswith(params)
    assert parse_dictionary("k=" + rendered[: -len(params)]) is not None


@given(any_text)
def test_any_cache_name_renders_as_token_or_string(name: str) -> None:
    rendered = CacheStatus(hit=True).render(name)
    assert rendered.endswith("; hit")
    assert parse_dictionary("k=" + rendered[: -len("; hit")]) is not None
