"""The admin API's purge request -> typed Purge (purge.parse_purge_json / parse_purge_request).

Valid requests map to exactly one target; every malformed one raises
PurgeRequestError naming what is wrong, so the handler answers 400 and
purges nothing. URLs become primary keys (RFC 9111 section 4: the target
URI), normalised as cachekey.primary_key does (RFC 3986 section 6.2.2-6.2.3).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.http.surrogate import MAX_KEY_LENGTH
from edgeproxy.purge import (
    MAX_TAGS,
    MAX_URL_LENGTH,
    Purge,
    PurgeAll,
    PurgePrefix,
    PurgeRequestError,
    PurgeTags,
    PurgeURL,
    listing_prefix,
    parse_purge_json,
    parse_purge_request,
)

T = 1_800_000_000.0


@pytest.mark.parametrize(
    ("request_obj", "expected"),
    [
        pytest.param({"url": "http://a.example/p?q=1"}, Purge(PurgeURL("http://a.example/p?q=1"))),
        # Scheme and host case-insensitive, default port dropped (RFC 3986 6.2.2-6.2.3)
        pytest.param(
            {"url": "HTTP://A.Example:80/P?Q"}, Purge(PurgeURL("http://a.example/P?Q")), id="norm"
        ),
        pytest.param(
            {"url": "https://a.example:443/x"},
            Purge(PurgeURL("https://a.example/x")),
            id="https-default-port",
        ),
        pytest.param(
            {"url": "http://a.example:8080/x"},
            Purge(PurgeURL("http://a.example:8080/x")),
            id="other-port-kept",
        ),
        # An empty path is "/" (RFC 9112 section 3.2.1)
        pytest.param({"url": "http://a.example"}, Purge(PurgeURL("http://a.example/")), id="/"),
        pytest.param(
            {"url": "http://a.example?x"}, Purge(PurgeURL("http://a.example/?x")), id="/?query"
        ),
        # Path and query as given, never re-encoded or reordered: the proxy keys
        # a request on its target as received.
        pytest.param(
            {"url": "http://a.example/%7Eu/a%2Fb?b=2&a=1"},
            Purge(PurgeURL("http://a.example/%7Eu/a%2Fb?b=2&a=1")),
            id="target-literal",
        ),
        pytest.param(
            {"url": "http://[::1]:8080/x"}, Purge(PurgeURL("http://[::1]:8080/x")), id="ipv6"
        ),
        pytest.param(
            {"prefix": "http://A.example/img/"}, Purge(PurgePrefix("http://a.example/img/"))
        ),
        pytest.param(
            {"prefix": "http://a.example/"}, Purge(PurgePrefix("http://a.example/")), id="host-root"
        ),
        pytest.param({"tag": "product-42"}, Purge(PurgeTags(("product-42",)))),
        pytest.param({"tags": ["a", "b"]}, Purge(PurgeTags(("a", "b")))),
        pytest.param({"tags": ["b", "a", "b"]}, Purge(PurgeTags(("b", "a"))), id="tags-dedup"),
        pytest.param({"all": True}, Purge(PurgeAll())),
        pytest.param({"all": True, "host": "a.example"}, Purge(PurgeAll("a.example"))),
        pytest.param(
            {"all": True, "host": "a.example:8080"}, Purge(PurgeAll("a.example:8080")), id="port"
        ),
        pytest.param({"tag": "t", "soft": True}, Purge(PurgeTags(("t",)), soft=True)),
        pytest.param({"tag": "t", "dry_run": True}, Purge(PurgeTags(("t",)), dry_run=True)),
        pytest.param(
            {"url": "http://a/", "soft": False, "dry_run": False}, Purge(PurgeURL("http://a/"))
        ),
        pytest.param(
            {"all": True, "soft": True, "dry_run": True},
            Purge(PurgeAll(), soft=True, dry_run=True),
        ),
    ],
)
def test_valid_requests(request_obj: dict[str, Any], expected: Purge) -> None:
    assert parse_purge_request(request_obj) == expected
    # The same through the JSON entry point, with the ban time set.
    body = json.dumps(request_obj).encode()
    got = parse_purge_json(body, issued_at=T)
    assert got.target == expected.target
    assert (got.soft, got.dry_run, got.issued_at) == (expected.soft, expected.dry_run, T)


# (id, body, words the reason must contain)
MALFORMED: list[tuple[str, bytes, str]] = [
    # -- not a JSON object
    ("empty-body", b"", "malformed JSON"),
    ("not-json", b"url=http://a/", "malformed JSON"),
    ("truncated", b'{"url": "http://a/"', "malformed JSON"),
    ("trailing-garbage", b'{"all": true} x', "malformed JSON"),
    ("not-utf8", b'{"tag": "\xff"}', "not UTF-8"),
    ("deeply-nested", b"[" * 100_000 + b"]" * 100_000, "malformed JSON"),
    ("array", b'[{"all": true}]', "JSON object, got an array"),
    ("string", b'"http://a/"', "JSON object, got a string"),
    ("null", b"null", "JSON object, got null"),
    ("number", b"1", "JSON object, got a number"),
    # -- fields
    ("empty-object", b"{}", "exactly one of"),
    ("unknown-field", b'{"url": "http://a/", "force": true}', "unknown field 'force'"),
    ("unknown-only", b'{"regex": ".*"}', "unknown field 'regex'"),
    ("duplicate-field", b'{"url": "http://a/", "url": "http://b/"}', "'url' given twice"),
    ("two-kinds", b'{"url": "http://a/", "prefix": "http://a/"}', "got url and prefix"),
    ("tag-and-tags", b'{"tag": "a", "tags": ["b"]}', "got tag and tags"),
    ("all-and-tag", b'{"all": true, "tag": "a"}', "got tag and all"),
    ("flags-only", b'{"soft": true}', "got none"),
    ("host-without-all", b'{"url": "http://a/", "host": "a"}', '"host" only goes with "all"'),
    # -- url / prefix
    ("url-relative", b'{"url": "/a/b"}', "absolute http(s) URL"),
    ("url-no-scheme", b'{"url": "a.example/b"}', "absolute http(s) URL"),
    ("url-scheme-relative", b'{"url": "//a.example/b"}', "absolute http(s) URL"),
    ("url-ftp", b'{"url": "ftp://a.example/b"}', "absolute http(s) URL"),
    ("url-no-host", b'{"url": "http:///b"}', "no host"),
    ("url-port-only", b'{"url": "http://:80/b"}', "no host"),
    ("url-bad-port", b'{"url": "http://a:99999/b"}', "out of range"),
    ("url-word-port", b'{"url": "http://a:http/b"}', "Port"),
    ("url-userinfo", b'{"url": "http://u:p@a/b"}', "user info"),
    ("url-fragment", b'{"url": "http://a/b#frag"}', "no #fragment"),
    ("url-space", b'{"url": "http://a/b c"}', "visible ASCII"),
    ("url-non-ascii", '{"url": "http://a/caf\u00e9"}'.encode(), "visible ASCII"),
    ("url-empty", b'{"url": ""}', "absolute http(s) URL"),
    ("url-number", b'{"url": 42}', '"url" must be a string, got 42'),
    ("url-list", b'{"url": ["http://a/"]}', "got an array"),
    ("url-null", b'{"url": null}', "got null"),
    ("url-too-long", json.dumps({"url": "http://a/" + "x" * MAX_URL_LENGTH}).encode(), "longer"),
    ("prefix-no-path", b'{"prefix": "http://a.example"}', "no path"),
    ("prefix-empty", b'{"prefix": ""}', "absolute http(s) URL"),
    ("prefix-relative", b'{"prefix": "/img/"}', "absolute http(s) URL"),
    ("prefix-object", b'{"prefix": {}}', "got an object"),
    # -- tags
    ("tag-empty", b'{"tag": ""}', '"tag" is empty'),
    ("tag-space", b'{"tag": "a b"}', "no spaces or commas"),
    ("tag-comma", b'{"tag": "a,b"}', "no spaces or commas"),
    ("tag-too-long", json.dumps({"tag": "t" * (MAX_KEY_LENGTH + 1)}).encode(), "visible ASCII"),
    ("tag-number", b'{"tag": 42}', "must be a string"),
    ("tag-list", b'{"tag": ["a"]}', "must be a string"),
    ("tags-string", b'{"tags": "a"}', '"tags" must be a list of strings, got "a"'),
    ("tags-empty", b'{"tags": []}', '"tags" is empty'),
    ("tags-empty-member", b'{"tags": ["a", ""]}', '"tags"[1] is empty'),
    ("tags-number-member", b'{"tags": ["a", 1]}', '"tags"[1] must be a string'),
    ("tags-null-member", b'{"tags": [null]}', '"tags"[0] must be a string'),
    ("tags-nested", b'{"tags": [["a"]]}', '"tags"[0] must be a string'),
    (
        "tags-too-many",
        json.dumps({"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}).encode(),
        "at most",
    ),
    # -- all / host
    ("all-false", b'{"all": false}', '"all" must be true, got false'),
    ("all-string", b'{"all": "true"}', '"all" must be true, got "true"'),
    ("all-one", b'{"all": 1}', '"all" must be true, got 1'),
    ("host-empty", b'{"all": true, "host": ""}', '"host" must be a non-empty string'),
    ("host-number", b'{"all": true, "host": 1}', '"host" must be a non-empty string'),
    ("host-url", b'{"all": true, "host": "http://a/"}', "no scheme or path"),
    ("host-space", b'{"all": true, "host": "a b"}', "no scheme or path"),
    # -- flags: booleans only, never coerced
    ("soft-yes", b'{"all": true, "soft": "yes"}', '"soft" must be true or false, got "yes"'),
    ("soft-one", b'{"all": true, "soft": 1}', '"soft" must be true or false, got 1'),
    ("soft-null", b'{"all": true, "soft": null}', '"soft" must be true or false, got null'),
    ("dry-run-string", b'{"all": true, "dry_run": "false"}', '"dry_run" must be true or false'),
    ("dry-run-list", b'{"all": true, "dry_run": []}', "got an array"),
]


@pytest.mark.parametrize(
    ("body", "reason"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_requests_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PurgeRequestError) as info:
        parse_purge_json(body, issued_at=T)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        ("http://A.example:80/img/", "http://a.example/img/"),
        ("http://a.ex", "http://a.ex"),  # partial: read-only, so taken literally
        ("nonsense", "nonsense"),
    ],
)
def test_listing_prefix(value: str, expected: str) -> None:
    assert listing_prefix(value) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
request_like = st.dictionaries(
    st.sampled_from(["url", "prefix", "tag", "tags", "all", "host", "soft", "dry_run", "x"]),
    json_values,
    max_size=4,
)


@given(st.one_of(json_values, request_like))
def test_any_decoded_value_parses_or_is_refused(value: object) -> None:
    try:
        purge = parse_purge_request(value, issued_at=T)
    except PurgeRequestError as e:
        assert str(e)
    else:
        assert isinstance(purge, Purge)
        assert purge.issued_at == T


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_body_parses_or_is_refused(body: bytes) -> None:
    try:
        parse_purge_json(body)
    except PurgeRequestError as e:
        assert str(e)
