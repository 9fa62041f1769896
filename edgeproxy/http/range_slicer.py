"""Cut a 206's parts out of a whole body as it arrives (RFC 9110 section 15.3.7).

Pure. On a Range miss the edge fetches the whole representation and serves
the client's ranges from its bytes as they pass (proxy.py). The parts from
`ranges.resolve` are ascending and disjoint, so one pass over the body,
in order, yields the 206 body: a single part as soon as its bytes arrive, and
multipart/byteranges part by part (each part's header block, its bytes, and
the close-delimiter after the last) without assembling anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from edgeproxy.http.ranges import Part


class RangeSlicer:
    """Feed the body in order; each `feed` returns the 206 body bytes it completes."""

    def __init__(self, parts: Sequence[Part], trailer: bytes = b"") -> None:
        if any(b.start <= a.end for a, b in itertools.pairwise(parts)):
            raise ValueError("parts must be ascending and disjoint")
        self._parts = list(parts)
        self._trailer = trailer
        self._i = 0  # the part being cut
        self._started = False  # its header block is out
        self._pos = 0  # offset of the next body byte fed
        self.done = not self._parts  # the whole 206 body has been returned

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        start, stop = self._pos, self._pos + len(chunk)
        self._pos = stop
        while self._i < len(self._parts):
            part = self._parts[self._i]
            if part.start >= stop:
                break  # its bytes are still to come
            if not self._started:
                out.append(part.header)
                self._started = True
            lo, hi = max(part.start, start), min(part.end + 1, stop)
            if lo < hi:
                out.append(chunk[lo - start : hi - start])
            if part.end + 1 > stop:
                break  # the part goes on in the next chunk
            self._i += 1
            self._started = False
        if self._i == len(self._parts) and not self.done:
            out.append(self._trailer)
            self.done = True
        return b"".join(out)
