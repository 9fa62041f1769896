"""Entity tags (RFC 9110 section 8.8.3) and their comparison (8.8.3.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.http.etags import (
    ETag,
    ETagList,
    parse_etag,
    parse_etag_list,
    strong_match,
    weak_match,
)
from tests.unit.http.helpers import any_text, grammar_text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # 8.8.3's examples
        ('"xyzzy"', ETag('"xyzzy"')),
        ('W/"xyzzy"', ETag('"xyzzy"', weak=True)),
        ('""', ETag('""')),
        # etagc = %x21 / %x23-7E / obs-text: commas, "W/", "=" are content
        ('"a,b"', ETag('"a,b"')),
        ('"W/x"', ETag('"W/x"')),
        ('"!#~"', ETag('"!#~"')),
        ('"caf\u00e9"', ETag('"caf\u00e9"')),  # obs-text
        ('  "x"\t', ETag('"x"')),  # OWS around the field value
        # malformed
        (None, None),
        ("", None),
        ("xyzzy", None),  # opaque-tag must be quoted
        ('"xyzzy', None),
        ('xyzzy"', None),
        ('"', None),
        ('w/"x"', None),  # W/ is case-sensitive (8.8.3)
        ('W/ "x"', None),
        ('W/"x', None),
        ("W/", None),
        ('"a b"', None),  # SP is not etagc
        ('"a"b"', None),  # DQUOTE is not etagc
        ('"a\x00"', None),
        ('"a\x7f"', None),
        ('"a", "b"', None),  # a list is not one entity-tag
        ("*", None),
    ],
)
def test_parse_etag(value: str | None, expected: ETag | None) -> None:
    assert parse_etag(value) == expected


def test_str_round_trips() -> None:
    for text in ('"x"', 'W/"x"', '""'):
        tag = parse_etag(text)
        assert tag is not None and str(tag) == text


S1, W1, W2 = ETag('"1"'), ETag('"1"', weak=True), ETag('"2"', weak=True)


@pytest.mark.parametrize(
    ("a", "b", "strong", "weak"),
    [
        # RFC 9110 section 8.8.3.2, the table row by row
        pytest.param(W1, W1, False, True, id='W/"1"-W/"1"'),
        pytest.param(W1, W2, False, False, id='W/"1"-W/"2"'),
        pytest.param(W1, S1, False, True, id='W/"1"-"1"'),
        pytest.param(S1, S1, True, True, id='"1"-"1"'),
        # and its symmetric cases
        pytest.param(S1, W1, False, True, id='"1"-W/"1"'),
        pytest.param(ETag('"1"'), ETag('"2"'), False, False, id='"1"-"2"'),
        # character-by-character: no case folding
        pytest.param(ETag('"a"'), ETag('"A"'), False, False, id='"a"-"A"'),
    ],
)
def test_comparison_table(a: ETag, b: ETag, strong: bool, weak: bool) -> None:
    assert strong_match(a, b) is strong
    assert weak_match(a, b) is weak
    assert strong_match(b, a) is strong
    assert weak_match(b, a) is weak


def tags(*texts: str) -> ETagList:
    parsed = [parse_etag(t) for t in texts]
    assert all(p is not None for p in parsed)
    return ETagList(False, tuple(p for p in parsed if p is not None))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 9110 13.1.1 / 13.1.2 examples
        ('"xyzzy"', tags('"xyzzy"')),
        ('"xyzzy", "r2d2xxxx", "c3piozzzz"', tags('"xyzzy"', '"r2d2xxxx"', '"c3piozzzz"')),
        ('W/"xyzzy", W/"r2d2xxxx"', tags('W/"xyzzy"', 'W/"r2d2xxxx"')),
        ("*", ETagList(True, ())),
        (" * ", ETagList(True, ())),
        # commas inside opaque-tags do not split (8.8.3)
        ('"a,b", W/"c,d"', tags('"a,b"', 'W/"c,d"')),
        ('"a,b","c"', tags('"a,b"', '"c"')),
        # empty members and OWS (5.6.1.2)
        (', ,"a",,\t"b" ,', tags('"a"', '"b"')),
        # malformed members are skipped, the valid ones kept
        ('bogus, "a", w/"b", "c"', tags('"a"', '"c"')),
        ('"a" junk, "b"', tags('"a"', '"b"')),
        ('"a b", "c"', tags('"c"')),
        # "*" with other members is invalid (13.1.1): not a wildcard
        ('*, "a"', tags('"a"')),
        # nothing valid
        (None, None),
        ("", None),
        (",", None),
        ("bogus", None),
        ('"unterminated', None),
        ('"a", "unterminated', tags('"a"')),
        ("**", None),
    ],
)
def test_parse_etag_list(value: str | None, expected: ETagList | None) -> None:
    assert parse_etag_list(value) == expected


@given(any_text)
def test_parse_etag_total(value: str) -> None:
    tag = parse_etag(value)
    assert tag is None or parse_etag(str(tag)) == tag


@given(st.one_of(any_text, grammar_text))
def test_parse_etag_list_total(value: str) -> None:
    result = parse_etag_list(value)
    assert result is None or result.any or result.tags
    if result is not None:
        # every member is itself a valid entity-tag
        assert all(parse_etag(str(t)) == t for t in result.tags)
