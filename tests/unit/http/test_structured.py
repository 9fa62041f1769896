"""sf-dictionary parsing (RFC 8941 section 4.2.2), used for targeted fields (RFC 9213 2.2)."""

from __future__ import annotations

import pytest
from hypothesis import given

from edgeproxy.http.structured import Member, parse_dictionary
from tests.unit.http.helpers import any_text, grammar_text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", {}),
        # RFC 8941 3.2's examples
        (
            'en="Applepie", da=:w4ZibGV0w6ZydGU=:',
            {"en": Member("string", "Applepie"), "da": Member("bytes", ":w4ZibGV0w6ZydGU=:")},
        ),
        (
            "a=?0, b, c; foo=bar",
            {
                "a": Member("boolean", "?0"),
                "b": Member("boolean", "?1"),
                "c": Member("boolean", "?1"),
            },
        ),
        (
            "rating=1.5, feelings=(joy sadness)",
            {"rating": Member("decimal", "1.5"), "feelings": Member("inner-list", "(joy sadness)")},
        ),
        (
            "a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid",
            {
                "a": Member("inner-list", "(1 2)"),
                "b": Member("integer", "3"),
                "c": Member("integer", "4"),
                "d": Member("inner-list", "(5 6)"),
            },
        ),
        # integers (3.3.1), decimals (3.3.2), strings (3.3.3), tokens (3.3.4)
        (
            "a=-5, b=0, c=999999999999999",
            {
                "a": Member("integer", "-5"),
                "b": Member("integer", "0"),
                "c": Member("integer", "999999999999999"),
            },
        ),
        (
            "a=123456789012.123, b=-0.5",
            {"a": Member("decimal", "123456789012.123"), "b": Member("decimal", "-0.5")},
        ),
        (
            r'a="x \"y\" \\ z", b=""',
            {"a": Member("string", 'x "y" \\ z'), "b": Member("string", "")},
        ),
        (
            "a=*foo/bar:baz, b=Tok",
            {"a": Member("token", "*foo/bar:baz"), "b": Member("token", "Tok")},
        ),
        ("*k_-.9=1", {"*k_-.9": Member("integer", "1")}),
        # OWS around commas; a repeated key keeps the last value (4.2.2)
        ("a=1 ,\tb=2", {"a": Member("integer", "1"), "b": Member("integer", "2")}),
        ("a=1, a=2", {"a": Member("integer", "2")}),
        (
            "a=(), b=( 1  2 )",
            {"a": Member("inner-list", "()"), "b": Member("inner-list", "( 1  2 )")},
        ),
    ],
)
def test_valid(value: str, expected: dict[str, Member]) -> None:
    assert parse_dictionary(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "A=1",  # keys are lower-case
        "1a=1",
        "a=1,",  # trailing comma
        ",a=1",
        "a=1,,b=2",
        "a=1 b=2",  # members need a comma
        "a=",
        "a=1234567890123456",  # 16-digit integer
        "a=1234567890123.1",  # 13-digit integer part
        "a=1.1234",  # 4 fraction digits
        "a=1.",
        "a=-",
        "a=--1",
        'a="unterminated',
        r'a="bad \x escape"',
        'a="tab\tinside"',  # strings are printable ASCII only
        'a="caf\u00e9"',
        "a=:bytes",
        "a=:bad bytes:",
        "a=?",
        "a=?2",
        "a=(1 2",  # unclosed inner list
        "a=(1,2)",
        "a=@1",
        "a=1;",  # a parameter needs a key
        "a=1;B=2",
        "a;=1",
        "caf\u00e9=1",
    ],
)
def test_invalid_is_none(value: str) -> None:
    assert parse_dictionary(value) is None


@given(any_text)
def test_total_any_text(value: str) -> None:
    result = parse_dictionary(value)
    assert result is None or all(isinstance(m, Member) for m in result.values())


@given(grammar_text)
def test_total_grammar_text(value: str) -> None:
    result = parse_dictionary(value)
    assert result is None or all(k and k == k.lower() for k in result)
