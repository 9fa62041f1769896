"""Range requests (RFC 9110 section 14), If-Range (13.1.5), 206 and 416 (15.3.7, 15.5.17).

Pure: the shell reads the stored body; this module only says which bytes, and
builds the framing around them.

How the shell serves a GET from a stored complete 200 response of `length`
bytes, once `conditionals.evaluate` returned PASS (Range is evaluated only
when the answer would otherwise be 200, section 14.2):

    outcome = evaluate_range(method, request.headers, entry.fields, length)
    if outcome is IGNORE:          # 200 with the whole representation
        ...                        # (send Accept-Ranges: bytes, section 14.3)
    elif outcome is UNSATISFIABLE: # 416, Content-Range: unsatisfied_content_range(length)
        ...
    elif len(outcome) == 1:        # 206, one part (15.3.7.1)
        (start, end), = outcome    # inclusive offsets
        # Content-Range: content_range(start, end, length)
        # Content-Length: end - start + 1; sendfile(offset=start, count=end - start + 1)
    else:                          # 206, multipart/byteranges (15.3.7.2, 14.6)
        boundary = secrets.token_hex(16)   # fresh per response, see below
        # Content-Type: multipart_content_type(boundary); NO Content-Range here
        # Content-Length: multipart_length(outcome, length, content_type, boundary)
        for part in multipart_parts(outcome, length, content_type, boundary):
            write(part.header); sendfile(offset=part.start, count=part.end - part.start + 1)
        write(multipart_trailer(boundary))

`content_type` is the stored response's Content-Type (None when it has none).
A 206 keeps Date, Cache-Control, ETag, Expires, Content-Location and Vary
(15.3.7); its Content-Length is that of the message, not the representation.

Policy choices (each a MAY or SHOULD the RFC leaves to the server):

- Only `bytes` is understood. An unknown unit and an invalid ranges-specifier
  are both ignored (200), never 416 (14.2: a server MAY ignore Range; an
  origin MUST ignore units it does not understand). `parse_range` still tells
  them apart, so a shell may choose to forward an unknown unit upstream.
- Leniency (5.6.1 list rules for recipients): OWS around "=" and around
  commas, and empty list members, are accepted; the unit is
  case-insensitive (14.1). The RFC's own example "bytes= 0-999, ..." has a
  space after "=". Nothing else is: no spaces inside a range-spec.
- Abuse (14.2, 15.3.7.2): satisfiable ranges are clipped, sorted and those
  that overlap or touch are coalesced, so overlapping ranges can never
  amplify the response (bytes=0-,0-,0-...). If more than `max_parts`
  (MAX_PARTS) parts remain, Range is ignored and the whole representation
  is sent. Parts therefore always go out in ascending order; this departs
  from 15.3.7.2's SHOULD (request order) for the rare client that lists
  disjoint ranges in descending order, which that section allows clients to
  survive: they MUST read each part's Content-Range.
- One remaining part is always a single-part 206, even when several ranges
  were requested (15.3.7.2 makes a one-part multipart a MAY, single-part is
  what every client understands).
- A zero-length representation: only a suffix-range with a non-zero length
  is satisfiable (14.1.2), but no Content-Range can describe an empty range,
  so such a request is ignored (14.2: MAY ignore Range when there is no
  content); anything else is UNSATISFIABLE, "bytes */0".
- Positions are exact up to CLAMP (10**20, more than any disk holds); longer
  numerals are clamped to CLAMP, which resolves the same way against any real
  length, and int() never sees an unbounded digit string (14.1.2 asks
  recipients to anticipate large numerals).
- If-Range with a date compares instants (both parsed), not strings; it holds
  only if the stored Date is at least one second after Last-Modified
  (8.8.2.2). Without a stored Date the date is not strong, so the condition
  is false and the whole representation is sent: the safe side.
- The multipart boundary is the caller's: this module has no randomness.
  It must be fresh per response (e.g. `secrets.token_hex(16)`) so it cannot
  occur in the content (RFC 2046 section 5.1.1), and is restricted to
  characters that need no quoting (14.6 notes quoted boundaries are handled
  badly by some implementations).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from edgeproxy.http.dates import parse_http_date
from edgeproxy.http.etags import parse_etag, strong_match
from edgeproxy.http.fields import Headers, combined, is_token

# Accept-Ranges value for responses we can serve ranges of (14.3).
ACCEPT_RANGES = "bytes"
# At most this many parts after coalescing; more and Range is ignored (14.2).
MAX_PARTS = 16
# Positions past this are clamped to it (see the module docstring).
CLAMP = 10**20
_CLAMP_DIGITS = len(str(CLAMP)) - 1  # numerals of up to 20 digits are exact

# An inclusive (first, last) byte offset pair, first <= last.
ByteRange = tuple[int, int]


@dataclass(frozen=True, slots=True)
class IntRange:
    """int-range = first-pos "-" [ last-pos ] (14.1.1); last_pos None when open."""

    first_pos: int
    last_pos: int | None = None

    def __str__(self) -> str:
        return f"{self.first_pos}-" + ("" if self.last_pos is None else str(self.last_pos))


@dataclass(frozen=True, slots=True)
class SuffixRange:
    """suffix-range = "-" suffix-length (14.1.1): the last `suffix_length` bytes."""

    suffix_length: int

    def __str__(self) -> str:
        return f"-{self.suffix_length}"


RangeSpec = IntRange | SuffixRange


@dataclass(frozen=True, slots=True)
class RangesSpecifier:
    """A valid `bytes` ranges-specifier (14.1.1), range-specs in received order."""

    ranges: tuple[RangeSpec, ...]

    def __str__(self) -> str:
        return "bytes=" + ",".join(str(r) for r in self.ranges)


class Unusable(enum.Enum):
    """A Range field value that is present but cannot be used (14.2: ignore it)."""

    INVALID = "invalid"  # not a valid ranges-specifier (14.1.1)
    UNKNOWN_UNIT = "unknown unit"  # a range unit other than bytes (14.1)


INVALID = Unusable.INVALID
UNKNOWN_UNIT = Unusable.UNKNOWN_UNIT


class NotPartial(enum.Enum):
    """Why the answer is not a 206; the value is the status to send."""

    IGNORE = "200"  # Range is ignored: send the whole representation (14.2)
    UNSATISFIABLE = "416"  # no range-spec is satisfiable (14.1.2, 15.5.17)


IGNORE = NotPartial.IGNORE
UNSATISFIABLE = NotPartial.UNSATISFIABLE

_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)", re.ASCII)
_SUFFIX_RANGE = re.compile(r"-([0-9]+)", re.ASCII)


def _digits(numeral: str) -> str:
    return numeral.lstrip("0") or "0"


def _position(numeral: str) -> int:
    """1*DIGIT as an int, clamped to CLAMP; int() never sees a huge string."""
    d = _digits(numeral)
    return CLAMP if len(d) > _CLAMP_DIGITS else int(d)


def _less(a: str, b: str) -> bool:
    """Numeric a < b on digit strings of any length, without int()."""
    da, db = _digits(a), _digits(b)
    return (len(da), da) < (len(db), db)


def _range_spec(text: str) -> RangeSpec | None:
    m = _SUFFIX_RANGE.fullmatch(text)
    if m is not None:
        return SuffixRange(_position(m[1]))
    m = _INT_RANGE.fullmatch(text)
    if m is None:
        return None
    first, last = m[1], m[2]
    if not last:
        return IntRange(_position(first))
    # 14.1.1: an int-range is invalid if last-pos is less than first-pos.
    if _less(last, first):
        return None
    return IntRange(_position(first), _position(last))


def parse_range(value: str | None) -> RangesSpecifier | Unusable | None:
    """Parse a (combined) Range field value (14.2). Never raises.

    None when absent; UNKNOWN_UNIT for any unit but bytes; INVALID when the
    value is not a ranges-specifier or any of its range-specs is invalid
    (14.1.1 makes the whole specifier invalid then).
    """
    if value is None:
        return None
    unit, eq, rest = value.strip(" \t").partition("=")
    unit = unit.rstrip(" \t")
    if not eq or not is_token(unit):
        return INVALID
    if unit.lower() != "bytes":
        return UNKNOWN_UNIT
    ranges: list[RangeSpec] = []
    # range-set = 1#range-spec; recipients skip empty members (5.6.1). No
    # quoted strings in this grammar, so a plain split on "," is exact.
    for member in rest.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        spec = _range_spec(member)
        if spec is None:
            return INVALID
        ranges.append(spec)
    return RangesSpecifier(tuple(ranges)) if ranges else INVALID


def resolve(
    spec: RangesSpecifier, length: int, *, max_parts: int = MAX_PARTS
) -> list[ByteRange] | NotPartial:
    """The byte ranges to send from a representation of `length` bytes (14.1.2).

    Returns inclusive (first, last) pairs within [0, length), ascending,
    neither overlapping nor adjacent; or UNSATISFIABLE when no range-spec is
    satisfiable; or IGNORE when serving the ranges is refused (more than
    `max_parts` after coalescing, or a zero-length representation with a
    satisfiable suffix-range). See the module docstring for the policy.
    """
    if length < 0:
        raise ValueError(f"negative representation length {length}")
    if max_parts < 1:
        raise ValueError(f"max_parts must be at least 1, not {max_parts}")
    spans: list[ByteRange] = []
    satisfiable_but_empty = False
    for r in spec.ranges:
        if isinstance(r, SuffixRange):
            # Satisfiable iff the suffix-length is non-zero; longer than the
            # representation means all of it (14.1.2).
            if r.suffix_length == 0:
                continue
            if length == 0:
                satisfiable_but_empty = True
                continue
            spans.append((max(0, length - r.suffix_length), length - 1))
        else:
            # Satisfiable iff first-pos < length; last-pos absent or past the
            # end means "to the end" (14.1.2).
            if r.first_pos >= length:
                continue
            last = length - 1 if r.last_pos is None else min(r.last_pos, length - 1)
            spans.append((r.first_pos, last))
    if not spans:
        return IGNORE if satisfiable_but_empty else UNSATISFIABLE
    merged = coalesce(spans)
    return IGNORE if len(merged) > max_parts else merged


def coalesce(spans: Sequence[ByteRange]) -> list[ByteRange]:
    """Sort, and merge ranges that overlap or touch (15.3.7.2 MAY coalesce)."""
    out: list[ByteRange] = []
    for first, last in sorted(spans):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def if_range_allows(
    if_range: str | None,
    stored_etag: str | None,
    stored_last_modified: str | None,
    stored_date: str | None,
) -> bool:
    """Whether Range may be honoured given If-Range (13.1.5); True when absent.

    An entity-tag must match the stored ETag by strong comparison (8.8.3.2),
    so a weak tag on either side never matches. An HTTP-date must equal the
    stored Last-Modified, and that must be a strong validator: the stored
    Date at least one second later (8.8.2.2). Anything else, including an
    invalid value or a list, is false: the whole representation is sent.
    """
    if if_range is None:
        return True
    v = if_range.strip(" \t")
    # "A valid entity-tag can be distinguished from a valid HTTP-date by
    # examining the first three characters for a DQUOTE" (13.1.5).
    if '"' in v[:3]:
        tag, stored = parse_etag(v), parse_etag(stored_etag)
        return tag is not None and stored is not None and strong_match(tag, stored)
    when = parse_http_date(v)
    last_modified = parse_http_date(stored_last_modified)
    date = parse_http_date(stored_date)
    if when is None or last_modified is None or date is None:
        return False
    return date >= last_modified + 1 and when == last_modified


def evaluate_range(
    method: str,
    request: Headers,
    stored: Headers,
    length: int,
    *,
    max_parts: int = MAX_PARTS,
) -> list[ByteRange] | NotPartial:
    """Range + If-Range of a request against a stored complete response (14.2, 13.1.5).

    Call only when the answer would otherwise be 200 (after preconditions,
    14.2). Range is ignored for any method but GET (14.2), when absent,
    invalid or of an unknown unit, and when If-Range is false (13.1.5).
    Repeated field lines are combined first (5.3), so two Range lines make
    an invalid value and are ignored.
    """
    if method != "GET":
        return IGNORE
    spec = parse_range(combined(request, "range"))
    if not isinstance(spec, RangesSpecifier):
        return IGNORE
    if not if_range_allows(
        combined(request, "if-range"),
        combined(stored, "etag"),
        combined(stored, "last-modified"),
        combined(stored, "date"),
    ):
        return IGNORE
    return resolve(spec, length, max_parts=max_parts)


def content_range(first: int, last: int, length: int) -> str:
    """Content-Range for a 206 part: "bytes first-last/length" (14.4)."""
    # 14.4: invalid when last < first or complete-length <= last.
    if not 0 <= first <= last < length:
        raise ValueError(f"invalid byte range {first}-{last}/{length}")
    return f"bytes {first}-{last}/{length}"


def unsatisfied_content_range(length: int) -> str:
    """Content-Range for a 416: "bytes */length" (14.4, 15.5.17)."""
    if length < 0:
        raise ValueError(f"negative representation length {length}")
    return f"bytes */{length}"


# bchars (RFC 2046 section 5.1.1) that are also tchar: no quoting needed.
_BOUNDARY = re.compile(r"[0-9A-Za-z'+\-._]{1,70}", re.ASCII)


def _check_boundary(boundary: str) -> None:
    if _BOUNDARY.fullmatch(boundary) is None:
        raise ValueError(f"unusable multipart boundary {boundary!r}")


def multipart_content_type(boundary: str) -> str:
    """Content-Type of a multipart 206 (14.6, 15.3.7.2)."""
    _check_boundary(boundary)
    return f"multipart/byteranges; boundary={boundary}"


class Part(NamedTuple):
    """One body part: its delimiter and header block, then bytes first..last."""

    header: bytes
    start: int
    end: int  # inclusive


def _field_value(value: str) -> bytes:
    # CR, LF and NUL are not allowed in a field value; RFC 9110 section 5.5
    # lets a recipient replace them with SP. Non-ASCII goes out as the bytes
    # it came in as (aiohttp decodes fields as UTF-8 with surrogateescape).
    v = value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
    try:
        return v.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return v.encode("utf-8", "replace")


def multipart_parts(
    ranges: Sequence[ByteRange], length: int, content_type: str | None, boundary: str
) -> list[Part]:
    """The body parts of a multipart/byteranges 206 (14.6, RFC 2046 section 5.1.1).

    Each part's header is the delimiter ("--boundary", after a CRLF for every
    part but the first), Content-Type when the representation has one
    (15.3.7.2 SHOULD), Content-Range (MUST), and the empty line. The body
    that follows is bytes start..end of the representation; after the last
    one comes `multipart_trailer`.
    """
    _check_boundary(boundary)
    if not ranges:
        raise ValueError("a multipart/byteranges body needs at least one part")
    ctype = (
        b"" if content_type is None else b"Content-Type: " + _field_value(content_type) + b"\r\n"
    )
    parts: list[Part] = []
    for i, (first, last) in enumerate(ranges):
        header = (
            (b"\r\n" if i else b"")
            + b"--"
            + boundary.encode("ascii")
            + b"\r\n"
            + ctype
            + b"Content-Range: "
            + content_range(first, last, length).encode("ascii")
            + b"\r\n\r\n"
        )
        parts.append(Part(header, first, last))
    return parts


def multipart_trailer(boundary: str) -> bytes:
    """The close-delimiter after the last part's body (RFC 2046 section 5.1.1)."""
    _check_boundary(boundary)
    return b"\r\n--" + boundary.encode("ascii") + b"--\r\n"


def multipart_length(
    ranges: Sequence[ByteRange], length: int, content_type: str | None, boundary: str
) -> int:
    """The exact Content-Length of the multipart body, to send before streaming it."""
    parts = multipart_parts(ranges, length, content_type, boundary)
    body = sum(len(p.header) + p.end - p.start + 1 for p in parts)
    return body + len(multipart_trailer(boundary))
