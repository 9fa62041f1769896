"""Cutting a 206's parts from a body fed in order (RFC 9110 sections 14.6, 15.3.7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.http.range_slicer import RangeSlicer
from edgeproxy.http.ranges import (
    Part,
    coalesce,
    multipart_length,
    multipart_parts,
    multipart_trailer,
)

BODY = bytes(range(256)) * 4  # 1024 bytes


def feed_all(slicer: RangeSlicer, body: bytes, sizes: list[int]) -> list[bytes]:
    """Feed `body` in chunks of `sizes` (cycled); what each feed returned."""
    out, pos, i = [], 0, 0
    while pos < len(body):
        n = sizes[i % len(sizes)]
        out.append(slicer.feed(body[pos : pos + n]))
        pos += n
        i += 1
    return out


@pytest.mark.parametrize(
    ("start", "end", "sizes"),
    [
        (0, 9, [100]),  # 14.1.2 first bytes, inside the first chunk
        (0, 1023, [1024]),  # all of it in one chunk
        (1000, 1023, [7]),  # the tail, across many small chunks
        (99, 100, [100]),  # straddles two chunks
        (512, 512, [1]),  # one byte, byte-sized chunks
    ],
)
def test_single_part(start: int, end: int, sizes: list[int]) -> None:
    slicer = RangeSlicer([Part(b"", start, end)])
    assert b"".join(feed_all(slicer, BODY, sizes)) == BODY[start : end + 1]
    assert slicer.done


def test_single_part_is_done_as_soon_as_its_bytes_pass() -> None:
    # Served as soon as those bytes arrive: nothing waits for the rest.
    slicer = RangeSlicer([Part(b"", 0, 9)])
    assert slicer.feed(BODY[:5]) == BODY[:5]
    assert not slicer.done
    assert slicer.feed(BODY[5:100]) == BODY[5:10]
    assert slicer.done
    assert slicer.feed(BODY[100:]) == b""


def test_multipart_byteranges_streamed() -> None:
    # 15.3.7.2: each part has its header block; the close-delimiter ends it.
    spans = [(0, 9), (500, 599), (1000, 1023)]
    parts = multipart_parts(spans, len(BODY), "text/plain", "b0und")
    slicer = RangeSlicer(parts, multipart_trailer("b0und"))
    got = b"".join(feed_all(slicer, BODY, [64]))
    expected = b"".join(p.header + BODY[p.start : p.end + 1] for p in parts) + multipart_trailer(
        "b0und"
    )
    assert got == expected
    assert len(got) == multipart_length(spans, len(BODY), "text/plain", "b0und")
    assert slicer.done


def test_no_parts_is_done_at_once() -> None:
    # A 416 sent whole: the slicer passes nothing on.
    slicer = RangeSlicer([])
    assert slicer.done
    assert slicer.feed(BODY) == b""


def test_parts_must_be_ascending_and_disjoint() -> None:
    with pytest.raises(ValueError):
        RangeSlicer([Part(b"", 10, 20), Part(b"", 15, 30)])
    with pytest.raises(ValueError):
        RangeSlicer([Part(b"", 10, 20), Part(b"", 0, 5)])


@given(
    st.binary(min_size=1, max_size=3000),
    st.lists(st.tuples(st.integers(0, 2999), st.integers(0, 2999)), min_size=1, max_size=6),
    st.lists(st.integers(1, 700), min_size=1, max_size=5),
)
def test_any_chunking_gives_the_assembled_body(
    body: bytes, raw: list[tuple[int, int]], sizes: list[int]
) -> None:
    n = len(body)
    spans = coalesce([(min(a % n, b % n), max(a % n, b % n)) for a, b in raw])
    parts = multipart_parts(spans, n, None, "x")
    slicer = RangeSlicer(parts, multipart_trailer("x"))
    got = b"".join(feed_all(slicer, body, sizes))
    assert got == b"".join(p.header + body[p.start : p.end + 1] for p in parts) + b"\r\n--x--\r\n"
    assert slicer.done
