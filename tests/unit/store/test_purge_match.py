"""What each purge target covers (purge.py), stated as a table.

The stores are held to `matches` by tests/contract/test_purge.py; this table
holds `matches` itself to the issue's words.
"""

from __future__ import annotations

import pytest

from edgeproxy.purge import (
    PurgeAll,
    PurgePrefix,
    PurgeTags,
    PurgeURL,
    Target,
    host_prefixes,
    matches,
    url_covers,
)

K = "http://a.example/page?x=1"

CASES: list[tuple[str, Target, str, tuple[str, ...], bool]] = [
    ("url: its own key", PurgeURL(K), K, (), True),
    ("url: its #extras keys (cachekey.key_extras)", PurgeURL(K), K + "#lang=fr", (), True),
    ("url: not a longer query", PurgeURL(K), K + "2", (), False),
    ("url: not the same path on https", PurgeURL(K), "https://a.example/page?x=1", (), False),
    ("url: compared literally, no normalising", PurgeURL(K.upper()), K, (), False),
    ("prefix: under it", PurgePrefix("http://a.example/img/"), "http://a.example/img/1", (), True),
    (
        "prefix: literal, not path-aware",
        PurgePrefix("http://a.example/im"),
        "http://a.example/img",
        (),
        True,
    ),
    (
        "prefix: not the bare directory",
        PurgePrefix("http://a.example/img/"),
        "http://a.example/img",
        (),
        False,
    ),
    ("prefix: not a regex", PurgePrefix("http://a.example/.*"), "http://a.example/x", (), False),
    ("prefix: empty is everything", PurgePrefix(""), K, (), True),
    ("tags: any one of them", PurgeTags(("x", "b")), K, ("a", "b"), True),
    ("tags: none shared", PurgeTags(("x",)), K, ("a", "b"), False),
    ("tags: exact, case-sensitive", PurgeTags(("A",)), K, ("a",), False),
    ("tags: empty purge matches nothing", PurgeTags(()), K, ("a",), False),
    ("all: everything", PurgeAll(), "https://z.example/", (), True),
    ("host: http", PurgeAll("a.example"), K, (), True),
    ("host: https", PurgeAll("a.example"), "https://a.example/", (), True),
    ("host: normalised like keys (RFC 9110 4.2.3)", PurgeAll("A.Example:80"), K, (), True),
    ("host: not another port", PurgeAll("a.example"), "http://a.example:8080/", (), False),
    ("host: not a longer name", PurgeAll("a.example"), "http://a.example.evil/", (), False),
    ("host: not a sub-domain", PurgeAll("a.example"), "http://www.a.example/", (), False),
]


@pytest.mark.parametrize(
    ("target", "key", "tags", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_matches(target: Target, key: str, tags: tuple[str, ...], expected: bool) -> None:
    assert matches(target, key, tags) is expected


def test_host_prefixes_cover_both_schemes() -> None:
    assert host_prefixes("A.example.") == ("http://a.example/", "https://a.example/")
    assert host_prefixes("a.example:443") == ("http://a.example:443/", "https://a.example/")


def test_url_covers_only_the_url_and_its_extras() -> None:
    assert url_covers(K, K)
    assert url_covers(K, K + "#a=1&b=2")
    assert not url_covers(K, K + "&y=2")
