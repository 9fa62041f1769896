"""Invariants of the policy core over generated requests, entries and clocks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.http.cache_control import INVALID
from edgeproxy.policy.decide import Fetch, OnlyIfCachedMiss, Pass, Revalidate, Serve, decide
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import (
    current_age,
    freshness_lifetime,
    is_fresh,
    stale_forbidden,
)
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.policy.validation import changes_only_timing, has_validator, merge_304
from tests.unit.policy.helpers import T0, headers, http_date, make_entry, make_request

SECONDS = st.integers(0, 400)
# Offsets from T0 well inside what an HTTP-date can express.
OFFSET = st.floats(-1e8, 1e8, allow_nan=False)


@st.composite
def response_cc(draw: st.DrawFn) -> str:
    n = draw(SECONDS)
    directives = st.sampled_from(
        [f"max-age={n}", f"s-maxage={n}", "max-age=x", "no-cache", 'no-cache="x-a"',
         "must-revalidate", "proxy-revalidate", "public", "private", "no-store", "immutable"]
    )  # fmt: skip
    return ", ".join(draw(st.lists(directives, max_size=4)))


@st.composite
def request_cc(draw: st.DrawFn) -> str:
    n = draw(SECONDS)
    directives = st.sampled_from(
        [f"max-age={n}", f"max-stale={n}", "max-stale", "max-stale=x", f"min-fresh={n}",
         "no-cache", "only-if-cached", "max-age=x", "min-fresh=x", "no-store"]
    )  # fmt: skip
    return ", ".join(draw(st.lists(directives, max_size=4)))


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    fields: dict[str, str] = {"Cache-Control": draw(response_cc())}
    if draw(st.booleans()):
        fields["ETag"] = '"a"'
    if draw(st.booleans()):
        fields["Last-Modified"] = http_date(T0 - draw(SECONDS) * 10)
    if draw(st.booleans()):
        fields["Expires"] = http_date(T0 + draw(st.integers(-400, 400)))
    if draw(st.booleans()):
        fields["Age"] = str(draw(SECONDS))
    response_time = T0 + draw(st.floats(-5, 5))
    return make_entry(
        fields,
        status=draw(st.sampled_from([200, 203, 204, 301, 302, 404, 500])),
        request_time=response_time - draw(st.floats(0, 5)),
        response_time=response_time,
        date=T0 + draw(st.integers(-30, 30)),
        soft_purged=draw(st.booleans()),
    )


POLICY_LIST = [
    CachePolicy(), CachePolicy(default_ttl=30), CachePolicy(max_ttl=20),
    CachePolicy(force_ttl=60), CachePolicy(heuristic_fraction=0.5, heuristic_max=100),
]  # fmt: skip
POLICIES = st.sampled_from(POLICY_LIST)
NOW = st.floats(T0 - 10, T0 + 1000, allow_nan=False)


@given(
    request_time=OFFSET,
    delay=st.floats(0, 1e6, allow_nan=False),
    date=st.one_of(st.none(), OFFSET),
    age=st.one_of(st.none(), st.integers(0, 2**40).map(str), st.text(max_size=12)),
    now=OFFSET,
)
def test_current_age_never_negative(
    request_time: float, delay: float, date: float | None, age: str | None, now: float
) -> None:
    """RFC 9111 section 4.2.3: age is never negative, whatever the clocks say."""
    entry = make_entry(
        {} if age is None else {"Age": age},
        request_time=T0 + request_time,
        response_time=T0 + request_time + delay,
        date=None if date is None else T0 + round(date),
    )
    a = current_age(entry, T0 + now)
    assert a >= 0 and math.isfinite(a)


@given(entry=entries(), req=request_cc(), policy=POLICIES, now=NOW)
def test_serve_respects_freshness_and_max_stale(
    entry: Entry, req: str, policy: CachePolicy, now: float
) -> None:
    """A Serve is fresh, or stale within the request's max-stale (5.2.1.2, 4.2.4)."""
    request = make_request("GET", {"Cache-Control": req})
    d = decide(request, [entry], policy, now)
    if not isinstance(d, Serve):
        return
    staleness = current_age(entry, now) - freshness_lifetime(entry, policy)
    fresh = is_fresh(entry, policy, now)
    assert d.stale is not fresh
    if fresh:
        return
    assert request.cc.has("max-stale")
    allowance = request.cc.seconds("max-stale")
    assert allowance != INVALID or request.cc.directives["max-stale"] is None
    if allowance is not None and allowance != INVALID:
        assert staleness <= allowance
    # Stale is never served when a directive forbids it (4.2.4) ...
    assert not stale_forbidden(entry.cache_control)
    assert not entry.cache_control.has("must-revalidate")
    # ... nor past the client's max-age (5.2.1.1), nor against its no-cache.
    max_age = request.cc.seconds("max-age")
    assert max_age is None or current_age(entry, now) <= max_age
    assert not request.cc.has("no-cache")


@given(entry=entries(), req=request_cc(), policy=POLICIES, now=NOW)
def test_must_revalidate_stale_is_never_served(
    entry: Entry, req: str, policy: CachePolicy, now: float
) -> None:
    """RFC 9111 section 5.2.2.2: once stale, not reused without validation."""
    cc = entry.fields["Cache-Control"]
    entry = entry.with_changes(
        fields=make_entry({**entry.fields, "Cache-Control": f"{cc}, must-revalidate"}).fields
    )
    request = make_request("GET", {"Cache-Control": f"{req}, max-stale"})
    d = decide(request, [entry], policy, now)
    if not is_fresh(entry, policy, now):
        assert not isinstance(d, Serve)


@given(entry=entries(), req=request_cc(), policy=POLICIES, now=NOW)
def test_decision_shapes(entry: Entry, req: str, policy: CachePolicy, now: float) -> None:
    """Revalidate needs a validator; a Serve carries a non-negative whole age."""
    d = decide(make_request("GET", {"Cache-Control": req}), [entry], policy, now)
    assert not isinstance(d, Pass)
    if isinstance(d, Revalidate):
        assert has_validator(entry) and d.conditional_headers
    if isinstance(d, Fetch):
        assert not has_validator(entry)
    if isinstance(d, Serve):
        assert d.age == int(current_age(entry, now)) >= 0
    if isinstance(d, OnlyIfCachedMiss):
        assert "only-if-cached" in req


FIELD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(['"a"', 'W/"a"', "*", "0", "-1", "max-age=5", "no-cache, max-stale",
                     http_date(T0), http_date(T0 - 100), "Accept, *", ",,,", '"', "\u0663"]),
)  # fmt: skip
RESPONSE_NAMES = ["Cache-Control", "CDN-Cache-Control", "Edgeproxy-Cache-Control", "Expires",
                  "Date", "Age", "Last-Modified", "ETag", "Vary"]  # fmt: skip
REQUEST_NAMES = ["Cache-Control", "Pragma", "If-None-Match", "If-Match", "If-Modified-Since",
                 "If-Unmodified-Since", "Accept", "Range"]  # fmt: skip


@settings(max_examples=1000)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "get", ""]),
    req=st.lists(st.tuples(st.sampled_from(REQUEST_NAMES), FIELD_TEXT), max_size=6),
    resp=st.lists(st.tuples(st.sampled_from(RESPONSE_NAMES), FIELD_TEXT), max_size=8),
    status=st.integers(100, 599),
    stored=st.booleans(),
    soft_purged=st.booleans(),
    policy=POLICIES,
    now=st.floats(T0 - 1e6, T0 + 1e6, allow_nan=False),
)
def test_decide_never_raises_on_arbitrary_fields(
    method: str,
    req: list[tuple[str, str]],
    resp: list[tuple[str, str]],
    status: int,
    stored: bool,
    soft_purged: bool,
    policy: CachePolicy,
    now: float,
) -> None:
    entry = make_entry(resp, status=status, request=req, date=None, soft_purged=soft_purged)
    d = decide(make_request(method, req), [entry] if stored else [], policy, now)
    assert isinstance(d, Pass | Fetch | Revalidate | Serve | OnlyIfCachedMiss)


@pytest.mark.parametrize("where", ["request", "response"])
def test_decide_survives_huge_delta_seconds(where: str) -> None:
    """Past Python's 4300-digit int() limit, delta-seconds saturate at 2**31 (1.3)."""
    huge = "max-age=" + "9" * 5000
    entry = make_entry({"Cache-Control": huge if where == "response" else "max-age=60"})
    request = make_request("GET", {"Cache-Control": huge} if where == "request" else {})
    d = decide(request, [entry], CachePolicy(), T0)
    assert isinstance(d, Serve)


@st.composite
def not_modified(draw: st.DrawFn, entry: Entry) -> tuple[dict[str, str], float, float]:
    """A 304 for `entry`: often its own fields again (a 304 that changes
    nothing), sometimes one changed, dropped or added; with or without a
    Date, received up to 400 s later."""
    fields = {k: v for k, v in entry.fields.items() if k.lower() != "date"}
    for name in draw(st.lists(st.sampled_from(["Cache-Control", "Expires", "Age"]), max_size=2)):
        change = draw(st.sampled_from(["drop", "new"]))
        if change == "drop":
            fields.pop(name, None)
        elif name == "Cache-Control":
            fields[name] = draw(response_cc())
        elif name == "Expires":
            fields[name] = http_date(T0 + draw(st.integers(-400, 400)))
        else:
            fields[name] = str(draw(SECONDS))
    sent = entry.request_time + draw(st.floats(-5, 400))
    received = sent + draw(st.floats(0, 5))
    if draw(st.booleans()):
        fields["Date"] = http_date(round(received) + draw(st.integers(-30, 30)))
    return fields, sent, received


@settings(max_examples=400)
@given(data=st.data(), entry=entries(), later=st.floats(0, 2000))
def test_a_timing_only_refresh_leaves_the_old_copy_no_fresher(
    data: st.DataObject, entry: Entry, later: float
) -> None:
    """changes_only_timing(stored, merged) promises store/tiered.py that a
    reader of `stored` (the disk's copy a refresh skipped) judges it no
    fresher than `merged` at any time after: remaining freshness no more
    (RFC 9111 4.2.1, 4.2.3), so staleness no less."""
    fields, sent, received = data.draw(not_modified(entry))
    merged = merge_304(entry, headers(fields), sent, received)
    if not changes_only_timing(entry, merged):
        return
    now = received + later
    for policy in POLICY_LIST:
        stored_left = freshness_lifetime(entry, policy) - current_age(entry, now)
        merged_left = freshness_lifetime(merged, policy) - current_age(merged, now)
        assert stored_left <= merged_left + 1e-6, policy
