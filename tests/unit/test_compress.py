"""Streaming encoders (compress.py) and the `cache.compress` config block."""

from __future__ import annotations

import gzip
import textwrap

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy import compress
from edgeproxy.config import parse_config
from edgeproxy.errors import ConfigError
from edgeproxy.policy.transform import DEFAULT_TYPES, Compression

DEFAULTS = Compression()


def run(coding: str, chunks: list[bytes], cfg: Compression = DEFAULTS) -> bytes:
    enc = compress.encoder(coding, cfg)
    return b"".join(enc.compress(c) for c in chunks) + enc.finish()


@settings(max_examples=30)
@given(st.lists(st.binary(max_size=5000), max_size=8))
def test_gzip_round_trip(chunks: list[bytes]) -> None:
    # RFC 9110 section 8.4.1.3: a gzip member any client's gunzip reads.
    assert gzip.decompress(run("gzip", chunks)) == b"".join(chunks)


@settings(max_examples=30)
@given(st.lists(st.binary(max_size=5000), max_size=8))
def test_br_round_trip(chunks: list[bytes]) -> None:
    assert brotli.decompress(run("br", chunks)) == b"".join(chunks)


def test_levels_are_used() -> None:
    text = b"the quick brown fox jumps over the lazy dog " * 2000
    fast = run("gzip", [text], Compression(gzip_level=1))
    best = run("gzip", [text], Compression(gzip_level=9))
    assert len(best) < len(fast) < len(text)


def test_available_and_unknown() -> None:
    assert compress.available() == {"gzip", "br"}  # brotli is installed here
    with pytest.raises(ValueError):
        compress.encoder("zstd", Compression())


def test_config_block() -> None:
    cfg = parse_config(
        textwrap.dedent(
            """\
            cache:
              compress:
                enabled: false
                types: [text/*, application/*+json, Image/SVG+XML]
                min_size: 1KiB
                levels: {gzip: 9, br: 5}
            """
        )
    ).cache.compress
    assert cfg == Compression(
        enabled=False,
        types=("text/*", "application/*+json", "image/svg+xml"),
        min_size=1024,
        gzip_level=9,
        br_level=5,
    )
    assert parse_config("cache: {}\n").cache.compress == Compression()
    assert Compression().types == DEFAULT_TYPES


def test_config_errors_name_file_and_line() -> None:
    text = textwrap.dedent(
        """\
        cache:
          compress:
            enabled: maybe
            types: [text, 3]
            min_size: -1
            levels: {gzip: 10, zstd: 1}
        """
    )
    with pytest.raises(ConfigError) as e:
        parse_config(text, "edge.yaml")
    assert e.value.errors == [
        "edge.yaml:3 cache.compress.enabled: expected true or false, got 'maybe'",
        "edge.yaml:4 cache.compress.types[0]: expected a media type such as \"text/*\", got 'text'",
        'edge.yaml:4 cache.compress.types[1]: expected a media type such as "text/*", got 3',
        "edge.yaml:5 cache.compress.min_size: expected a size such as 1KiB, got -1",
        "edge.yaml:6 cache.compress.levels.zstd: unknown key (allowed: br, gzip)",
        "edge.yaml:6 cache.compress.levels.gzip: expected an integer from 1 to 9, got 10",
    ]
