"""Streaming content codings for edge compression (policy/transform.py decides).

gzip comes from the standard library (zlib with a gzip wrapper, RFC 1952);
br from the `brotli` package when it is installed, else br is not offered
(`available()`), and clients that prefer it get the identity variant.

An encoder takes the body chunk by chunk as it arrives from the origin and
returns what is ready; `finish` returns the rest. Per chunk the work is
bounded by the chunk size (64 KiB in the proxy), a millisecond or so at the
default levels, so it runs on the event loop rather than paying a thread
hand-off per chunk.
"""

from __future__ import annotations

import importlib
import zlib
from types import ModuleType
from typing import Any, Protocol

from edgeproxy.http.accept_encoding import BR, GZIP
from edgeproxy.policy.transform import Compression


def _brotli() -> ModuleType | None:
    try:
        return importlib.import_module("brotli")
    except ImportError:
        return None


_BROTLI = _brotli()


class Encoder(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class GzipEncoder:
    def __init__(self, level: int) -> None:
        # wbits 16 + 15: a gzip member (header and CRC trailer), 32 KiB window.
        self._z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class BrotliEncoder:
    def __init__(self, quality: int) -> None:
        assert _BROTLI is not None
        self._c: Any = _BROTLI.Compressor(quality=quality)

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._c.process(data)
        return out

    def finish(self) -> bytes:
        out: bytes = self._c.finish()
        return out


def available() -> frozenset[str]:
    """The codings this process can produce."""
    return frozenset({GZIP, BR}) if _BROTLI is not None else frozenset({GZIP})


def encoder(coding: str, settings: Compression) -> Encoder:
    """A fresh encoder for `coding` (one of `available()`)."""
    if coding == GZIP:
        return GzipEncoder(settings.gzip_level)
    if coding == BR and _BROTLI is not None:
        return BrotliEncoder(settings.br_level)
    raise ValueError(f"cannot produce content coding {coding!r}")
