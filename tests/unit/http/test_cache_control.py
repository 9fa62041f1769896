"""Cache-Control (RFC 9111 section 5.2) and targeted fields (RFC 9213)."""

from __future__ import annotations

import pytest
from hypothesis import given
from multidict import CIMultiDictProxy

from edgeproxy.http.cache_control import (
    DELTA_MAX,
    EMPTY,
    INVALID,
    CacheControl,
    parse_cache_control,
    parse_delta_seconds,
    parse_targeted,
    request_cache_control,
    response_cache_control,
    targeted_field,
)
from tests.unit.http.helpers import (
    any_text,
    grammar_text,
    hdrs,
    header_lines,
    headers_st,
)

TARGETED = ("edgeproxy-cache-control", "cdn-cache-control")

# -- every directive of 5.2.1 / 5.2.2 (and the RFC 5861 pair) --------------

BARE_DIRECTIVES = [
    # 5.2.1 request
    pytest.param("no-cache", id="5.2.1.4-no-cache"),
    pytest.param("no-store", id="5.2.1.5-no-store"),
    pytest.param("no-transform", id="5.2.1.6-no-transform"),
    pytest.param("only-if-cached", id="5.2.1.7-only-if-cached"),
    # 5.2.2 response
    pytest.param("must-revalidate", id="5.2.2.2-must-revalidate"),
    pytest.param("must-understand", id="5.2.2.3-must-understand"),
    pytest.param("private", id="5.2.2.7-private"),
    pytest.param("proxy-revalidate", id="5.2.2.8-proxy-revalidate"),
    pytest.param("public", id="5.2.2.9-public"),
    # 5.2.1.2: max-stale without a value means any staleness
    pytest.param("max-stale", id="5.2.1.2-max-stale-bare"),
]

DELTA_DIRECTIVES = [
    pytest.param("max-age", id="5.2.1.1/5.2.2.1-max-age"),
    pytest.param("max-stale", id="5.2.1.2-max-stale"),
    pytest.param("min-fresh", id="5.2.1.3-min-fresh"),
    pytest.param("s-maxage", id="5.2.2.10-s-maxage"),
    pytest.param("stale-while-revalidate", id="rfc5861-3-stale-while-revalidate"),
    pytest.param("stale-if-error", id="rfc5861-4-stale-if-error"),
]


@pytest.mark.parametrize("name", BARE_DIRECTIVES)
def test_bare_directive(name: str) -> None:
    cc = parse_cache_control(f"{name}, x-other")
    assert cc.has(name)
    assert cc.directives[name] is None
    assert cc.field_names(name) is None  # bare: no qualified list
    assert not parse_cache_control("x-other").has(name)


@pytest.mark.parametrize("name", DELTA_DIRECTIVES)
def test_delta_directive(name: str) -> None:
    assert parse_cache_control(f"{name}=60").seconds(name) == 60
    assert parse_cache_control(f"public, {name}=0").seconds(name) == 0
    # absent and invalid are different answers (RFC 9111 section 4.2.1)
    assert parse_cache_control("public").seconds(name) is None
    assert parse_cache_control(f"{name}=abc").seconds(name) == INVALID


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # delta-seconds = 1*DIGIT (RFC 9111 section 1.3)
        ("max-age=5", 5),
        ("max-age=0", 0),
        ("max-age=007", 7),
        ('max-age="5"', 5),  # 5.2: recipients ought to accept the quoted form
        ("MAX-AGE=5", 5),  # 5.2: directive names are case-insensitive
        ("max-age = 5", 5),  # tolerated BWS around "="
        ("max-age=2147483647", 2147483647),
        # 1.3: past the greatest representable value, use 2**31
        ("max-age=2147483648", DELTA_MAX),
        ("max-age=99999999999999999999", DELTA_MAX),
        ("max-age=" + "9" * 5000, DELTA_MAX),  # past Python's int() digit limit
        ("max-age=" + "0" * 5000 + "5", 5),
        # present but INVALID: stale, not absent (4.2.1)
        ("max-age", INVALID),  # the argument is required
        ("max-age=", INVALID),
        ("max-age=abc", INVALID),
        ("max-age=-1", INVALID),
        ("max-age=+5", INVALID),
        ("max-age=1.5", INVALID),
        ("max-age=5s", INVALID),
        ('max-age="5 "', INVALID),
        ('max-age=""', INVALID),
        ("max-age=\u0665", INVALID),  # ARABIC-INDIC FIVE is not DIGIT
        # absent
        ("", None),
        ("public", None),
        ("max-agex=5", None),
    ],
)
def test_max_age_values(value: str, expected: int | None) -> None:
    assert parse_cache_control(value).seconds("max-age") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # 4.2.1: duplicates either use the first or make the response stale;
        # disagreeing freshness directives make it stale (INVALID)
        ("max-age=5, max-age=6", INVALID),
        ("max-age=5, max-age", INVALID),
        ("max-age, max-age=5", INVALID),
        ("max-age=5, max-age=abc", INVALID),
        ("max-age=5, max-age=6, max-age=5", INVALID),
        # the same value twice is no conflict
        ("max-age=5, max-age=5", 5),
        ('max-age=5, max-age="5"', 5),
        ("max-age=5, MAX-AGE=05", 5),
    ],
)
def test_duplicate_max_age(value: str, expected: int) -> None:
    assert parse_cache_control(value).seconds("max-age") == expected
    s_value = value.replace("max-age", "s-maxage").replace("MAX-AGE", "S-MAXAGE")
    assert parse_cache_control(s_value).seconds("s-maxage") == expected


def test_duplicate_across_field_lines() -> None:
    # RFC 9110 section 5.3: two lines are one list, so this is a duplicate too
    h = hdrs([("Cache-Control", "max-age=5"), ("Cache-Control", "max-age=6")])
    assert response_cache_control(h).seconds("max-age") == INVALID
    assert request_cache_control(h).seconds("max-age") == INVALID


def test_other_duplicates_keep_the_first() -> None:
    # 4.2.1 "the first occurrence should be used" for the remaining directives
    cc = parse_cache_control('max-stale=5, max-stale=10, no-cache, no-cache="set-cookie"')
    assert cc.seconds("max-stale") == 5
    assert cc.field_names("no-cache") is None


@pytest.mark.parametrize(
    ("value", "directives"),
    [
        # a quoted argument may hold commas and "=" (RFC 9110 5.6.1, 5.6.4)
        (
            'no-cache="set-cookie, x-a=b", max-age=5',
            {"no-cache": '"set-cookie, x-a=b"', "max-age": "5"},
        ),
        # 5.2.3: unrecognised extensions are kept (and ignored by policy)
        ('private, community="UCI"', {"private": None, "community": '"UCI"'}),
        # names not matching token are dropped, the rest kept
        ('"quoted", a b=1, =5, (x), public', {"public": None}),
        ("caf\u00e9, \u212aeep, public", {"public": None}),
        # empty list elements ignored (RFC 9110 5.6.1.2)
        (" , ,no-store,, ", {"no-store": None}),
        ("", {}),
        (",", {}),
    ],
)
def test_parse_directives(value: str, directives: dict[str, str | None]) -> None:
    assert parse_cache_control(value).directives == directives


def test_empty_is_falsy_and_shared() -> None:
    assert parse_cache_control(None) is EMPTY
    assert parse_cache_control("") is EMPTY
    assert parse_cache_control("@@") is EMPTY
    assert not EMPTY
    assert parse_cache_control("public")


@pytest.mark.parametrize("directive", ["no-cache", "private"])
@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        # 5.2.2.4 / 5.2.2.7: qualified form lists field names, case-insensitive
        ('="Set-Cookie, X-Foo"', {"set-cookie", "x-foo"}),
        ('="set-cookie"', {"set-cookie"}),
        ("=set-cookie", {"set-cookie"}),  # token form: SHOULD NOT send, accept
        ('=" Set-Cookie ,, "', {"set-cookie"}),
        ('="a\\-b"', {"a-b"}),  # a quoted-pair is its octet (RFC 9110 5.6.4)
        ("", None),  # unqualified
        # "lists one or more field names": anything else is read as the
        # unqualified (most restrictive) directive
        ('=""', None),
        ("=", None),
        ('=", ,"', None),
        ('="a b"', None),
        ('="set-cookie, a b"', None),
        ('="x:y"', None),
    ],
)
def test_qualified_field_names(directive: str, arg: str, expected: set[str] | None) -> None:
    cc = parse_cache_control(f"{directive}{arg}, max-age=5")
    assert cc.has(directive)
    names = cc.field_names(directive)
    assert names == (None if expected is None else frozenset(expected))


def test_field_names_absent() -> None:
    assert parse_cache_control("max-age=5").field_names("no-cache") is None


# -- request_cache_control and Pragma (RFC 9111 section 5.4) ----------------


@pytest.mark.parametrize(
    ("lines", "directives"),
    [
        (
            [("Cache-Control", "max-age=5"), ("cache-control", "no-store")],
            {"max-age": "5", "no-store": None},
        ),
        # Pragma counts only when there is no Cache-Control (5.4)
        ([("Pragma", "no-cache")], {"no-cache": None}),
        ([("Pragma", "No-Cache")], {"no-cache": None}),
        ([("Pragma", "x-foo, no-cache")], {"no-cache": None}),
        ([("Pragma", "x-foo"), ("Pragma", "no-cache")], {"no-cache": None}),
        ([("Pragma", "x-foo")], {}),
        ([("Pragma", "no-cache=1")], {}),
        ([("Pragma", '"no-cache"')], {}),
        ([("Cache-Control", "max-age=5"), ("Pragma", "no-cache")], {"max-age": "5"}),
        # an empty Cache-Control line is still a Cache-Control field
        ([("Cache-Control", ""), ("Pragma", "no-cache")], {}),
        ([], {}),
    ],
)
def test_request_cache_control(
    lines: list[tuple[str, str]], directives: dict[str, str | None]
) -> None:
    assert request_cache_control(hdrs(lines)).directives == directives


# -- response_cache_control and targeted fields (RFC 9213) ------------------


@pytest.mark.parametrize(
    ("lines", "winner", "directives"),
    [
        # no targeted field: Cache-Control
        ([("Cache-Control", "max-age=60")], None, {"max-age": "60"}),
        ([], None, {}),
        # RFC 9213 section 3.1's examples
        (
            [("Cache-Control", "max-age=60, s-maxage=120"), ("CDN-Cache-Control", "max-age=600")],
            "cdn-cache-control",
            {"max-age": "600"},
        ),
        (
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=600")],
            "cdn-cache-control",
            {"max-age": "600"},
        ),
        # "none" is no directive, yet a valid non-empty field: it wins, so
        # Cache-Control's no-store no longer applies to this cache
        (
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", "none")],
            "cdn-cache-control",
            {"none": None},
        ),
        # 2.1: the first field in target-list order with a valid value wins
        (
            [("CDN-Cache-Control", "max-age=600"), ("Edgeproxy-Cache-Control", "max-age=5")],
            "edgeproxy-cache-control",
            {"max-age": "5"},
        ),
        # 2.1/2.2: an empty or unparseable field is ignored: the next one...
        (
            [("Edgeproxy-Cache-Control", ""), ("CDN-Cache-Control", "max-age=600")],
            "cdn-cache-control",
            {"max-age": "600"},
        ),
        (
            [("Edgeproxy-Cache-Control", "max-age=5,"), ("CDN-Cache-Control", "private")],
            "cdn-cache-control",
            {"private": None},
        ),
        # ...or Cache-Control when none is valid
        *[
            ([("Cache-Control", "max-age=60"), ("CDN-Cache-Control", bad)], None, {"max-age": "60"})
            for bad in [
                "",  # empty
                "   ",
                ",",
                "Max-Age=600",  # sf keys are lower-case (RFC 8941 3.2)
                "max-age=600 junk",
                "max-age=600,",  # trailing comma
                'no-cache="unterminated',
                "max-age=1.2345",  # decimal with four fraction digits
                "max-age=1234567890123456",  # integer of 16 digits
                "no-store=?2",
                "@",
                "max_age=5;",
            ]
        ],
        # valid dictionary, type-mismatched value: wins, and max-age is INVALID
        (
            [("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "max-age=abc")],
            "cdn-cache-control",
            {"max-age": "abc"},
        ),
        ([("CDN-Cache-Control", "max-age=1.5")], "cdn-cache-control", {"max-age": "1.5"}),
        # sf-string keeps its quotes so field lists read as in Cache-Control
        (
            [("CDN-Cache-Control", 'private="set-cookie, x-a"')],
            "cdn-cache-control",
            {"private": '"set-cookie, x-a"'},
        ),
        # sf booleans: ?1 is the bare directive, ?0 its absence (RFC 8941 3.3.6)
        ([("CDN-Cache-Control", "no-store=?1")], "cdn-cache-control", {"no-store": None}),
        (
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", "no-store=?0")],
            "cdn-cache-control",
            {},
        ),
        # parameters are dropped
        (
            [("CDN-Cache-Control", "max-age=60;x=1, public;y")],
            "cdn-cache-control",
            {"max-age": "60", "public": None},
        ),
        # repeated lines are one dictionary (RFC 9110 5.3), last duplicate wins
        (
            [("CDN-Cache-Control", "max-age=60"), ("CDN-Cache-Control", "private")],
            "cdn-cache-control",
            {"max-age": "60", "private": None},
        ),
        ([("CDN-Cache-Control", "max-age=5, max-age=10")], "cdn-cache-control", {"max-age": "10"}),
    ],
)
def test_response_cache_control_targeted(
    lines: list[tuple[str, str]], winner: str | None, directives: dict[str, str | None]
) -> None:
    h = hdrs(lines)
    assert targeted_field(h, TARGETED) == winner
    assert response_cache_control(h, TARGETED).directives == directives


def test_invalid_targeted_max_age_is_invalid_not_absent() -> None:
    cc = response_cache_control(hdrs({"CDN-Cache-Control": "max-age=abc"}), TARGETED)
    assert cc.seconds("max-age") == INVALID


def test_targeted_field_ignored_when_not_on_target_list() -> None:
    # RFC 9213 2.1: fields not on this cache's list MUST NOT change its behaviour
    h = hdrs([("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "no-store")])
    assert response_cache_control(h).directives == {"max-age": "60"}
    assert response_cache_control(h, ("edgeproxy-cache-control",)).directives == {"max-age": "60"}
    assert targeted_field(h, ()) is None


def test_parse_targeted() -> None:
    assert parse_targeted("") is None
    assert parse_targeted("max-age=5,,") is None
    assert parse_targeted("no-store=?0") == CacheControl({})


# -- never raises ------------------------------------------------------------


@given(any_text)
def test_parse_cache_control_total_any_text(value: str) -> None:
    _exercise(parse_cache_control(value))


@given(grammar_text)
def test_parse_cache_control_total_grammar_text(value: str) -> None:
    _exercise(parse_cache_control(value))


@given(any_text)
def test_parse_targeted_total_any_text(value: str) -> None:
    cc = parse_targeted(value)
    if cc is not None:
        _exercise(cc)


@given(grammar_text)
def test_parse_targeted_total_grammar_text(value: str) -> None:
    cc = parse_targeted(value)
    if cc is not None:
        _exercise(cc)
        # every valid sf-dictionary is also read by the lenient parser
        assert set(cc.directives) <= set(parse_cache_control(value).directives)


@given(any_text)
def test_parse_delta_seconds_total(value: str) -> None:
    v = parse_delta_seconds(value)
    assert v == INVALID or 0 <= v <= DELTA_MAX


@given(headers_st)
def test_request_and_response_cache_control_total(h: CIMultiDictProxy[str]) -> None:
    _exercise(request_cache_control(h))
    _exercise(response_cache_control(h))
    _exercise(response_cache_control(h, TARGETED))
    targeted_field(h, TARGETED)


@given(header_lines)
def test_targeted_field_and_response_cc_agree(lines: list[tuple[str, str]]) -> None:
    h = hdrs(lines)
    name = targeted_field(h, TARGETED)
    cc = response_cache_control(h, TARGETED)
    if name is None:
        assert cc == response_cache_control(h)
    else:
        assert name in TARGETED
        assert cc == parse_targeted(", ".join(h.getall(name)))


def _exercise(cc: CacheControl) -> None:
    """Every accessor on every parsed directive answers without raising."""
    for name in cc.directives:
        assert cc.has(name)
        v = cc.seconds(name)
        assert v is not None and (v == INVALID or 0 <= v <= DELTA_MAX)
        names = cc.field_names(name)
        assert names is None or (names and all(n == n.lower() for n in names))
