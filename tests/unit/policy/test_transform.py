"""Edge compression decisions (policy/transform.py) and how validation treats
a compressed stored response (policy/validation.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from multidict import CIMultiDictProxy

from edgeproxy.http.etags import ETag
from edgeproxy.policy.transform import (
    Compression,
    TransformPlan,
    compression_plan,
    origin_etag,
    transformed_etag,
    transformed_fields,
    type_matches,
    upstream_if_none_match,
)
from edgeproxy.policy.validation import conditional_request_headers, merge_304, validates
from tests.unit.http.helpers import grammar_text, headers_st
from tests.unit.policy.helpers import T0, headers, http_date, make_entry

BOTH = frozenset({"br", "gzip"})
TEXT = {"Content-Type": "text/html; charset=utf-8", "Content-Length": "5000"}
ON = Compression(enabled=True)


@pytest.mark.parametrize(
    ("status", "fields", "coding", "settings", "available", "expected"),
    [
        # RFC 9110 section 7.7: a proxy MAY transform content without no-transform.
        (200, TEXT, "gzip", ON, BOTH, TransformPlan("gzip", True)),
        (200, TEXT, "br", ON, BOTH, TransformPlan("br", True)),
        (203, TEXT, "gzip", ON, BOTH, TransformPlan("gzip", True)),
        # negotiable, but this client takes identity: Vary all the same (12.5.5)
        (200, TEXT, "identity", ON, BOTH, TransformPlan(None, True, "identity")),
        # br without the brotli package: identity for this client, still negotiable
        (200, TEXT, "br", ON, frozenset({"gzip"}), TransformPlan(None, True, "unavailable")),
        # RFC 9111 section 5.2.2.6: MUST NOT transform
        (200, {**TEXT, "Cache-Control": "max-age=60, no-transform"}, "gzip", ON, BOTH,
         TransformPlan(None, False, "no-transform")),
        # ... also when only our targeted field says so (RFC 9213)
        (200, {**TEXT, "CDN-Cache-Control": "max-age=60, no-transform"}, "gzip", ON, BOTH,
         TransformPlan(None, False, "no-transform")),
        # already encoded by the origin (8.4): never twice, but Vary is added
        (200, {**TEXT, "Content-Encoding": "gzip"}, "gzip", ON, BOTH,
         TransformPlan(None, True, "encoded")),
        (200, {**TEXT, "Content-Encoding": "br"}, "identity", ON, BOTH,
         TransformPlan(None, True, "encoded")),
        # "identity" is no coding (12.5.3)
        (200, {**TEXT, "Content-Encoding": "identity"}, "gzip", ON, BOTH,
         TransformPlan("gzip", True)),
        # partial content is never transformed (15.3.7)
        (206, {**TEXT, "Content-Range": "bytes 0-9/5000"}, "gzip", ON, BOTH,
         TransformPlan(None, False, "status")),
        (200, {**TEXT, "Content-Range": "bytes 0-9/5000"}, "gzip", ON, BOTH,
         TransformPlan(None, False, "partial")),
        # statuses without a whole representation worth it
        (304, TEXT, "gzip", ON, BOTH, TransformPlan(None, False, "status")),
        (404, TEXT, "gzip", ON, BOTH, TransformPlan(None, False, "status")),
        # type list
        (200, {"Content-Type": "image/png"}, "gzip", ON, BOTH, TransformPlan(None, False, "type")),
        (200, {}, "gzip", ON, BOTH, TransformPlan(None, False, "type")),  # no Content-Type
        (200, {"Content-Type": "application/json"}, "gzip", ON, BOTH, TransformPlan("gzip", True)),
        (200, {"Content-Type": "image/svg+xml"}, "br", ON, BOTH, TransformPlan("br", True)),
        (200, {"Content-Type": "application/ld+json"}, "br", ON, BOTH, TransformPlan("br", True)),
        # size floor: only a known length below it
        (200, {**TEXT, "Content-Length": "255"}, "gzip", ON, BOTH,
         TransformPlan(None, False, "small")),
        (200, {**TEXT, "Content-Length": "256"}, "gzip", ON, BOTH, TransformPlan("gzip", True)),
        (200, {"Content-Type": "text/css"}, "gzip", ON, BOTH, TransformPlan("gzip", True)),
        # switched off
        (200, TEXT, "gzip", Compression(enabled=False), BOTH,
         TransformPlan(None, False, "disabled")),
        (200, {**TEXT, "Content-Encoding": "gzip"}, "gzip", Compression(enabled=False), BOTH,
         TransformPlan(None, True, "encoded")),
    ],
)  # fmt: skip
def test_compression_plan(
    status: int,
    fields: dict[str, str],
    coding: str,
    settings: Compression,
    available: frozenset[str],
    expected: TransformPlan,
) -> None:
    plan = compression_plan(
        status, headers(fields), coding, settings, available, ("cdn-cache-control",)
    )
    assert plan == expected


@pytest.mark.parametrize(
    ("mtype", "patterns", "expected"),
    [
        ("text/html", ("text/*",), True),
        ("application/json", ("application/json",), True),
        ("application/vnd.api+json", ("application/*+json",), True),
        ("application/json", ("application/*+json",), False),
        ("application/+json", ("application/*+json",), False),
        ("image/svg+xml", ("image/svg+xml",), True),
        ("image/png", ("text/*", "image/svg+xml"), False),
        ("text/html", ("TEXT/*",), True),
    ],
)
def test_type_matches(mtype: str, patterns: tuple[str, ...], expected: bool) -> None:
    assert type_matches(mtype, patterns) is expected


@pytest.mark.parametrize(
    ("etag", "coding", "expected"),
    [
        # RFC 9110 section 8.8.3: a different coding, a different tag; weak
        # because our compressed bytes are not byte-stable (8.8.1).
        ('"abc"', "gzip", 'W/"abc-gzip"'),
        ('W/"abc"', "br", 'W/"abc-br"'),
        ('""', "gzip", 'W/"-gzip"'),
        ("abc", "gzip", None),  # malformed: dropped
    ],
)
def test_transformed_etag(etag: str, coding: str, expected: str | None) -> None:
    assert transformed_etag(etag, coding) == expected


@pytest.mark.parametrize(
    ("etag", "coding", "expected"),
    [
        ('W/"abc-gzip"', "gzip", ETag('"abc"', weak=True)),
        ('W/"abc-br"', "br", ETag('"abc"', weak=True)),
        ('W/"abc-br"', "gzip", None),
        ('"abc-gzip"', "gzip", None),  # strong: not one of ours
        (None, "gzip", None),
    ],
)
def test_origin_etag(etag: str | None, coding: str, expected: ETag | None) -> None:
    assert origin_etag(etag, coding) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (None, None)),
        ('"abc"', ('"abc"', None)),
        ("*", ("*", None)),
        # 13.1.2 weak comparison at the origin matches "abc" and W/"abc" alike
        ('W/"abc-gzip"', ('W/"abc"', "gzip")),
        ('"x", W/"abc-br"', ('"x", W/"abc"', "br")),
        ('"abc-gzip"', ('"abc-gzip"', None)),
    ],
)
def test_upstream_if_none_match(value: str | None, expected: tuple[str | None, str | None]) -> None:
    assert upstream_if_none_match(value) == expected


def test_transformed_fields() -> None:
    origin = headers(
        [
            ("Content-Type", "text/html"),
            ("Content-Length", "5000"),
            ("ETag", '"v1"'),
            ("Vary", "Accept-Language"),
            ("Content-Digest", "sha-256=:x:"),
            ("Cache-Control", "max-age=60"),
        ]
    )
    out = transformed_fields(origin, TransformPlan("gzip", True))
    assert out["Content-Encoding"] == "gzip"
    assert "content-length" not in out and "content-digest" not in out
    assert out["ETag"] == 'W/"v1-gzip"'
    # 12.5.5: merged with the origin's Vary
    assert out["Vary"] == "Accept-Language, Accept-Encoding"
    assert out["Cache-Control"] == "max-age=60"
    assert origin["Content-Length"] == "5000"  # the input is not changed


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ([], ["Accept-Encoding"]),
        ([("Vary", "accept-encoding")], ["accept-encoding"]),
        ([("Vary", "Accept"), ("Vary", "Cookie")], ["Accept, Cookie, Accept-Encoding"]),
        ([("Vary", "*")], ["*"]),
        ([("Vary", "")], ["Accept-Encoding"]),
    ],
)
def test_vary_merge(vary: list[tuple[str, str]], expected: list[str]) -> None:
    out = transformed_fields(headers(vary), TransformPlan(None, True))
    assert out.getall("vary") == expected


@given(headers_st)
def test_transform_never_raises(response: CIMultiDictProxy[str]) -> None:
    plan = compression_plan(200, response, "gzip", ON, BOTH)
    transformed_fields(response, plan)


@given(grammar_text)
def test_if_none_match_rewrite_never_raises(value: str) -> None:
    upstream_if_none_match(value)


# -- validation of a stored response this edge compressed (RFC 9111 section 4.3) ----

GZ = [
    ("Content-Type", "text/html"),
    ("Cache-Control", "max-age=60"),
    ("Content-Encoding", "gzip"),
    ("ETag", 'W/"v1-gzip"'),
    ("Vary", "Accept-Encoding"),
]


def coded(fields: Any = GZ, coding: str = "gzip") -> Any:
    return make_entry(fields, request={"Accept-Encoding": "gzip"}, coding=coding)


def test_conditional_request_uses_the_origin_tag() -> None:
    # 4.3.1: the origin never saw our tag; its own, weak, matches by weak comparison.
    assert conditional_request_headers(coded()) == [("If-None-Match", 'W/"v1"')]
    # an entry we did not encode keeps its tag as stored
    plain = make_entry([("ETag", '"v1"')], coding="identity")
    assert conditional_request_headers(plain) == [("If-None-Match", '"v1"')]


@pytest.mark.parametrize(
    ("fields_304", "expected"),
    [
        ({"ETag": '"v1"'}, True),  # 4.3.4: the origin's strong tag for what we hold
        ({"ETag": 'W/"v1"'}, True),
        ({"ETag": '"v2"'}, False),
        ({"ETag": 'W/"v1-gzip"'}, False),
    ],
)
def test_validates_a_compressed_entry(fields_304: dict[str, str], expected: bool) -> None:
    assert validates(coded(), headers(fields_304)) is expected


def test_merge_304_keeps_our_coding() -> None:
    # 4.3.4 via 3.2: the 304's fields update ours, but the coding we applied,
    # the transformed tag and Vary: Accept-Encoding stay.
    merged = merge_304(
        coded(),
        headers(
            {
                "ETag": '"v1"',
                "Cache-Control": "max-age=120",
                "Vary": "Accept-Language",
                "Date": http_date(T0 + 10),
            }
        ),
        T0 + 10,
        T0 + 10,
    )
    f = merged.fields
    assert f["ETag"] == 'W/"v1-gzip"'
    assert f.getall("Content-Encoding") == ["gzip"]
    assert f["Cache-Control"] == "max-age=120"
    assert f["Vary"] == "Accept-Language, Accept-Encoding"
    assert merged.coding == "gzip"


def test_merge_304_without_etag_keeps_the_stored_tag() -> None:
    merged = merge_304(coded(), headers({"Cache-Control": "max-age=120"}), T0 + 5, T0 + 5)
    assert merged.fields.getall("ETag") == ['W/"v1-gzip"']
    assert merged.fields["Content-Encoding"] == "gzip"


def test_merge_304_identity_variant_keeps_vary() -> None:
    entry = make_entry(
        [("ETag", '"v1"'), ("Vary", "Accept-Encoding")],
        request={},
        coding="identity",
    )
    merged = merge_304(entry, headers({"ETag": '"v1"', "Vary": "Cookie"}), T0 + 5, T0 + 5)
    assert merged.fields["ETag"] == '"v1"'
    assert merged.fields["Vary"] == "Cookie, Accept-Encoding"
    assert "content-encoding" not in merged.fields
