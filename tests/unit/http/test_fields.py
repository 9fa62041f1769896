"""Lists, tokens, quoted strings and hop-by-hop fields (RFC 9110 sections 5.6, 7.6.1)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edgeproxy.http.fields import (
    HOP_BY_HOP,
    combined,
    connection_named,
    is_token,
    list_values,
    split_list,
    strip_hop_by_hop,
    unquote,
)
from tests.unit.http.helpers import any_text, grammar_text, hdrs, header_lines

# -- split_list: RFC 9110 section 5.6.1 ------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # 5.6.1.2: the RFC's own valid examples, empty elements ignored
        ("foo,bar", ["foo", "bar"]),
        ("foo ,bar,", ["foo", "bar"]),
        ("foo , ,bar,charlie", ["foo", "bar", "charlie"]),
        # 5.6.1.2: the RFC's invalid examples hold no element at all
        ("", []),
        (",", []),
        (",   ,", []),
        # OWS is SP / HTAB (5.6.3) around each element
        ("\ta\t,\t b ", ["a", "b"]),
        (" single ", ["single"]),
        # a comma inside a quoted-string is content (5.6.4)
        ('no-cache="a, b", max-age=5', ['no-cache="a, b"', "max-age=5"]),
        ('"a,b","c"', ['"a,b"', '"c"']),
        # quoted-pair: an escaped DQUOTE does not end the string (5.6.4)
        (r'x="a\",b", y', [r'x="a\",b"', "y"]),
        # an escaped backslash does, so the next comma splits
        (r'x="a\\",b', [r'x="a\\"', "b"]),
        # a backslash outside quotes is not an escape
        (r"a\,b", ["a\\", "b"]),
        # an unterminated quote swallows the rest rather than raising
        ('a, "b, c', ["a", '"b, c']),
        # only SP/HTAB are OWS: other whitespace is content
        ("\x0ba\x0b", ["\x0ba\x0b"]),
    ],
)
def test_split_list(value: str, expected: list[str]) -> None:
    assert list(split_list(value)) == expected


def test_list_values_across_field_lines() -> None:
    # RFC 9110 section 5.3: repeated lines are one comma-joined list
    h = hdrs([("Vary", "a, b"), ("vary", ""), ("VARY", " ,c")])
    assert list_values(h, "vary") == ["a", "b", "c"]
    assert list_values(h, "absent") == []


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], None),  # absent stays apart from empty
        ([("X", "")], ""),
        ([("X", "a")], "a"),
        ([("X", "a"), ("x", "b")], "a, b"),  # 5.3: combined in order with ", "
    ],
)
def test_combined(lines: list[tuple[str, str]], expected: str | None) -> None:
    assert combined(hdrs(lines), "x") == expected


# -- is_token: RFC 9110 section 5.6.2 --------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-age", True),
        ("!#$%&'*+-.^_`|~", True),  # every non-alphanumeric tchar
        ("AZaz09", True),
        ("", False),  # token = 1*tchar
        ("a b", False),
        ("a\tb", False),
        *[(f"a{d}b", False) for d in '"(),/:;<=>?@[\\]{}'],  # each delimiter
        ("caf\u00e9", False),  # tchar is ASCII only
        ("\u212a", False),  # KELVIN SIGN lower-cases to ASCII "k", still not a tchar
        ("a\x00", False),
        ("a\x7f", False),
    ],
)
def test_is_token(value: str, expected: bool) -> None:
    assert is_token(value) is expected


# -- unquote: RFC 9110 section 5.6.4 ---------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"abc"', "abc"),
        ('""', ""),
        (r'"a\"b"', 'a"b'),  # quoted-pair stands for the octet after "\"
        (r'"a\\b"', "a\\b"),
        (r'"\a\b"', "ab"),  # any quoted octet, not just DQUOTE and "\"
        ("token", "token"),  # a token passes unchanged
        ('"', '"'),  # too short to be quoted
        ('"open', '"open'),
        ('close"', 'close"'),
        ("", ""),
    ],
)
def test_unquote(value: str, expected: str) -> None:
    assert unquote(value) == expected


# -- hop-by-hop: RFC 9110 section 7.6.1 ------------------------------------


def test_connection_named_is_case_insensitive_across_lines() -> None:
    # 7.6.1: connection options are case-insensitive; lines combine (5.3)
    h = hdrs([("Connection", "Keep-Alive, X-Trace"), ("connection", " close ,, X-TRACE")])
    assert connection_named(h) == {"keep-alive", "x-trace", "close"}
    assert connection_named(hdrs()) == frozenset()


@given(
    st.lists(st.text(st.sampled_from('aZ- \t,"\\;=!'), max_size=8), max_size=3),
)
@example(["keep-alive"])
@example([" Close\t"])
@example(['"x"'])
def test_connection_named_is_the_lower_cased_list(lines: list[str]) -> None:
    # One plain token is read without the list parser: the same names.
    h = hdrs([("Connection", line) for line in lines])
    assert connection_named(h) == frozenset(v.lower() for v in list_values(h, "connection"))


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_strip_removes_each_listed_hop_by_hop_field(name: str) -> None:
    # 7.6.1 names Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade;
    # Proxy-Authenticate/-Authorization are per hop (RFC 9110 section 11.7)
    out = strip_hop_by_hop(hdrs([(name.title(), "x"), ("Content-Type", "text/plain")]))
    assert list(out.items()) == [("Content-Type", "text/plain")]


def test_strip_removes_fields_named_in_connection() -> None:
    # 7.6.1: "for each connection-option ... remove any header ... with the same
    # name", then Connection itself; end-to-end fields and their order survive
    h = hdrs(
        [
            ("Accept", "a"),
            ("Connection", "x-Private, Cache-Control"),
            ("X-Private", "1"),
            ("Cache-Control", "no-cache"),  # a sender MUST NOT list it; we still obey
            ("x-private", "2"),
            ("Accept", "b"),
            ("X-Public", "3"),
        ]
    )
    out = strip_hop_by_hop(h)
    assert list(out.items()) == [("Accept", "a"), ("Accept", "b"), ("X-Public", "3")]


def test_strip_extra_and_input_untouched() -> None:
    h = hdrs([("Host", "a"), ("Content-Length", "3"), ("Age", "1")])
    out = strip_hop_by_hop(h, ("HOST", "content-length"))
    assert list(out.items()) == [("Age", "1")]
    assert len(h) == 3  # a copy: the input is never mutated
    out.add("New", "x")
    assert "New" not in h


# -- never raises: arbitrary text and header lines ---------------------------


@given(any_text)
def test_split_list_total_any_text(value: str) -> None:
    items = list(split_list(value))
    # no element is empty or carries OWS at its ends (5.6.1.2)
    assert all(i and i == i.strip(" \t") for i in items)


@given(grammar_text)
def test_split_list_loses_no_content_outside_separators(value: str) -> None:
    # Joining the elements back and removing separators and OWS must give the
    # input minus separators and OWS: splitting never drops or invents content.
    items = list(split_list(value))
    assert "".join(items).replace(",", "").replace(" ", "").replace("\t", "") == (
        value.replace(",", "").replace(" ", "").replace("\t", "")
    )


@given(any_text)
def test_unquote_and_is_token_total(value: str) -> None:
    assert isinstance(unquote(value), str)
    assert isinstance(is_token(value), bool)


@given(header_lines)
def test_strip_hop_by_hop_total(lines: list[tuple[str, str]]) -> None:
    h = hdrs(lines)
    out = strip_hop_by_hop(h)
    named = connection_named(h)
    assert not any(k.lower() in HOP_BY_HOP | named for k in out)
