"""May a shared cache store this response? RFC 9111 section 3, one row per rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from edgeproxy.http.cache_control import request_cache_control, response_cache_control
from edgeproxy.policy.settings import HEURISTIC_STATUSES, CachePolicy
from edgeproxy.policy.storable import Storability, stays_storable, storable
from tests.unit.policy.helpers import T0, HeaderInput, headers, http_date, make_entry

LM = {"Last-Modified": http_date(T0 - 3600)}
MAX_AGE = {"Cache-Control": "max-age=60"}


def check(
    *,
    method: str = "GET",
    req: HeaderInput = (),
    status: int = 200,
    resp: HeaderInput = (),
    policy: CachePolicy | None = None,
) -> Storability:
    policy = policy or CachePolicy()
    rq, rs = headers(req), headers(resp)
    return storable(
        method,
        rq,
        request_cache_control(rq),
        status,
        rs,
        response_cache_control(rs, policy.targeted),
        policy,
    )


# (id citing the rule, method, request headers, status, response headers, expected reason)
# An expected reason of "" means storable.
# fmt: off
TABLE: list[tuple[str, str, dict[str, str], int, dict[str, str], str]] = [
    # Section 3: "the request method is understood by the cache" (GET only
    # here; HEAD is answered from stored GETs).
    ("3-method-get", "GET", {}, 200, MAX_AGE, ""),
    ("3-method-head", "HEAD", {}, 200, MAX_AGE, "method"),
    ("3-method-post", "POST", {}, 200, MAX_AGE, "method"),
    ("3-method-put", "PUT", {}, 200, MAX_AGE, "method"),
    ("3-method-lowercase-get-is-another-method", "get", {}, 200, MAX_AGE, "method"),
    # Section 3: "the response status code is final".
    ("3-status-100-not-final", "GET", {}, 100, MAX_AGE, "status"),
    ("3-status-103-not-final", "GET", {}, 103, MAX_AGE, "status"),
    # Section 3: 304 must be understood; it's never a complete response to store.
    ("3-status-304", "GET", {}, 304, MAX_AGE, "status"),
    # Sections 3.3/3.4: partial content is never stored as a complete response.
    ("3.3-status-206", "GET", {}, 206, MAX_AGE, "partial"),
    ("3.3-206-even-public", "GET", {}, 206, {"Cache-Control": "public, max-age=60"}, "partial"),
    ("3.4-content-range-on-200", "GET", {}, 200, {**MAX_AGE, "Content-Range": "bytes 0-4/10"},
     "partial"),
    # Section 3 "understood": statuses we don't implement are refused even
    # with explicit freshness (the conservative reading).
    ("3-status-unknown-299", "GET", {}, 299, MAX_AGE, "status"),
    ("3-status-unknown-418", "GET", {}, 418, MAX_AGE, "status"),
    ("3-status-unknown-599", "GET", {}, 599, MAX_AGE, "status"),
    ("3-status-understood-302-max-age", "GET", {}, 302, MAX_AGE, ""),
    ("3-status-understood-500-max-age", "GET", {}, 500, MAX_AGE, ""),
    ("3-status-understood-503-expires", "GET", {}, 503, {"Expires": http_date(T0 + 60)}, ""),
    # Section 5.2.2.3 must-understand: only with an understood status, and it
    # then overrides no-store.
    ("5.2.2.3-must-understand-overrides-no-store", "GET", {}, 200,
     {"Cache-Control": "must-understand, no-store, max-age=60"}, ""),
    ("5.2.2.3-must-understand-unknown-status", "GET", {}, 299,
     {"Cache-Control": "must-understand, max-age=60"}, "must-understand"),
    ("5.2.2.3-must-understand-418-no-store", "GET", {}, 418,
     {"Cache-Control": "must-understand, no-store"}, "must-understand"),
    ("5.2.2.3-must-understand-still-private", "GET", {}, 200,
     {"Cache-Control": "must-understand, no-store, private, max-age=60"}, "private"),
    # Section 5.2.2.5 no-store in the response.
    ("5.2.2.5-no-store", "GET", {}, 200, {"Cache-Control": "no-store"}, "no-store"),
    ("5.2.2.5-no-store-beats-max-age", "GET", {}, 200,
     {"Cache-Control": "max-age=60, no-store"}, "no-store"),
    ("5.2.2.5-no-store-beats-public", "GET", {}, 200,
     {"Cache-Control": "public, no-store, max-age=60"}, "no-store"),
    ("5.2.2.5-no-store-case-insensitive", "GET", {}, 200,
     {"Cache-Control": "No-Store, max-age=60"}, "no-store"),
    # Section 5.2.1.5 no-store in the request.
    ("5.2.1.5-request-no-store", "GET", {"Cache-Control": "no-store"}, 200, MAX_AGE,
     "request-no-store"),
    ("5.2.1.5-request-no-store-public", "GET", {"Cache-Control": "no-store"}, 200,
     {"Cache-Control": "public, max-age=60"}, "request-no-store"),
    # Section 5.2.2.7 private: a shared cache must not store it; the qualified
    # form is treated as unqualified (the conservative CDN reading, README).
    ("5.2.2.7-private", "GET", {}, 200, {"Cache-Control": "private, max-age=60"}, "private"),
    ("5.2.2.7-private-qualified", "GET", {}, 200,
     {"Cache-Control": 'private="set-cookie", max-age=60'}, "private"),
    ("5.2.2.7-private-beats-public", "GET", {}, 200,
     {"Cache-Control": "public, private, s-maxage=60"}, "private"),
    # Section 3.5: Authorization only with public, s-maxage or must-revalidate.
    ("3.5-authorization-max-age-only", "GET", {"Authorization": "Basic eDp5"}, 200, MAX_AGE,
     "authorization"),
    ("3.5-authorization-public", "GET", {"Authorization": "Basic eDp5"}, 200,
     {"Cache-Control": "public, max-age=60"}, ""),
    ("3.5-authorization-s-maxage", "GET", {"Authorization": "Basic eDp5"}, 200,
     {"Cache-Control": "s-maxage=60"}, ""),
    ("3.5-authorization-must-revalidate", "GET", {"Authorization": "Basic eDp5"}, 200,
     {"Cache-Control": "must-revalidate, max-age=60"}, ""),
    ("3.5-authorization-proxy-revalidate-is-not-enough", "GET", {"Authorization": "Bearer t"},
     200, {"Cache-Control": "proxy-revalidate, max-age=60"}, "authorization"),
    ("3.5-authorization-heuristic", "GET", {"Authorization": "Bearer t"}, 200, LM,
     "authorization"),
    # Set-Cookie: never shared unless the operator allows it (policy; see
    # test_set_cookie_allowed_by_policy).
    ("set-cookie-refused", "GET", {}, 200, {**MAX_AGE, "Set-Cookie": "id=1"}, "set-cookie"),
    ("set-cookie-refused-even-public", "GET", {}, 200,
     {"Cache-Control": "public, max-age=60", "Set-Cookie": "id=1"}, "set-cookie"),
    # Section 4.1: Vary: * never matches, so storing it is pointless.
    ("4.1-vary-star", "GET", {}, 200, {**MAX_AGE, "Vary": "*"}, "vary-star"),
    ("4.1-vary-star-in-list", "GET", {}, 200, {**MAX_AGE, "Vary": "Accept-Encoding, *"},
     "vary-star"),
    ("4.1-vary-names-ok", "GET", {}, 200, {**MAX_AGE, "Vary": "Accept-Encoding"}, ""),
    # Section 3 last bullet: something must make it cacheable ...
    ("3-302-nothing", "GET", {}, 302, {}, "no-freshness"),
    ("3-302-last-modified-not-heuristic", "GET", {}, 302, LM, "no-freshness"),
    ("3-302-etag-not-heuristic", "GET", {}, 302, {"ETag": '"a"'}, "no-freshness"),
    ("3-max-age", "GET", {}, 200, MAX_AGE, ""),
    ("3-max-age-zero", "GET", {}, 200, {"Cache-Control": "max-age=0"}, ""),
    ("3-s-maxage", "GET", {}, 302, {"Cache-Control": "s-maxage=60"}, ""),
    ("3-expires", "GET", {}, 302, {"Expires": http_date(T0 + 60)}, ""),
    ("3-public-with-validator", "GET", {}, 302, {"Cache-Control": "public", "ETag": '"a"'}, ""),
    ("3-heuristic-200-last-modified", "GET", {}, 200, LM, ""),
    ("3-heuristic-200-etag", "GET", {}, 200, {"ETag": '"a"'}, ""),
    # ... and (section 3 note) no freshness and no validator: never reusable.
    ("3-200-no-freshness-no-validator", "GET", {}, 200, {"Content-Type": "text/plain"},
     "no-freshness"),
    ("3-public-without-validator", "GET", {}, 200, {"Cache-Control": "public"}, "no-freshness"),
    ("3-no-cache-without-validator", "GET", {}, 200, {"Cache-Control": "no-cache"},
     "no-freshness"),
    ("3-no-cache-with-validator", "GET", {}, 200, {"Cache-Control": "no-cache", "ETag": '"a"'},
     ""),
    ("3-must-revalidate-alone", "GET", {}, 200, {"Cache-Control": "must-revalidate"},
     "no-freshness"),
    # RFC 9213 section 2.2: a targeted field replaces Cache-Control and Expires.
    ("9213-cdn-no-store-beats-cc", "GET", {}, 200,
     {"CDN-Cache-Control": "no-store", "Cache-Control": "max-age=60"}, "no-store"),
    ("9213-cdn-max-age-beats-cc-no-store", "GET", {}, 200,
     {"CDN-Cache-Control": "max-age=60", "Cache-Control": "no-store"}, ""),
    ("9213-cdn-field-hides-expires", "GET", {}, 200,
     {"CDN-Cache-Control": "public", "Expires": http_date(T0 + 60)}, "no-freshness"),
    ("9213-empty-cdn-field-falls-back", "GET", {}, 200,
     {"CDN-Cache-Control": "", "Cache-Control": "no-store"}, "no-store"),
]
# fmt: on


@pytest.mark.parametrize(
    ("method", "req", "status", "resp", "reason"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_storable(
    method: str, req: dict[str, str], status: int, resp: dict[str, str], reason: str
) -> None:
    verdict = check(method=method, req=req, status=status, resp=resp)
    assert verdict == Storability(reason == "", reason)


@pytest.mark.parametrize("status", sorted(HEURISTIC_STATUSES - {206}))
def test_heuristically_cacheable_statuses_stored_with_only_a_validator(status: int) -> None:
    """RFC 9110 section 15.1's heuristically cacheable statuses need no explicit lifetime."""
    assert check(status=status, resp=LM).ok


@pytest.mark.parametrize(
    ("policy", "status", "resp", "ok"),
    [
        # force_ttl stands for a lifetime the origin didn't give (an
        # out-of-band contract, 4.2.4), so even a bare 302 is stored.
        pytest.param(CachePolicy(force_ttl=30), 302, {}, True, id="force-ttl-302"),
        pytest.param(CachePolicy(force_ttl=30), 200, {}, True, id="force-ttl-200-no-validator"),
        # default_ttl gives a 200 without validators a lifetime ...
        pytest.param(CachePolicy(default_ttl=30), 200, {}, True, id="default-ttl-200"),
        # ... but doesn't make a non-heuristic status cacheable (section 3).
        pytest.param(CachePolicy(default_ttl=30), 302, {}, False, id="default-ttl-302"),
        # force_ttl never overrides no-store or private.
        pytest.param(
            CachePolicy(force_ttl=30),
            200,
            {"Cache-Control": "no-store"},
            False,
            id="force-ttl-no-store",
        ),
        pytest.param(
            CachePolicy(force_ttl=30),
            200,
            {"Cache-Control": "private"},
            False,
            id="force-ttl-private",
        ),
    ],
)
def test_route_policy_and_storability(
    policy: CachePolicy, status: int, resp: dict[str, str], ok: bool
) -> None:
    assert check(status=status, resp=resp, policy=policy).ok is ok


def test_set_cookie_allowed_by_policy() -> None:
    resp = {**MAX_AGE, "Set-Cookie": "id=1"}
    assert check(resp=resp, policy=CachePolicy(allow_set_cookie=True)) == Storability(True)


_TOKENS = st.sampled_from(
    [
        "no-store", "private", "public", "no-cache", "max-age=60", "max-age=x", "s-maxage=5",
        "must-understand", "must-revalidate", 'private="a"', 'no-cache="b"', "", ",",
    ]
)  # fmt: skip


@given(
    status=st.integers(0, 999),
    cc=st.lists(_TOKENS, max_size=5).map(", ".join),
    extra=st.dictionaries(
        st.sampled_from(
            ["ETag", "Last-Modified", "Expires", "Vary", "Set-Cookie", "Content-Range"]
        ),
        st.text(max_size=20),
        max_size=4,
    ),
    req_cc=st.sampled_from(["", "no-store", "no-cache", "max-age=0"]),
    auth=st.booleans(),
)
def test_storable_invariants(
    status: int, cc: str, extra: dict[str, str], req_cc: str, auth: bool
) -> None:
    """Whatever the mix, the section 3 prohibitions hold and a refusal has a reason."""
    resp = {**extra, "Cache-Control": cc}
    req = {"Cache-Control": req_cc, **({"Authorization": "x"} if auth else {})}
    verdict = check(req=req, status=status, resp=resp)
    assert verdict.ok == (verdict.reason == "")
    if verdict.ok:
        rcc = response_cache_control(headers(resp))
        assert status not in (206, 304) and 200 <= status <= 599
        names = {k.lower() for k in resp}
        assert "content-range" not in names and "set-cookie" not in names  # default policy
        # 4.1: a `*` member (not a `*` inside a name: `0*` is a valid token).
        assert "*" not in [m.strip() for m in resp.get("Vary", "").split(",")]
        assert not rcc.has("private") and req_cc != "no-store"
        assert not rcc.has("no-store") or rcc.has("must-understand")
        if auth:
            assert rcc.has("public") or rcc.has("s-maxage") or rcc.has("must-revalidate")


@pytest.mark.parametrize(
    ("request_fields", "ok"),
    [
        ({"Content-Length": "12"}, False),  # a "fat GET": RFC 9110 9.3.1, never stored
        ({"Transfer-Encoding": "chunked"}, False),
        ({"Content-Length": "0"}, True),
        ({}, True),
    ],
    ids=["9.3.1-content-length", "9.3.1-chunked", "9.3.1-empty", "9.3.1-none"],
)
def test_get_with_content_is_not_stored(request_fields: dict[str, str], ok: bool) -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from edgeproxy.http.cache_control import EMPTY, parse_cache_control
    from edgeproxy.policy.settings import CachePolicy
    from edgeproxy.policy.storable import storable

    request = CIMultiDictProxy(CIMultiDict(request_fields))
    response = CIMultiDictProxy(CIMultiDict({"Cache-Control": "max-age=60"}))
    verdict = storable(
        "GET", request, EMPTY, 200, response, parse_cache_control("max-age=60"), CachePolicy()
    )
    assert verdict.ok is ok
    if not ok:
        assert verdict.reason == "request-content"


# -- a response freshened by a 304 (RFC 9111 section 4.3.4, then section 3) ----


@pytest.mark.parametrize(
    ("merged_fields", "request_fields", "stays"),
    [
        pytest.param({"Cache-Control": "max-age=60", "ETag": '"a"'}, {}, True, id="freshened"),
        pytest.param({"Cache-Control": "no-store"}, {}, False, id="304-added-no-store"),
        pytest.param({"Cache-Control": "private, max-age=60"}, {}, False, id="304-made-private"),
        pytest.param(
            {"Cache-Control": "max-age=60"},
            {"Authorization": "Basic eA=="},
            False,
            id="authorized-without-public-3.5",
        ),
        pytest.param(
            {"Cache-Control": "public, max-age=60"},
            {"Authorization": "Basic eA=="},
            True,
            id="authorized-public-3.5",
        ),
    ],
)
def test_stays_storable(
    merged_fields: dict[str, str], request_fields: dict[str, str], stays: bool
) -> None:
    merged = make_entry(list(merged_fields.items()))
    request = CIMultiDict(request_fields)
    assert stays_storable(request, request_cache_control(request), merged, CachePolicy()) is stays
