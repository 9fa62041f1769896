"""Invalidation by unsafe methods (RFC 9111 section 4.4)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.policy.invalidation import invalidation_targets
from tests.unit.policy.helpers import headers

TARGET = "http://example.com/a/b?x=1"

# (id, method, status, response fields, URIs to invalidate)
# fmt: off
TABLE: list[tuple[str, str, int, dict[str, str], list[str]]] = [
    # Safe methods (RFC 9110 section 9.2.1) invalidate nothing.
    ("4.4-get", "GET", 200, {}, []),
    ("4.4-head", "HEAD", 200, {}, []),
    ("4.4-options", "OPTIONS", 200, {}, []),
    ("4.4-trace", "TRACE", 200, {}, []),
    ("4.4-get-with-location", "GET", 200, {"Location": "/c"}, []),
    # Unsafe methods, and methods whose safety is unknown, with a non-error status.
    ("4.4-post-200", "POST", 200, {}, [TARGET]),
    ("4.4-put-201", "PUT", 201, {}, [TARGET]),
    ("4.4-delete-204", "DELETE", 204, {}, [TARGET]),
    ("4.4-patch-200", "PATCH", 200, {}, [TARGET]),
    ("4.4-unknown-method", "FROB", 200, {}, [TARGET]),
    ("4.4-post-303-is-non-error", "POST", 303, {}, [TARGET]),
    ("4.4-post-399", "POST", 399, {}, [TARGET]),
    # Errors (4xx/5xx) and interim responses invalidate nothing.
    ("4.4-post-100", "POST", 100, {}, []),
    ("4.4-post-199", "POST", 199, {}, []),
    ("4.4-post-400", "POST", 400, {}, []),
    ("4.4-post-404-with-location", "POST", 404, {"Location": "/c"}, []),
    ("4.4-post-500", "POST", 500, {}, []),
    # Location and Content-Location of the same origin; relative references
    # resolve against the target URI (RFC 3986 section 5.2).
    ("4.4-location-absolute-same-origin", "POST", 201, {"Location": "http://example.com/c"},
     [TARGET, "http://example.com/c"]),
    ("4.4-location-absolute-path", "POST", 201, {"Location": "/c?y=2"},
     [TARGET, "http://example.com/c?y=2"]),
    ("4.4-location-relative-path", "POST", 201, {"Location": "c"},
     [TARGET, "http://example.com/a/c"]),
    ("4.4-location-dot-dot", "POST", 201, {"Location": "../c"}, [TARGET, "http://example.com/c"]),
    ("4.4-location-query-only", "POST", 201, {"Location": "?q"},
     [TARGET, "http://example.com/a/b?q"]),
    ("4.4-location-fragment-dropped", "POST", 201, {"Location": "/c#part"},
     [TARGET, "http://example.com/c"]),
    ("4.4-location-whitespace-trimmed", "POST", 201, {"Location": "  /c  "},
     [TARGET, "http://example.com/c"]),
    ("4.4-content-location", "PUT", 200, {"Content-Location": "/d"},
     [TARGET, "http://example.com/d"]),
    ("4.4-both", "PUT", 200, {"Location": "/c", "Content-Location": "/d"},
     [TARGET, "http://example.com/c", "http://example.com/d"]),
    # Same origin, spelled differently: emitted in the cache-key form.
    ("4.4-host-case", "POST", 201, {"Location": "http://EXAMPLE.com/c"},
     [TARGET, "http://example.com/c"]),
    ("4.4-default-port", "POST", 201, {"Location": "http://example.com:80/c"},
     [TARGET, "http://example.com/c"]),
    ("4.4-empty-path", "POST", 201, {"Location": "http://example.com"},
     [TARGET, "http://example.com/"]),
    # A different origin must not be invalidated (denial of service).
    ("4.4-other-host", "POST", 201, {"Location": "http://other.example/c"}, [TARGET]),
    ("4.4-network-path-other-host", "POST", 201, {"Location": "//other.example/c"}, [TARGET]),
    ("4.4-other-scheme", "POST", 201, {"Location": "https://example.com/c"}, [TARGET]),
    ("4.4-other-port", "POST", 201, {"Location": "http://example.com:8080/c"}, [TARGET]),
    ("4.4-userinfo-not-same-origin", "POST", 201, {"Location": "http://u@example.com/c"},
     [TARGET]),
    ("4.4-subdomain", "POST", 201, {"Content-Location": "http://www.example.com/c"}, [TARGET]),
    # Unparseable or empty references are ignored.
    ("4.4-bad-ipv6", "POST", 201, {"Location": "http://[::1/c"}, [TARGET]),
    ("4.4-empty-location", "POST", 201, {"Location": ""}, [TARGET]),
]
# fmt: on


@pytest.mark.parametrize(
    ("method", "status", "response", "expected"), [pytest.param(*r[1:], id=r[0]) for r in TABLE]
)
def test_invalidation_targets(
    method: str, status: int, response: dict[str, str], expected: list[str]
) -> None:
    assert invalidation_targets(method, status, TARGET, headers(response)) == expected


@given(
    location=st.text(max_size=60),
    content_location=st.text(max_size=60),
    status=st.integers(100, 599),
)
def test_invalidation_never_raises_nor_leaves_the_origin(
    location: str, content_location: str, status: int
) -> None:
    """Any field text: the target first, then only same-origin URIs (4.4)."""
    response = headers({"Location": location, "Content-Location": content_location})
    out = invalidation_targets("POST", status, TARGET, response)
    if not 200 <= status < 400:
        assert out == []
        return
    assert out[0] == TARGET
    for uri in out[1:]:
        parts = urlsplit(uri)
        assert (parts.scheme, parts.netloc) == ("http", "example.com")
        assert "#" not in uri
