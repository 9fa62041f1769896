"""Validation upstream (RFC 9111 section 4.3) and 304 merging (section 3.2)."""

from __future__ import annotations

import pytest

from edgeproxy.policy.freshness import current_age, is_fresh
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.policy.validation import (
    changes_only_timing,
    conditional_request_headers,
    merge_304,
    validates,
)
from tests.unit.policy.helpers import T0, headers, http_date, make_entry

LM = http_date(T0 - 3600)
LM_OTHER = http_date(T0 - 60)

# -- conditional_request_headers: section 4.3.1 ----------------------------------

# fmt: off
CONDITIONALS: list[tuple[str, dict[str, str], list[tuple[str, str]]]] = [
    ("4.3.1-etag", {"ETag": '"a"'}, [("If-None-Match", '"a"')]),
    ("4.3.1-weak-etag-kept-weak", {"ETag": 'W/"a"'}, [("If-None-Match", 'W/"a"')]),
    ("4.3.1-last-modified", {"Last-Modified": LM}, [("If-Modified-Since", LM)]),
    ("4.3.1-both", {"ETag": '"a"', "Last-Modified": LM},
     [("If-None-Match", '"a"'), ("If-Modified-Since", LM)]),
    ("4.3.1-none", {"Cache-Control": "max-age=5"}, []),
]
# fmt: on


@pytest.mark.parametrize(
    ("fields", "expected"), [pytest.param(*r[1:], id=r[0]) for r in CONDITIONALS]
)
def test_conditional_request_headers(
    fields: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    assert conditional_request_headers(make_entry(fields)) == expected


# -- validates: section 4.3.4, which stored response a 304 freshens ------------

# (id, stored fields, 304 fields, stored responses for the key, identified)
# fmt: off
VALIDATES: list[tuple[str, dict[str, str], dict[str, str], int, bool]] = [
    # First match: the 304 carries a strong validator.
    ("4.3.4-strong-same", {"ETag": '"a"'}, {"ETag": '"a"'}, 1, True),
    ("4.3.4-strong-different", {"ETag": '"a"'}, {"ETag": '"b"'}, 1, False),
    ("4.3.4-strong-vs-stored-weak", {"ETag": 'W/"a"'}, {"ETag": '"a"'}, 1, False),
    ("4.3.4-strong-vs-stored-none", {"Last-Modified": LM}, {"ETag": '"a"', "Last-Modified": LM},
     1, False),
    ("4.3.4-strong-wins-over-last-modified", {"ETag": '"a"', "Last-Modified": LM},
     {"ETag": '"a"', "Last-Modified": LM_OTHER}, 1, True),
    ("4.3.4-strong-among-many", {"ETag": '"a"'}, {"ETag": '"a"'}, 3, True),
    # Second: weak validators that correspond (weak comparison).
    ("4.3.4-weak-same", {"ETag": 'W/"a"'}, {"ETag": 'W/"a"'}, 1, True),
    ("4.3.4-weak-vs-stored-strong", {"ETag": '"a"'}, {"ETag": 'W/"a"'}, 1, True),
    ("4.3.4-weak-different", {"ETag": 'W/"a"'}, {"ETag": 'W/"b"'}, 1, False),
    ("4.3.4-weak-vs-stored-none", {}, {"ETag": 'W/"a"'}, 1, False),
    # Last-Modified: a (weak) validator of its own.
    ("4.3.4-last-modified-same", {"Last-Modified": LM}, {"Last-Modified": LM}, 1, True),
    ("4.3.4-last-modified-different", {"Last-Modified": LM}, {"Last-Modified": LM_OTHER}, 1,
     False),
    ("4.3.4-last-modified-vs-stored-none", {"ETag": '"a"'}, {"Last-Modified": LM}, 1, False),
    # Third: no validator in the 304 and only one stored response.
    ("4.3.4-no-validators-one-stored", {}, {"Cache-Control": "max-age=5"}, 1, True),
    ("4.3.4-no-validators-several-stored", {}, {"Cache-Control": "max-age=5"}, 2, False),
    # Deliberate leniency: the 304 answers the one response we nominated in the
    # conditional request, even if its sender dropped the validator.
    ("4.3.4-304-omits-validator-we-sent", {"ETag": '"a"'}, {}, 1, True),
    # A malformed ETag in the 304 is no validator at all.
    ("4.3.4-malformed-etag-is-absent", {"ETag": '"a"'}, {"ETag": "a"}, 2, False),
    ("4.3.4-malformed-etag-then-last-modified", {"Last-Modified": LM},
     {"ETag": "a", "Last-Modified": LM}, 1, True),
]
# fmt: on


@pytest.mark.parametrize(
    ("stored", "response", "count", "identified"),
    [pytest.param(*r[1:], id=r[0]) for r in VALIDATES],
)
def test_validates(
    stored: dict[str, str], response: dict[str, str], count: int, identified: bool
) -> None:
    assert validates(make_entry(stored), headers(response), count) is identified


# -- merge_304: section 3.2 via 4.3.4 -------------------------------------------

Pairs = list[tuple[str, str]]
T1 = T0 + 100  # when the 304 arrived

# (id, stored fields, 304 fields, merged fields as (lower-case name, value) in order per name)
# Every row's stored side has a Date of T0 unless it says otherwise.
# fmt: off
MERGE: list[tuple[str, Pairs, Pairs, Pairs]] = [
    ("3.2-replaces-present-field",
     [("Cache-Control", "max-age=10"), ("Content-Type", "text/plain")],
     [("Cache-Control", "max-age=60"), ("Date", http_date(T1))],
     [("cache-control", "max-age=60"), ("content-type", "text/plain"),
      ("date", http_date(T1))]),
    ("3.2-adds-new-field",
     [("Content-Type", "text/plain")],
     [("X-Version", "2"), ("Date", http_date(T1))],
     [("content-type", "text/plain"), ("x-version", "2"), ("date", http_date(T1))]),
    ("3.2-case-insensitive-names",
     [("x-version", "1")],
     [("X-VERSION", "2"), ("Date", http_date(T1))],
     [("x-version", "2"), ("date", http_date(T1))]),
    ("3.2-all-lines-of-a-name-replace-all",
     [("Link", "</a>"), ("Link", "</b>")],
     [("Link", "</c>"), ("Link", "</d>"), ("Date", http_date(T1))],
     [("link", "</c>"), ("link", "</d>"), ("date", http_date(T1))]),
    ("3.2-content-star-is-updated",
     [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")],
     [("Content-Type", "text/html"), ("Date", http_date(T1))],
     [("content-type", "text/html"), ("content-encoding", "gzip"), ("date", http_date(T1))]),
    ("3.2-content-length-not-updated",
     [("Content-Length", "5")],
     [("Content-Length", "0"), ("Date", http_date(T1))],
     [("content-length", "5"), ("date", http_date(T1))]),
    ("3.2-content-range-not-updated",
     [],
     [("Content-Range", "bytes */5"), ("Date", http_date(T1))],
     [("date", http_date(T1))]),
    ("3.1-hop-by-hop-not-stored",
     [],
     [("Connection", "close, X-Hop"), ("Keep-Alive", "timeout=5"), ("X-Hop", "1"),
      ("Transfer-Encoding", "chunked"), ("TE", "trailers"), ("Upgrade", "h2c"),
      ("Trailer", "X-T"), ("Proxy-Authenticate", "Basic"), ("Proxy-Connection", "close"),
      ("Date", http_date(T1))],
     [("date", http_date(T1))]),
    ("3.1-connection-named-keeps-stored-value",
     [("X-Hop", "stored")],
     [("Connection", "X-Hop"), ("X-Hop", "new"), ("Date", http_date(T1))],
     [("x-hop", "stored"), ("date", http_date(T1))]),
    ("4.2.3-stored-age-dropped",
     [("Age", "30"), ("ETag", '"a"')],
     [("ETag", '"a"'), ("Date", http_date(T1))],
     [("etag", '"a"'), ("date", http_date(T1))]),
    ("4.2.3-age-from-304-kept",
     [("Age", "30")],
     [("Age", "5"), ("Date", http_date(T1))],
     [("age", "5"), ("date", http_date(T1))]),
    # RFC 9110 section 6.6.1: a 304 without Date is dated on receipt; the
    # stored Date belongs to the old exchange and would age the new timing.
    ("6.6.1-date-from-response-time",
     [("ETag", '"a"')],
     [("ETag", '"a"')],
     [("etag", '"a"'), ("date", http_date(T1))]),
]
# fmt: on


def _by_name(pairs: Pairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name.lower(), []).append(value)
    return out


@pytest.mark.parametrize(
    ("stored", "response", "expected"), [pytest.param(*r[1:], id=r[0]) for r in MERGE]
)
def test_merge_304_fields(stored: Pairs, response: Pairs, expected: Pairs) -> None:
    entry = make_entry(stored)  # adds Date: T0
    merged = merge_304(entry, headers(response), T1 - 1, T1)
    assert _by_name(list(merged.fields.items())) == _by_name(expected)


def test_merge_304_resets_timing_and_keeps_identity() -> None:
    entry = make_entry(
        {"Cache-Control": "max-age=60", "ETag": '"a"', "Age": "50", "Vary": "Accept"},
        request={"Accept": "text/html"},
        request_time=T0 - 1,
        response_time=T0,
        soft_purged=True,
        body_size=5,
        tags=("t",),
        route="r",
        variant="v1",
    )
    now = T0 + 1000
    assert not is_fresh(entry, CachePolicy(), now)
    merged = merge_304(entry, headers({"ETag": '"a"'}), now - 2, now)
    # Timing is this exchange's; a soft purge is lifted by a successful validation.
    assert (merged.request_time, merged.response_time, merged.soft_purged) == (now - 2, now, False)
    assert merged.fields["Date"] == http_date(now)
    assert current_age(merged, now) == 2  # just the response delay
    assert is_fresh(merged, CachePolicy(), now)
    # What identifies the stored response is untouched.
    for name in ("key", "status", "vary", "secondary", "body_size", "tags", "route", "variant"):
        assert getattr(merged, name) == getattr(entry, name), name
    # The stored entry itself is immutable.
    assert entry.fields["Age"] == "50" and entry.soft_purged


# -- changes_only_timing: may the disk's copy trail (store/tiered.py)? -------------

# (id, stored fields, 304 fields, 304's request time, expected). The stored
# response has Date T0 and was received at T0; the 304 arrives at T1.
# fmt: off
TIMING_ONLY: list[tuple[str, Pairs, Pairs, float, bool]] = [
    ("only-date",
     [("Cache-Control", "max-age=0"), ("ETag", '"a"')],
     [("Cache-Control", "max-age=0"), ("ETag", '"a"'), ("Date", http_date(T1))], T1 - 1, True),
    ("304-without-date-dated-on-receipt",
     [("ETag", '"a"')], [("ETag", '"a"')], T1 - 1, True),
    ("fields-moved-by-the-merge",
     [("ETag", '"a"'), ("Content-Type", "text/plain"), ("Cache-Control", "max-age=5")],
     [("Cache-Control", "max-age=5"), ("ETag", '"a"'), ("Date", http_date(T1))], T1 - 1, True),
    ("cache-control-changed",
     [("Cache-Control", "max-age=0"), ("ETag", '"a"')],
     [("Cache-Control", "max-age=60"), ("ETag", '"a"')], T1 - 1, False),
    ("field-added",
     [("ETag", '"a"')], [("ETag", '"a"'), ("X-Version", "2")], T1 - 1, False),
    ("age-sent-with-the-304",
     [("ETag", '"a"')], [("ETag", '"a"'), ("Age", "3")], T1 - 1, False),
    ("stored-age-dropped",
     [("ETag", '"a"'), ("Age", "3")], [("ETag", '"a"')], T1 - 1, False),
    ("same-name-reordered",
     [("Link", "</a>"), ("Link", "</b>")], [("Link", "</b>"), ("Link", "</a>")], T1 - 1, False),
    # Expires - Date (4.2.1): a later Date shortens the lifetime.
    ("expires-decides-the-lifetime",
     [("Expires", http_date(T1 + 60))], [("Expires", http_date(T1 + 60))], T1 - 1, False),
    ("expires-under-max-age",
     [("Expires", http_date(T1 + 60)), ("Cache-Control", "max-age=0")],
     [("Expires", http_date(T1 + 60))], T1 - 1, True),
    ("date-went-back",
     [("ETag", '"a"')], [("ETag", '"a"'), ("Date", http_date(T0 - 10))], T1 - 1, False),
    ("an-earlier-exchange",
     [("ETag", '"a"')], [("ETag", '"a"')], T0 - 1, False),
]
# fmt: on


@pytest.mark.parametrize(
    ("stored", "response", "sent", "expected"), [pytest.param(*r[1:], id=r[0]) for r in TIMING_ONLY]
)
def test_changes_only_timing(stored: Pairs, response: Pairs, sent: float, expected: bool) -> None:
    entry = make_entry(stored)
    merged = merge_304(entry, headers(response), sent, T1)
    assert changes_only_timing(entry, merged) is expected


def test_changes_only_timing_lifting_a_soft_purge_is_a_change() -> None:
    entry = make_entry({"ETag": '"a"'}, soft_purged=True)
    assert not changes_only_timing(entry, merge_304(entry, headers({"ETag": '"a"'}), T1 - 1, T1))
