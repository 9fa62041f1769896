"""Header fields of a response served from the cache."""

from __future__ import annotations

from multidict import CIMultiDict

from edgeproxy.policy.entry import Entry

# RFC 9110 section 15.4.5: what a 304 sends of the 200 it stands for.
_304_FIELDS = ("cache-control", "content-location", "date", "etag", "expires", "vary")


def reuse_fields(entry: Entry, age: int, validated: bool) -> CIMultiDict[str]:
    """The stored fields with Age set (RFC 9111 section 5.1).

    Fields named by a qualified no-cache are withheld unless this response
    was just validated (5.2.2.4).
    """
    out = CIMultiDict(entry.fields)
    if not validated:
        names = entry.cache_control.field_names("no-cache")
        if names:
            for name in names:
                out.popall(name, None)
    out["Age"] = str(max(0, age))
    return out


def not_modified_fields(entry: Entry, age: int) -> CIMultiDict[str]:
    """Fields for a 304 answered from the cache (RFC 9110 section 15.4.5)."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in entry.fields.items():
        if name.lower() in _304_FIELDS:
            out.add(name, value)
    if "etag" not in entry.fields and "last-modified" in entry.fields:
        # Guides the client's cache update when there is no ETag (15.4.5).
        out["Last-Modified"] = entry.fields["last-modified"]
    out["Age"] = str(max(0, age))
    return out
