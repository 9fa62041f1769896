"""JSON text for what the stores keep: orjson's speed, json's reach.

The stores write an entry's metadata as JSON on every commit and every
refresh after a 304, and read it on every lookup from disk: with json that
was ~11 us a write (8.5 for the metadata, 2.9 for the Vary id) and ~5 us a
read, on the store's threads, which share the proxy's core. orjson does the
same in ~0.9 and ~1.8.

orjson refuses a few things json takes: lone surrogates (field values are
decoded with surrogateescape, so an undecodable byte from an origin is one),
integers past 64 bits, and NaN or Infinity on reading. Those go through
json, so every value reads back as json would read it back.
"""

from __future__ import annotations

import json
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


def loads(text: str | bytes) -> Any:
    """The value of JSON text; ValueError if it is not JSON (as json.loads)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # maybe JSON that json reads: \udc80, NaN, big ints
        return json.loads(text)
