"""Header builders and hypothesis strategies shared by the http/ grammar tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]]


def hdrs(h: HeaderInput = ()) -> CIMultiDictProxy[str]:
    """A read-only header multidict, as aiohttp hands them over; pairs repeat a field."""
    items = h.items() if isinstance(h, Mapping) else h
    return CIMultiDictProxy(CIMultiDict(items))


# Any text at all: control characters, surrogates, non-ASCII, empty.
any_text = st.text()

# Text biased towards the grammar's own punctuation, so that shrinking finds
# quoting and escaping corner cases rather than only random code points.
grammar_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(' \t,;="\\/*:-()[]W0123456789aAbBzZ.\x00\x7f\x80\xff')),
        st.characters(),
    ),
)

# Names the parsers under test read, in mixed case, plus anything else.
FIELD_NAMES = (
    "Cache-Control",
    "CDN-Cache-Control",
    "Edgeproxy-Cache-Control",
    "Pragma",
    "ETag",
    "Last-Modified",
    "Date",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "Vary",
    "Accept-Encoding",
    "Connection",
    "Keep-Alive",
    "Host",
    "Via",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "Content-Length",
)
field_name = st.one_of(
    st.sampled_from(FIELD_NAMES),
    st.sampled_from(FIELD_NAMES).map(str.upper),
    st.text(min_size=1, max_size=12),
)
field_value = st.one_of(any_text, grammar_text)
# Arbitrary header lines, repeats allowed: what a peer can put on the wire
# (and more: aiohttp would refuse some of these, the grammar must not care).
header_lines = st.lists(st.tuples(field_name, field_value), max_size=12)
headers_st = header_lines.map(hdrs)

# Header input as a table cell: a mapping, or pairs when a field repeats.
Lines = dict[str, str] | list[tuple[str, str]]
