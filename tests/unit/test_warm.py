"""edgeproxy.warm's pure parts: the sitemap parser, URL lists, the Cache-Status
outcome and the token bucket."""

from __future__ import annotations

import contextlib
import gzip
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy import warm
from edgeproxy.warm import (
    Sitemap,
    SitemapError,
    TokenBucket,
    cache_outcome,
    parse_sitemap,
    read_url_list,
    request_target,
)

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'

# -- sitemaps (sitemaps.org protocol 0.9) ---------------------------------------

URLSET = f"""<?xml version="1.0" encoding="UTF-8"?>
<urlset {NS} xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
  <url><loc>https://shop.example/</loc><lastmod>2024-01-01</lastmod></url>
  <url>
    <loc>
      https://shop.example/a?x=1&amp;y=2
    </loc>
    <image:image><image:loc>https://img.example/skip.png</image:loc></image:image>
  </url>
</urlset>"""

INDEX = f"""<sitemapindex {NS}>
  <sitemap><loc>https://shop.example/sitemap-1.xml</loc></sitemap>
  <sitemap><loc>https://shop.example/sitemap-2.xml.gz</loc><lastmod>x</lastmod></sitemap>
</sitemapindex>"""


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param(
            URLSET,
            Sitemap(urls=("https://shop.example/", "https://shop.example/a?x=1&y=2")),
            id="urlset-entities-unescaped-extension-loc-skipped",
        ),
        pytest.param(
            INDEX,
            Sitemap(
                sitemaps=(
                    "https://shop.example/sitemap-1.xml",
                    "https://shop.example/sitemap-2.xml.gz",
                )
            ),
            id="sitemap-index",
        ),
        pytest.param(
            "<urlset><url><loc>http://a/</loc></url></urlset>",
            Sitemap(urls=("http://a/",)),
            id="no-namespace",
        ),
        pytest.param(f"<urlset {NS}/>", Sitemap(), id="empty-urlset"),
        pytest.param(
            "<urlset><url><loc> </loc></url><loc>http://stray/</loc></urlset>",
            Sitemap(),
            id="blank-and-misplaced-loc-ignored",
        ),
        pytest.param(
            '<urlset xmlns:o="urn:other"><url><o:loc>http://x/</o:loc></url></urlset>',
            Sitemap(),
            id="foreign-namespace-loc-ignored",
        ),
        pytest.param(
            "<urlset><url><loc><![CDATA[http://a/?q=<1>]]></loc></url></urlset>",
            Sitemap(urls=("http://a/?q=<1>",)),
            id="cdata",
        ),
    ],
)
def test_parse_sitemap(doc: str, expected: Sitemap) -> None:
    assert parse_sitemap(doc.encode()) == expected


def test_gzipped_sitemap() -> None:
    assert parse_sitemap(gzip.compress(URLSET.encode())) == parse_sitemap(URLSET.encode())


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE urlset [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
]>
<urlset><url><loc>http://x/&d;</loc></url></urlset>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE urlset [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<urlset><url><loc>http://x/&e;</loc></url></urlset>"""


@pytest.mark.parametrize(
    ("data", "why"),
    [
        pytest.param(BILLION_LAUGHS, "DTD", id="entity-expansion-refused"),
        pytest.param(XXE, "DTD", id="external-entity-refused"),
        pytest.param(b'<!DOCTYPE urlset SYSTEM "http://x/">\n<urlset/>', "DTD", id="any-dtd"),
        pytest.param(b"<html><body>not found</body></html>", "not a sitemap", id="html"),
        pytest.param(b"<urlset><url>", "well-formed", id="truncated"),
        pytest.param(b"", "well-formed", id="empty"),
        pytest.param(b"\x1f\x8bnot gzip", "gzip", id="bad-gzip"),
        pytest.param(
            b'<?xml version="1.0" encoding="x-nope"?><urlset/>',
            "unknown encoding",
            id="unknown-charset",
        ),
        pytest.param(b"<urlset>&undefined;</urlset>", "well-formed", id="undefined-entity"),
    ],
)
def test_parse_sitemap_refuses(data: bytes, why: str) -> None:
    with pytest.raises(SitemapError, match=why):
        parse_sitemap(data)


def test_sitemap_size_capped_after_gunzip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm, "MAX_SITEMAP_BYTES", 1000)
    bomb = gzip.compress(b"<urlset>" + b" " * 5000 + b"</urlset>")
    assert len(bomb) < 1000
    with pytest.raises(SitemapError, match="larger than 1000 bytes"):
        parse_sitemap(bomb)


@given(st.binary(max_size=2000))
def test_parse_sitemap_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(SitemapError):
        parse_sitemap(data)


XMLISH = st.text(alphabet=st.sampled_from(list("<>/?!&;#\"'= \n[]-xmlnsurlsetlocindex:")))


@given(XMLISH)
def test_parse_sitemap_never_raises_on_xml_like_text(text: str) -> None:
    try:
        result = parse_sitemap(text.encode())
    except SitemapError:
        return
    assert isinstance(result, Sitemap)


# -- URL lists ------------------------------------------------------------------


def test_read_url_list() -> None:
    text = "# warm these\nhttp://a/1\n\n   http://a/2  \r\n#http://skipped/\n"
    assert read_url_list(text) == ["http://a/1", "http://a/2"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://shop.example/a?b=1", ("shop.example", "/a?b=1")),
        ("https://shop.example:8443", ("shop.example:8443", "/")),
        ("HTTP://Shop.Example/%7Ea", ("Shop.Example", "/%7Ea")),  # sent as written
        ("ftp://shop.example/", "not an absolute http(s) URL"),
        ("/relative", "not an absolute http(s) URL"),
        # RFC 9110 section 4.2.4: userinfo is deprecated in http(s) URIs.
        ("http://user:pw@shop.example/", "userinfo in a URL is not sent (RFC 9110 section 4.2.4)"),
        ("http://shop.example/a b", "whitespace or control characters in the URL"),
        ("http://[::1/", "invalid URL: Invalid IPv6 URL"),
    ],
)
def test_request_target(url: str, expected: tuple[str, str] | str) -> None:
    assert request_target(url) == expected


# -- Cache-Status (RFC 9211) ----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "outcome"),
    [
        pytest.param(["edgeproxy; hit; ttl=50"], "hit", id="2.1-hit"),
        pytest.param(["edgeproxy; fwd=uri-miss; fwd-status=200; stored"], "miss", id="2.2-fwd"),
        pytest.param(["edgeproxy; fwd=stale; fwd-status=304; ttl=5"], "miss", id="revalidated"),
        pytest.param(["edgeproxy; hit=?1"], "hit", id="boolean-true"),
        pytest.param(["edgeproxy; hit=?0"], "miss", id="boolean-false"),
        # Section 2: members in order, the cache nearest the user last.
        pytest.param(["Origin; hit, edgeproxy; fwd=uri-miss"], "miss", id="last-member-is-ours"),
        pytest.param(["Origin; fwd=miss", "edgeproxy; hit"], "hit", id="field-lines-joined"),
        pytest.param(['"edge, with; hit"; fwd=miss'], "miss", id="quoted-name"),
        pytest.param(['edgeproxy; detail="a; hit"; fwd=miss'], "miss", id="quoted-param"),
        pytest.param([], "miss", id="absent"),
        pytest.param(["hit"], "miss", id="hit-as-cache-name"),
        pytest.param([";;,,"], "miss", id="garbage"),
    ],
)
def test_cache_outcome(fields: list[str], outcome: str) -> None:
    assert cache_outcome(fields) == outcome


@given(st.lists(st.text(max_size=80), max_size=4))
def test_cache_outcome_never_raises(fields: list[str]) -> None:
    assert cache_outcome(fields) in ("hit", "miss")


# -- token bucket -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "burst", "calls", "waits"),
    [
        pytest.param(10, 1, [0, 0, 0], [0, 0.1, 0.2], id="queued-in-order"),
        pytest.param(10, 1, [0, 0.1, 0.2], [0, 0, 0], id="spaced-by-the-rate"),
        pytest.param(10, 1, [0, 5, 5], [0, 0, 0.1], id="idle-refills-only-to-burst"),
        pytest.param(2, 3, [0, 0, 0, 0], [0, 0, 0, 0.5], id="burst"),
        pytest.param(4, 1, [0, 0, 0.1], [0, 0.25, 0.4], id="partial-refill"),
    ],
)
def test_token_bucket(rate: float, burst: float, calls: list[float], waits: list[float]) -> None:
    bucket = TokenBucket(rate, burst, now=0)
    assert [bucket.reserve(t) for t in calls] == pytest.approx(waits)


@given(
    st.floats(min_value=0.1, max_value=1000),
    st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=50),
)
def test_token_bucket_never_exceeds_the_rate(rate: float, gaps: list[float]) -> None:
    """Whatever the arrival times, the start times it hands out are spaced
    at least 1/rate apart (burst 1)."""
    bucket = TokenBucket(rate, 1, now=0)
    now = 0.0
    starts = []
    for gap in gaps:
        now += gap
        starts.append(now + bucket.reserve(now))
    assert all(b - a >= 1 / rate - 1e-9 for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("nan"), 1), (1, 0.5)])
def test_token_bucket_rejects(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate must be"):
        TokenBucket(rate, burst)
