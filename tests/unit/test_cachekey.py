"""The primary cache key (RFC 9111 section 4; URI normalisation of RFC 3986 6.2.2-6.2.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.cachekey import normalise_host, primary_key


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        # host names are case-insensitive (RFC 3986 6.2.2.1, RFC 9110 4.2.3)
        ("Example.COM", "http", "example.com"),
        # default ports dropped: 80 for http (RFC 9110 4.2.1), 443 for https (4.2.2)
        ("example.com:80", "http", "example.com"),
        ("example.com:443", "https", "example.com"),
        ("example.com:080", "http", "example.com"),
        ("EXAMPLE.com:80", "HTTP", "example.com"),  # scheme is case-insensitive too
        # other ports are part of the origin and stay
        ("example.com:443", "http", "example.com:443"),
        ("example.com:80", "https", "example.com:80"),
        ("example.com:8080", "http", "example.com:8080"),
        ("example.com:80", "ftp", "example.com:80"),
        # an empty port is as if absent (RFC 3986 6.2.3)
        ("example.com:", "http", "example.com"),
        # the root label's trailing dot names the same host
        ("example.com.", "http", "example.com"),
        ("Example.Com.:80", "http", "example.com"),
        ("example.com.:8080", "http", "example.com:8080"),
        ("example.com..", "http", "example.com"),
        # IPv6 literals (RFC 3986 3.2.2): colons inside brackets are not ports
        ("[::1]", "http", "[::1]"),
        ("[::1]:80", "http", "[::1]"),
        ("[::1]:8080", "http", "[::1]:8080"),
        ("[2001:DB8::1]:443", "https", "[2001:db8::1]"),
        ("[2001:db8::80]", "http", "[2001:db8::80]"),
        ("[::1]:", "http", "[::1]"),
        # an unbracketed IPv6 address has no port to drop
        ("::80", "http", "::80"),
        ("2001:db8::1", "https", "2001:db8::1"),
        # IPv4
        ("192.0.2.1:80", "http", "192.0.2.1"),
        ("192.0.2.1:81", "http", "192.0.2.1:81"),
        # whitespace around the Host value is OWS
        (" example.com:80\t", "http", "example.com"),
        # not a port: left alone, never raising
        ("example.com:8o", "http", "example.com:8o"),
        ("example.com:\u0668\u0660", "http", "example.com:\u0668\u0660"),  # Arabic-Indic 80
        ("example.com:" + "8" * 5000, "http", "example.com:" + "8" * 5000),
        ("", "http", ""),
    ],
)
def test_normalise_host(host: str, scheme: str, expected: str) -> None:
    assert normalise_host(host, scheme) == expected


@pytest.mark.parametrize(
    ("scheme", "host", "target", "expected"),
    [
        ("http", "Example.com:80", "/a?b=1", "http://example.com/a?b=1"),
        ("HTTPS", "example.com:443", "/", "https://example.com/"),
        ("http", "example.com", "a", "http://example.com/a"),
        ("http", "example.com", "", "http://example.com/"),
        # path and query are kept as received (case, encoding, order)
        ("http", "example.com", "/A%2fB?z=1&a=2", "http://example.com/A%2fB?z=1&a=2"),
        ("http", "[::1]:80", "/x", "http://[::1]/x"),
        # hosts are never shared
        ("http", "a.example", "/x", "http://a.example/x"),
    ],
)
def test_primary_key(scheme: str, host: str, target: str, expected: str) -> None:
    assert primary_key(scheme, host, target) == expected


def test_equivalent_hosts_share_a_key() -> None:
    keys = {
        primary_key("http", h, "/p")
        for h in ("example.com", "EXAMPLE.COM", "example.com:80", "example.com.", "Example.Com.:80")
    }
    assert keys == {"http://example.com/p"}


SCHEMES = st.sampled_from(["http", "https", "HTTP", "ftp", ""]) | st.text(max_size=6)


HOSTISH = st.text(alphabet=".: \t[]08a4A3\u0130", max_size=12)


@given(st.one_of(st.text(), HOSTISH), SCHEMES)
def test_normalise_host_total(host: str, scheme: str) -> None:
    h = normalise_host(host, scheme)
    assert h == h.lower()
    assert normalise_host(h, scheme) == h  # idempotent


@given(st.text(), SCHEMES, st.text())
def test_primary_key_total(host: str, scheme: str, target: str) -> None:
    key = primary_key(scheme, host, target)
    assert key.startswith(scheme.lower() + "://")
    assert key.endswith(target)
