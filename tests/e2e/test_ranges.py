"""Range requests answered from the cache (RFC 9110 section 14): 206 single and
multipart/byteranges, 416, If-Range (13.1.5), Accept-Ranges (14.3).

Every test fills the cache with one plain GET, then asserts the origin saw
nothing more: the ranges come from the stored complete 200.
"""

from __future__ import annotations

import asyncio
import io
from email.message import Message
from email.parser import BytesParser
from typing import Any

import aiohttp
import pytest

from edgeproxy.bodies import ShortBody, _read_span
from edgeproxy.http.dates import format_http_date
from edgeproxy.state import EDGE
from edgeproxy.store.base import Body
from edgeproxy.store.tiered import TieredStore
from tests.conftest import FakeClock
from tests.e2e.harness import Got, Proxy, Reply, ScriptedOrigin, fetch

ETAG = '"v1"'


def pattern(n: int) -> bytes:
    """n bytes in which every 8-byte window names its offset: a wrong slice shows."""
    return b"".join(b"%07d|" % i for i in range(n // 8 + 1))[:n]


SMALL = pattern(4000)
# Past the store's spill threshold and the memory tier's max object (256 KiB):
# held as a file on disk, read by seeking (store/disk.py, store/tiered.py).
LARGE = pattern(300_000)


async def fill(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    body: bytes,
    path: str = "/r",
    etag: str = ETAG,
) -> dict[str, str]:
    """Store `body` at `path` with the usual stored fields; returns them."""
    fields = {
        "Cache-Control": "max-age=600",
        "ETag": etag,
        "Last-Modified": format_http_date(clock() - 3600),
        "Expires": format_http_date(clock() + 600),
        "Content-Type": "text/plain",
        "Content-Location": path + ".txt",
        "Vary": "Accept-Language",
    }
    origin.script(path, Reply(body=body, headers=fields))
    got = await fetch(client, "GET", proxy.url + path)
    assert got.status == 200 and got.body == body
    # Relayed and stored: we will answer its ranges (RFC 9110 section 14.3).
    assert got.headers["Accept-Ranges"] == "bytes"
    assert "stored" in got.headers["Cache-Status"]
    assert origin.hits(path) == 1
    return fields


def assert_stored_fields(got: Got, fields: dict[str, str]) -> None:
    """A 206 keeps Date, Cache-Control, ETag, Expires, Content-Location, Vary (15.3.7)."""
    for name in ("Cache-Control", "ETag", "Expires", "Content-Location", "Vary", "Last-Modified"):
        assert got.headers[name] == fields[name], name
    assert "Date" in got.headers
    assert got.headers["Age"] == "0"
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=600"
    assert got.headers["Accept-Ranges"] == "bytes"


def parse_multipart(got: Got) -> list[Message]:
    """The body parsed back by the standard library's MIME parser (RFC 2046 5.1)."""
    head = b"Content-Type: " + got.headers["Content-Type"].encode("ascii") + b"\r\n\r\n"
    msg = BytesParser().parsebytes(head + got.body)
    assert msg.is_multipart()
    assert msg.get_content_type() == "multipart/byteranges"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert msg.defects == []
    return [p for p in parts if isinstance(p, Message)]


def part_bytes(part: Message) -> bytes:
    payload: Any = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


SINGLE = [
    # (Range, first, last) on SMALL (4000 bytes); RFC 9110 section 14.1.2.
    pytest.param("bytes=0-99", 0, 99, id="14.1.2-int-range"),
    pytest.param("bytes=1000-1000", 1000, 1000, id="14.1.2-one-byte"),
    pytest.param("bytes=-500", 3500, 3999, id="14.1.2-suffix"),
    pytest.param("bytes=-9999", 0, 3999, id="14.1.2-suffix-longer-than-body"),
    pytest.param("bytes=1000-", 1000, 3999, id="14.1.2-open"),
    pytest.param("bytes=3990-5000", 3990, 3999, id="14.1.2-last-pos-clipped"),
    pytest.param("bytes=10-19,15-30", 10, 30, id="15.3.7.2-overlap-coalesced"),
    pytest.param("bytes=9999-,0-9", 0, 9, id="14.1.2-one-satisfiable-of-two"),
]


@pytest.mark.parametrize(("range_", "first", "last"), SINGLE)
async def test_single_range_from_the_cache(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    range_: str,
    first: int,
    last: int,
) -> None:
    fields = await fill(proxy, origin, client, clock, SMALL)
    got = await fetch(client, "GET", proxy.url + "/r", headers={"Range": range_})
    assert got.status == 206  # RFC 9110 section 15.3.7.1
    assert got.headers["Content-Range"] == f"bytes {first}-{last}/4000"
    assert got.headers["Content-Length"] == str(last - first + 1)
    assert got.headers["Content-Type"] == "text/plain"
    assert got.body == SMALL[first : last + 1]
    assert_stored_fields(got, fields)
    assert origin.hits("/r") == 1


async def test_multipart_byteranges_parsed_back(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    fields = await fill(proxy, origin, client, clock, SMALL)
    got = await fetch(client, "GET", proxy.url + "/r", headers={"Range": "bytes=100-199, -50,0-9"})
    # RFC 9110 section 15.3.7.2 and 14.6: no Content-Range on the whole, one per part.
    assert got.status == 206
    assert "Content-Range" not in got.headers
    assert got.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert got.headers["Content-Length"] == str(len(got.body))
    assert_stored_fields(got, fields)
    parts = parse_multipart(got)
    expected = [(0, 9), (100, 199), (3950, 3999)]  # ascending (ranges.py policy)
    assert len(parts) == len(expected)
    for part, (first, last) in zip(parts, expected, strict=True):
        assert part["Content-Range"] == f"bytes {first}-{last}/4000"
        assert part["Content-Type"] == "text/plain"
        assert part_bytes(part) == SMALL[first : last + 1]
    assert origin.hits("/r") == 1


async def test_boundary_is_fresh_per_response(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # RFC 2046 section 5.1.1: the boundary must not occur in the content.
    await fill(proxy, origin, client, clock, SMALL)
    types = set()
    for _ in range(2):
        got = await fetch(client, "GET", proxy.url + "/r", headers={"Range": "bytes=0-0,5-5"})
        assert got.status == 206
        types.add(got.headers["Content-Type"])
    assert len(types) == 2


@pytest.mark.parametrize(
    "range_",
    [
        pytest.param("bytes=4000-", id="14.1.2-first-pos-at-length"),
        pytest.param("bytes=5000-6000,4000-", id="14.1.2-none-satisfiable"),
        pytest.param("bytes=-0", id="14.1.2-zero-suffix"),
    ],
)
async def test_unsatisfiable_is_416(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    range_: str,
) -> None:
    await fill(proxy, origin, client, clock, SMALL)
    got = await fetch(client, "GET", proxy.url + "/r", headers={"Range": range_})
    assert got.status == 416  # RFC 9110 section 15.5.17
    assert got.headers["Content-Range"] == "bytes */4000"
    assert SMALL[:16] not in got.body
    assert origin.hits("/r") == 1


@pytest.mark.parametrize(
    "range_",
    [
        pytest.param("bytes=abc", id="14.1.1-invalid"),
        pytest.param("bytes=20-10", id="14.1.1-last-before-first"),
        pytest.param("items=0-9", id="14.1-unknown-unit"),
        pytest.param(",".join(f"{i * 10}-{i * 10}" for i in range(20)), id="14.2-too-many-parts"),
    ],
)
async def test_unusable_range_gets_the_whole_200(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    range_: str,
) -> None:
    await fill(proxy, origin, client, clock, SMALL)
    if range_[0].isdigit():
        range_ = "bytes=" + range_
    got = await fetch(client, "GET", proxy.url + "/r", headers={"Range": range_})
    assert got.status == 200  # RFC 9110 section 14.2: a server MAY ignore Range
    assert got.body == SMALL
    assert "Content-Range" not in got.headers
    assert origin.hits("/r") == 1


IF_RANGE = [
    # (stored ETag, If-Range, Last-Modified offset of the If-Range date or None, partial?)
    # RFC 9110 section 13.1.5: strong comparison of entity-tags (8.8.3.2).
    pytest.param(ETAG, ETAG, None, True, id="13.1.5-strong-etag-match"),
    pytest.param(ETAG, '"v2"', None, False, id="13.1.5-etag-mismatch"),
    pytest.param(ETAG, 'W/"v1"', None, False, id="13.1.5-weak-if-range"),
    pytest.param('W/"v1"', 'W/"v1"', None, False, id="13.1.5-weak-stored"),
    # A date must equal Last-Modified, a strong validator here (8.8.2.2).
    pytest.param(ETAG, None, 0, True, id="13.1.5-date-match"),
    pytest.param(ETAG, None, -1, False, id="13.1.5-date-earlier"),
    pytest.param(ETAG, None, 60, False, id="13.1.5-date-later"),
    pytest.param(ETAG, "not a date", None, False, id="13.1.5-invalid"),
]


@pytest.mark.parametrize(("stored_etag", "if_range", "date_offset", "partial"), IF_RANGE)
async def test_if_range(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    stored_etag: str,
    if_range: str | None,
    date_offset: int | None,
    partial: bool,
) -> None:
    await fill(proxy, origin, client, clock, SMALL, etag=stored_etag)
    if if_range is None:
        assert date_offset is not None
        if_range = format_http_date(clock() - 3600 + date_offset)
    got = await fetch(
        client, "GET", proxy.url + "/r", headers={"Range": "bytes=10-19", "If-Range": if_range}
    )
    if partial:
        assert got.status == 206
        assert got.headers["Content-Range"] == "bytes 10-19/4000"
        assert got.body == SMALL[10:20]
    else:
        # If-Range false: ignore Range, the whole 200 (RFC 9110 section 13.2.2 step 5).
        assert got.status == 200
        assert "Content-Range" not in got.headers
        assert got.body == SMALL
        assert got.headers["Accept-Ranges"] == "bytes"
    assert origin.hits("/r") == 1


async def test_preconditions_come_before_range(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # RFC 9110 section 13.2.2: If-None-Match (step 3) answers 304 before Range (step 5);
    # section 14.2: Range is ignored when the answer would not be 200.
    await fill(proxy, origin, client, clock, SMALL)
    got = await fetch(
        client, "GET", proxy.url + "/r", headers={"Range": "bytes=0-9", "If-None-Match": ETAG}
    )
    assert got.status == 304
    assert "Content-Range" not in got.headers
    got = await fetch(
        client, "GET", proxy.url + "/r", headers={"Range": "bytes=0-9", "If-Match": '"v2"'}
    )
    assert got.status == 412
    assert origin.hits("/r") == 1


async def test_head_never_gets_206(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # RFC 9110 section 14.2: GET is the only method range handling is defined for.
    await fill(proxy, origin, client, clock, SMALL)
    got = await fetch(client, "HEAD", proxy.url + "/r", headers={"Range": "bytes=0-9"})
    assert got.status == 200
    assert got.headers["Content-Length"] == "4000"
    assert got.headers["Accept-Ranges"] == "bytes"
    assert "Content-Range" not in got.headers
    assert got.body == b""
    assert origin.hits("/r") == 1


@pytest.mark.parametrize(
    ("range_", "expected"),
    [
        # Crossing the 64 KiB read chunks, and the file's last bytes (14.1.2).
        pytest.param("bytes=65530-200000", [(65530, 200000)], id="14.1.2-int-range"),
        pytest.param("bytes=-1000", [(299_000, 299_999)], id="14.1.2-suffix"),
        pytest.param("bytes=262140-", [(262140, 299_999)], id="14.1.2-open"),
        pytest.param(
            "bytes=0-99,131070-131080,299990-",
            [(0, 99), (131070, 131080), (299990, 299_999)],
            id="15.3.7.2-multipart",
        ),
    ],
)
async def test_ranges_of_a_file_backed_body(
    spied_disk: None,
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    range_: str,
    expected: list[tuple[int, int]],
) -> None:
    fields = await fill(proxy, origin, client, clock, LARGE)
    store = proxy.app[EDGE].store
    # The disk store's open_body (a SpiedDiskStore: compiled classes' own
    # attributes are read-only): a file-backed body is what the hot tier
    # passes on from it.
    assert isinstance(store, TieredStore)
    disk = store.disk
    opened: list[Body] = []
    open_body = disk.open_body

    async def spy(entry: Any) -> Body | None:
        body = await open_body(entry)
        if body is not None:
            opened.append(body)
        return body

    monkeypatch.setattr(disk, "open_body", spy)
    got = await fetch(client, "GET", proxy.url + "/r", headers={"Range": range_})
    assert got.status == 206
    assert [b.file is not None for b in opened] == [True]  # seeked, not held in memory
    file = opened[0].file
    assert file is not None
    # The client can hold the whole body (Content-Length) a moment before the
    # handler's `finally` has closed the file: wait for it, bounded.
    for _ in range(200):
        if file.closed:
            break
        await asyncio.sleep(0.01)
    assert file.closed
    assert_stored_fields(got, fields)
    assert got.headers["Content-Length"] == str(len(got.body))
    if len(expected) == 1:
        ((first, last),) = expected
        assert got.headers["Content-Range"] == f"bytes {first}-{last}/300000"
        assert got.body == LARGE[first : last + 1]
    else:
        parts = parse_multipart(got)
        assert [p["Content-Range"] for p in parts] == [f"bytes {a}-{b}/300000" for a, b in expected]
        assert [part_bytes(p) for p in parts] == [LARGE[a : b + 1] for a, b in expected]
    assert origin.hits("/r") == 1


async def test_range_miss_asks_for_the_whole_and_a_206_is_not_stored(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # RFC 9111 section 3.3: we don't combine partial content; a 206 is never stored.
    origin.script(
        "/m",
        Reply(
            status=206,
            body=SMALL[:10],
            headers={"Cache-Control": "max-age=600", "Content-Range": "bytes 0-9/4000"},
        ),
    )
    got = await fetch(client, "GET", proxy.url + "/m", headers={"Range": "bytes=0-9"})
    assert got.status == 206 and got.body == SMALL[:10]
    # Issue #9: a storable range miss asks the origin for the whole object.
    assert "Range" not in origin.last().headers
    assert "stored" not in got.headers["Cache-Status"]
    origin.script("/m", Reply(body=SMALL, headers={"Cache-Control": "max-age=600"}))
    got = await fetch(client, "GET", proxy.url + "/m")
    assert got.status == 200 and got.body == SMALL
    assert "fwd=uri-miss" in got.headers["Cache-Status"]
    assert origin.hits("/m") == 2
    got = await fetch(client, "GET", proxy.url + "/m")
    assert got.headers["Cache-Status"] == "edgeproxy; hit; ttl=600"
    got = await fetch(client, "GET", proxy.url + "/m", headers={"Range": "bytes=-5"})
    assert got.status == 206 and got.body == SMALL[-5:]
    assert origin.hits("/m") == 2


class CountingFile(io.BytesIO):
    """Records how many bytes were read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        out = super().read(size)
        self.bytes_read += len(out)
        return out


async def test_read_span_reads_only_the_range() -> None:
    f = CountingFile(LARGE)
    chunks = [c async for c in _read_span(Body(len(LARGE), file=f), 70_000, 200_000)]
    assert b"".join(chunks) == LARGE[70_000:200_001]
    assert f.bytes_read == 130_001  # never the whole file
    assert max(len(c) for c in chunks) <= 65536


async def test_read_span_of_a_short_file_raises() -> None:
    # The stored file lost its tail: the 206 already promised the bytes.
    f = CountingFile(LARGE[:1000])
    with pytest.raises(ShortBody):
        async for _ in _read_span(Body(len(LARGE), file=f), 500, 2000):
            pass
