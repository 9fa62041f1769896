"""Validation upstream (RFC 9111 section 4.3)."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.http.accept_encoding import IDENTITY
from edgeproxy.http.dates import format_http_date
from edgeproxy.http.etags import parse_etag
from edgeproxy.http.fields import HOP_BY_HOP, Headers, connection_named
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.freshness import lifetime_shrinks_with_date
from edgeproxy.policy.transform import TransformPlan, origin_etag, transformed_fields

# Client preconditions are evaluated by us after validation; the request we
# send upstream carries only the cache's own validators (4.3.1). Range is
# dropped so the origin validates the whole stored response.
CLIENT_CONDITIONALS = (
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "range",
)

# Never taken from a 304 into the stored fields (3.2).
_NOT_UPDATED = frozenset({"content-length", "content-range"}) | HOP_BY_HOP


def _edge_coded(entry: Entry) -> bool:
    """Did this edge apply a content coding to the stored response?"""
    return entry.coding not in ("", IDENTITY)


def has_validator(entry: Entry) -> bool:
    return "etag" in entry.fields or "last-modified" in entry.fields


def conditional_request_headers(entry: Entry) -> list[tuple[str, str]]:
    """If-None-Match from the ETag, If-Modified-Since from Last-Modified (4.3.1)."""
    out: list[tuple[str, str]] = []
    etag = entry.fields.get("etag")
    if etag is not None and _edge_coded(entry):
        # Our transformed tag means nothing upstream: ask with the origin's.
        original = origin_etag(etag, entry.coding)
        etag = None if original is None else str(original)
    if etag is not None:
        out.append(("If-None-Match", etag))
    last_modified = entry.fields.get("last-modified")
    if last_modified is not None:
        out.append(("If-Modified-Since", last_modified))
    return out


def validates(entry: Entry, response: Headers, candidates_count: int = 1) -> bool:
    """Does this 304 identify `entry` for update? (4.3.4, first match.)"""
    new = parse_etag(response.get("etag"))
    old = parse_etag(entry.fields.get("etag"))
    if new is not None and _edge_coded(entry):
        # The stored tag is our transform of the origin's (policy/transform.py),
        # whose strength was not kept: the opaque-tags decide.
        original = origin_etag(entry.fields.get("etag"), entry.coding)
        return original is not None and original.opaque == new.opaque
    if new is not None:
        if not new.weak:
            return old is not None and not old.weak and old.opaque == new.opaque
        return old is not None and old.opaque == new.opaque
    new_lm = response.get("last-modified")
    if new_lm is not None:
        return entry.fields.get("last-modified") == new_lm
    # No validator in the 304: only a lone stored response without validators,
    # or (as senders often omit them) the one we nominated ourselves.
    return candidates_count == 1


def merge_304(entry: Entry, response: Headers, request_time: float, response_time: float) -> Entry:
    """Freshen a stored response from a 304 (4.3.4 via 3.2).

    Every field the 304 carries replaces the stored ones of that name, except
    Content-Length, Content-Range and hop-by-hop fields. Age is dropped unless
    the 304 sends one: the new timing starts from this exchange. A 304 without
    Date gets one from its receipt time (RFC 9110 section 6.6.1). A response
    this edge compressed keeps its Content-Encoding, transformed ETag and
    Vary: Accept-Encoding (policy/transform.py): the 304 describes the
    origin's representation, and ours is derived from it.
    """
    skip = _NOT_UPDATED | connection_named(response) if "connection" in response else _NOT_UPDATED
    updates: CIMultiDict[str] = CIMultiDict()
    for name, value in response.items():
        if name.lower() not in skip:
            updates.add(name, value)
    merged: CIMultiDict[str] = CIMultiDict()
    for name, value in entry.fields.items():
        lname = name.lower()
        if lname in updates or lname == "age" or (lname == "date" and "date" not in updates):
            continue
        merged.add(name, value)
    merged.extend(updates)
    if "date" not in merged:
        merged["Date"] = format_http_date(response_time)
    if entry.coding:
        # The 304 speaks of the origin's representation: what we made of it
        # stays ours (Content-Encoding, the transformed ETag, Vary).
        coding = None if entry.coding == IDENTITY else entry.coding
        # A stored tag the 304 didn't replace is transformed already.
        kept = merged.popall("etag", []) if "etag" not in updates else []
        merged = transformed_fields(merged, TransformPlan(coding, vary=True))
        merged.extend(("ETag", tag) for tag in kept)
    return entry.with_changes(
        fields=CIMultiDictProxy(merged),
        request_time=request_time,
        response_time=response_time,
        soft_purged=False,
    )


# What a 304 that changed nothing may still change: merge_304 sets a new Date
# (the 304's own, or its receipt time) and the exchange's times.
_TIMING_ONLY = "date"


def _described(fields: Headers) -> list[tuple[str, str]]:
    """The fields but Date, by name, each name's values in order: a merge
    moves the fields a 304 carried to the end (order across names means
    nothing; within one name it does, RFC 9110 section 5.3)."""
    lines = [(k.lower(), v) for k, v in fields.items()]
    return sorted(((k, v) for k, v in lines if k != _TIMING_ONLY), key=lambda kv: kv[0])


def _same_but_date(a: Headers, b: Headers) -> bool:
    if len(a) != len(b):
        return False
    # Line by line first: once a merge has moved the 304's fields to the
    # end, the next merges keep that order.
    for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
        if va != vb or ka != kb:
            if ka.lower() == _TIMING_ONLY and kb.lower() == _TIMING_ONLY:
                continue
            return _described(a) == _described(b)
    return True


def changes_only_timing(stored: Entry, merged: Entry) -> bool:
    """Did freshening `stored` with a 304 (merge_304) change nothing but when
    it was validated: the same response, fields and all, with a Date and
    request/response times no earlier than its own?

    Then `stored` is never fresher than `merged`, at any time after: its
    current age is no less (4.2.3: every term is measured from earlier
    times), its freshness lifetime no longer (4.2.1: the fields that set it
    are the same, and the one lifetime Date shortens, Expires - Date, is
    ruled out), so its staleness (stale-while-revalidate, stale-if-error)
    no less either. store/tiered.py lets the disk's copy trail the hot
    tier's by a bounded time on that ground.
    """
    return (
        stored.key == merged.key
        and stored.variant == merged.variant
        and stored.status == merged.status
        and stored.soft_purged == merged.soft_purged
        and stored.vary == merged.vary
        and stored.secondary == merged.secondary
        and stored.tags == merged.tags
        and stored.route == merged.route
        and stored.body_size == merged.body_size
        and stored.targeted == merged.targeted
        and stored.coding == merged.coding
        and merged.request_time >= stored.request_time
        and merged.response_time >= stored.response_time
        and merged.date >= stored.date
        and _same_but_date(stored.fields, merged.fields)
        and not lifetime_shrinks_with_date(merged)
    )
