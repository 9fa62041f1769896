"""Edge compression: may a response's content be transformed, and its new fields.

Pure decisions; compress.py does the bytes. RFC 9110 section 7.7 lets a proxy
transform content unless `no-transform` says otherwise (RFC 9111 sections
5.2.2.6 and, for the request, 5.2.1.6: that one is honoured by the request's
coding being "identity", http/accept_encoding.py).

The rules, in order (`compression_plan`):

1. Content already carrying a content coding is left alone, and gets
   `Vary: Accept-Encoding`: we asked the origin with the client's normalised
   coding, so its choice depends on that field even when it forgot to say so
   (a gzip body must never reach an identity client from the cache).
2. Compression off, a status other than 200/203, a partial response
   (Content-Range, RFC 9110 section 15.3.7), `no-transform` in Cache-Control
   or in a targeted field (RFC 9213), a type not in the configured list, or a
   known Content-Length below `min_size`: as is, no Vary added.
3. Otherwise the response is negotiable: `Vary: Accept-Encoding` is added
   (merged with the origin's Vary; RFC 9110 section 12.5.5), and the body is
   compressed when the request's coding is br or gzip and that coding can be
   produced here (br needs the brotli package).

A transformed response (`transformed_fields`):

- Content-Encoding is the coding; Content-Length goes (the shell frames it),
  and so do digests of the old content (Content-Digest, Repr-Digest, Digest,
  Content-MD5).
- The entity tag is changed: RFC 9110 section 8.8.3 needs different tags for
  representations that differ in content coding. It is suffixed with the
  coding *and* made weak: `"abc"` -> `W/"abc-gzip"`. The suffix keeps the
  coded variants' tags apart even under weak comparison; weak because the
  compressed bytes depend on the compressor's version and level, so byte
  identity (what a strong tag promises, 8.8.1) can't be kept across edges or
  config changes. So If-Range (strong comparison) never matches a transformed
  tag and the whole representation is sent, which is always safe.
- A client's If-None-Match with such a tag matches the stored variant at the
  edge (weak comparison, 13.1.2). Sent upstream it is turned back into the
  origin's tag, weak (`W/"abc"`), which an origin matches by weak comparison
  whatever the strength of its own tag (`upstream_if_none_match`); a 304 it
  answers gets its ETag transformed again for the client.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from multidict import CIMultiDict

from edgeproxy.frozen import set_fields
from edgeproxy.http.accept_encoding import IDENTITY
from edgeproxy.http.cache_control import response_cache_control
from edgeproxy.http.etags import ETag, parse_etag, parse_etag_list
from edgeproxy.http.fields import Headers, list_values

_NATIVE = __file__.endswith(".so")  # compiled (edgeproxy/frozen.py)

# Types worth compressing: text and the structured text formats.
DEFAULT_TYPES: tuple[str, ...] = (
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "image/svg+xml",
    "application/*+json",
    "application/*+xml",
)
# Statuses whose content is a whole representation worth compressing.
STATUSES = frozenset({200, 203})
# Fields describing the old content's bytes: wrong once it is re-encoded.
_CONTENT_FIELDS = ("content-length", "content-digest", "repr-digest", "digest", "content-md5")


@dataclass(frozen=True, slots=True)
class Compression:
    """The `cache.compress` block. Off unless configured: transforming content
    is the operator's choice (RFC 9110 section 7.7); config/edge.yaml turns it on."""

    enabled: bool = False
    types: tuple[str, ...] = DEFAULT_TYPES  # media ranges: "text/*", "application/*+json"
    min_size: int = 256  # bytes; a known smaller Content-Length is not worth it
    gzip_level: int = 6  # zlib 1..9
    br_level: int = 4  # brotli quality 0..11; 4 compresses better than gzip -6, as fast


@dataclass(frozen=True, slots=True)
class TransformPlan:
    """What to do to one response: apply `coding` (None: as is), add Vary?"""

    coding: str | None
    vary: bool
    reason: str = ""  # why not compressed, for tests and logs

    def __init__(self, coding: str | None, vary: bool, reason: str = "") -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(self, ("coding", "vary", "reason"), (coding, vary, reason))
            return
        self.coding = coding  # type: ignore[misc]
        self.vary = vary  # type: ignore[misc]
        self.reason = reason  # type: ignore[misc]

    @property
    def marker(self) -> str:
        """What the stored Entry records (Entry.coding): the coding applied,
        "identity" when only Vary was added, "" when nothing was changed."""
        if self.coding is not None:
            return self.coding
        return IDENTITY if self.vary else ""


AS_IS = TransformPlan(None, False, "off")


def content_coded(response: Headers) -> bool:
    """Does the content carry a content coding (RFC 9110 section 8.4)?"""
    return any(c.lower() != IDENTITY for c in list_values(response, "content-encoding"))


def media_type(response: Headers) -> str | None:
    value = response.get("content-type")
    if value is None:
        return None
    return value.partition(";")[0].strip(" \t").lower() or None


def type_matches(mtype: str, patterns: Collection[str]) -> bool:
    """`type/subtype` against "type/subtype", "type/*" and "type/*+suffix"."""
    top, _, sub = mtype.partition("/")
    for pattern in patterns:
        p = pattern.lower()
        ptop, _, psub = p.partition("/")
        if ptop != top:
            continue
        if psub == sub or psub == "*":
            return True
        if psub.startswith("*+") and sub.endswith(psub[1:]) and len(sub) > len(psub) - 1:
            return True
    return False


def no_transform(response: Headers, targeted: tuple[str, ...] = ()) -> bool:
    """RFC 9111 section 5.2.2.6, in Cache-Control or a targeted field (RFC 9213)."""
    return response_cache_control(response).has("no-transform") or bool(
        targeted and response_cache_control(response, targeted).has("no-transform")
    )


def compression_plan(
    status: int,
    response: Headers,
    coding: str,
    settings: Compression,
    available: Collection[str],
    targeted: tuple[str, ...] = (),
) -> TransformPlan:
    """Should this response be compressed for a request whose normalised
    coding is `coding`? See the module docstring for the rules."""
    if content_coded(response):
        return TransformPlan(None, True, "encoded")
    if not settings.enabled:
        return TransformPlan(None, False, "disabled")
    if status not in STATUSES:
        return TransformPlan(None, False, "status")
    if "content-range" in response:
        return TransformPlan(None, False, "partial")
    if no_transform(response, targeted):
        return TransformPlan(None, False, "no-transform")
    mtype = media_type(response)
    if mtype is None or not type_matches(mtype, settings.types):
        return TransformPlan(None, False, "type")
    length = response.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) < settings.min_size:
        return TransformPlan(None, False, "small")
    if coding == IDENTITY:
        return TransformPlan(None, True, "identity")
    if coding not in available:
        return TransformPlan(None, True, "unavailable")
    return TransformPlan(coding, True)


def with_vary_accept_encoding(fields: CIMultiDict[str]) -> None:
    """Add Accept-Encoding to Vary, merged with what is there (RFC 9110 12.5.5)."""
    names = {v.lower() for v in list_values(fields, "vary")}
    if "*" in names or "accept-encoding" in names:
        return
    lines = [line for line in fields.popall("vary", []) if line.strip(" \t")]
    fields["Vary"] = ", ".join([*lines, "Accept-Encoding"])


def transformed_etag(value: str, coding: str) -> str | None:
    """`"abc"` or `W/"abc"` -> `W/"abc-gzip"`; None for a malformed tag (dropped)."""
    tag = parse_etag(value)
    if tag is None:
        return None
    return str(ETag(f'{tag.opaque[:-1]}-{coding}"', weak=True))


def origin_etag(value: str | None, coding: str) -> ETag | None:
    """The origin's tag behind a transformed one, weak (its strength is not kept)."""
    tag = parse_etag(value)
    suffix = f'-{coding}"'
    if tag is None or not tag.weak or not tag.opaque.endswith(suffix):
        return None
    return ETag(tag.opaque[: -len(suffix)] + '"', weak=True)


def transformed_fields(response: Headers, plan: TransformPlan) -> CIMultiDict[str]:
    """The response's fields after `plan` (a copy; the input is not changed)."""
    out = CIMultiDict(response)
    if plan.vary:
        with_vary_accept_encoding(out)
    if plan.coding is None:
        return out
    for name in _CONTENT_FIELDS:
        out.popall(name, None)
    out.popall("content-encoding", None)
    out["Content-Encoding"] = plan.coding
    etag = out.popall("etag", None)
    if etag:
        new = transformed_etag(etag[0], plan.coding)
        if new is not None:
            out["ETag"] = new
    return out


def upstream_if_none_match(value: str | None) -> tuple[str | None, str | None]:
    """A client's If-None-Match as sent upstream: transformed tags turned back
    into the origin's; and the coding found (to transform a 304's ETag back).

    Only weak tags ending in "-br" or "-gzip" are ours; others pass as sent.
    """
    if value is None:
        return None, None
    tags = parse_etag_list(value)
    if tags is None or tags.any:
        return value, None
    found: str | None = None
    out: list[str] = []
    for tag in tags.tags:
        for coding in ("br", "gzip"):
            original = origin_etag(str(tag), coding)
            if original is not None:
                found = found or coding
                out.append(str(original))
                break
        else:
            out.append(str(tag))
    if found is None:
        return value, None
    return ", ".join(out), found
