"""Header fields of responses built from the cache (RFC 9111 section 4, 5.1, 5.2.2.4)."""

from __future__ import annotations

import pytest

from edgeproxy.policy.response import not_modified_fields, reuse_fields
from tests.unit.policy.helpers import T0, http_date, make_entry

Pairs = list[tuple[str, str]]


def _by_name(pairs: Pairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name.lower(), []).append(value)
    return out


# (id, stored fields (a Date of T0 is added), age, validated, expected fields)
# fmt: off
REUSE: list[tuple[str, Pairs, int, bool, Pairs]] = [
    # Section 4: Age is generated, replacing any stored one (5.1).
    ("4-age-added", [("Content-Type", "text/plain")], 10, False,
     [("content-type", "text/plain"), ("age", "10")]),
    ("4-age-replaced", [("Age", "100")], 5, False, [("age", "5")]),
    ("5.1-age-never-negative", [], -3, False, [("age", "0")]),
    ("4-repeated-fields-kept", [("Link", "</a>"), ("Link", "</b>")], 0, False,
     [("link", "</a>"), ("link", "</b>"), ("age", "0")]),
    # Section 5.2.2.4: qualified no-cache fields are withheld unless validated.
    ("5.2.2.4-qualified-withheld",
     [("Cache-Control", 'no-cache="Set-Cookie, X-Secret"'), ("Set-Cookie", "a=1"),
      ("Set-Cookie", "b=2"), ("x-secret", "s"), ("X-Public", "p")], 1, False,
     [("cache-control", 'no-cache="Set-Cookie, X-Secret"'), ("x-public", "p"), ("age", "1")]),
    ("5.2.2.4-qualified-kept-when-validated",
     [("Cache-Control", 'no-cache="x-secret"'), ("X-Secret", "s")], 1, True,
     [("cache-control", 'no-cache="x-secret"'), ("x-secret", "s"), ("age", "1")]),
    ("5.2.2.4-token-form-also-withheld",
     [("Cache-Control", "no-cache=x-secret"), ("X-Secret", "s")], 1, False,
     [("cache-control", "no-cache=x-secret"), ("age", "1")]),
    ("5.2.2.4-unqualified-withholds-nothing",
     [("Cache-Control", "no-cache"), ("X-Secret", "s")], 1, True,
     [("cache-control", "no-cache"), ("x-secret", "s"), ("age", "1")]),
]
# fmt: on


@pytest.mark.parametrize(
    ("stored", "age", "validated", "expected"), [pytest.param(*r[1:], id=r[0]) for r in REUSE]
)
def test_reuse_fields(stored: Pairs, age: int, validated: bool, expected: Pairs) -> None:
    entry = make_entry(stored)
    before = list(entry.fields.items())
    out = reuse_fields(entry, age, validated)
    assert _by_name(list(out.items())) == _by_name([*expected, ("date", http_date(T0))])
    assert list(entry.fields.items()) == before  # a copy: the stored fields stand


# fmt: off
FULL: Pairs = [
    ("Cache-Control", "max-age=60"),
    ("Content-Location", "/doc.en"),
    ("ETag", '"a"'),
    ("Expires", http_date(T0 + 60)),
    ("Vary", "Accept-Language"),
    ("Last-Modified", http_date(T0 - 60)),
    ("Content-Type", "text/html"),
    ("Content-Length", "5"),
    ("Content-Encoding", "gzip"),
    ("Set-Cookie", "a=1"),
    ("X-Custom", "1"),
]
# fmt: on

# (id, stored fields (a Date of T0 is added), expected 304 fields besides Date and Age)
# fmt: off
NOT_MODIFIED: list[tuple[str, Pairs, Pairs]] = [
    # RFC 9110 section 15.4.5: Content-Location, Date, ETag, Vary, Cache-Control,
    # Expires, and no other representation metadata ...
    ("15.4.5-listed-fields-only", FULL,
     [("cache-control", "max-age=60"), ("content-location", "/doc.en"), ("etag", '"a"'),
      ("expires", http_date(T0 + 60)), ("vary", "Accept-Language")]),
    # ... except Last-Modified when there is no ETag to guide cache updates.
    ("15.4.5-last-modified-without-etag", [f for f in FULL if f[0] != "ETag"],
     [("cache-control", "max-age=60"), ("content-location", "/doc.en"),
      ("expires", http_date(T0 + 60)), ("vary", "Accept-Language"),
      ("last-modified", http_date(T0 - 60))]),
    ("15.4.5-nothing-to-send", [("Content-Type", "text/plain")], []),
]
# fmt: on


@pytest.mark.parametrize(
    ("stored", "expected"), [pytest.param(*r[1:], id=r[0]) for r in NOT_MODIFIED]
)
def test_not_modified_fields(stored: Pairs, expected: Pairs) -> None:
    out = not_modified_fields(make_entry(stored), 7)
    assert _by_name(list(out.items())) == _by_name(
        [*expected, ("date", http_date(T0)), ("age", "7")]
    )


def test_not_modified_age_replaces_stored_and_is_never_negative() -> None:
    out = not_modified_fields(make_entry([("ETag", '"a"'), ("Age", "99")]), -1)
    assert out.getall("Age") == ["0"]
