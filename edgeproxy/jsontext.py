"""JSON text for what the stores keep: orjson's speed, json's reach.

The stores write an entry's metadata as JSON on every commit and every
refresh after a 304, and read it on every lookup from disk: with json that
was ~11 us a write (8.5 for the metadata, 2.9 for the Vary id) and ~5 us a
read, on the store's threads, which share the proxy's core. orjson does the
same in ~0.9 and ~1.8.

orjson refuses a few things json takes: lone surrogates (field values are
decoded with surrogateescape, so an undecodable byte from an origin is one),
integers past 64 bits on writing, and NaN or Infinity on reading. Those go
through json, so every value reads back as json would read it back. One it
does not refuse but reads otherwise: an integer past 64 bits comes back a
float (orjson 3.13: -9223372036854775809 as -9.223372036854776e+18), so
text with a run of 19 digits anywhere is read by json (hypothesis found it).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """Compact JSON text (json.dumps with separators=(",", ":") reads the
    same back, though the text may differ: raw UTF-8 rather than \\u escapes,
    floats in the shortest form)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # a lone surrogate, an int past 64 bits
        return json.dumps(value, separators=(",", ":"))


def dumps_exact(strings: list[list[str | None]]) -> str:
    """Exactly the text json.dumps(strings, separators=(",", ":")) gives:
    for values compared as text (the stores' Vary ids, written by older
    versions too). orjson writes printable ASCII as json does; anything else
    goes through json itself."""
    for part in strings:
        for s in part:
            if s is not None and not (s.isascii() and s.isprintable()):
                return json.dumps(strings, separators=(",", ":"))
    return orjson.dumps(strings).decode()


# 19 digits: the shortest number that may not fit in 64 bits (2**63 has 19).
_LONG = re.compile(r"\d{19}")
_LONG_BYTES = re.compile(rb"\d{19}")


def loads(text: str | bytes) -> Any:
    """The value of JSON text; ValueError if it is not JSON (as json.loads)."""
    long = _LONG.search(text) if isinstance(text, str) else _LONG_BYTES.search(text)
    if long is not None:
        return json.loads(text)  # maybe an integer orjson would make a float
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # maybe JSON that json reads: \udc80, NaN
        return json.loads(text)
