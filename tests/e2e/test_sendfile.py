"""File-backed stored bodies go out with sendfile, never read into Python.

Issue #9 ("Range responses from a file-backed entry are served with sendfile")
and #10 ("File-backed bodies are sent with sendfile"): a 200 MiB object is
stored, then served whole and by ranges (RFC 9110 section 14) while this
process's resident memory is sampled; every byte is checked, and the Python
read path (`proxy._pread`) is made to fail, so a pass means zero-copy.

`send_file` itself is driven on both event loops (asyncio and uvloop: uvloop
has no `loop.sendfile`) against a socket with a tiny buffer and a reader that
starts late, so the waits for room in the socket and the flush of bytes the
transport already held are exercised, not just the one-call fast case.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import zlib
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edgeproxy import bodies
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Reply, RssWatch, ScriptedOrigin

SIZE = 200 << 20
CHUNK = 256 << 10
MAX_GROWTH = 48 << 20  # far below any one response (the smallest big one is 150 MiB)


def pattern(i: int) -> bytes:
    """Chunk i of the body: cheap to make, different per chunk."""
    return i.to_bytes(4, "big") * (CHUNK // 4)


def span_crc(start: int, end: int) -> int:
    """crc32 of bytes start..end (inclusive) of the body."""
    crc = 0
    for i in range(start // CHUNK, end // CHUNK + 1):
        lo = max(start, i * CHUNK) - i * CHUNK
        hi = min(end + 1, (i + 1) * CHUNK) - i * CHUNK
        crc = zlib.crc32(pattern(i)[lo:hi], crc)
    return crc


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes sent per os.sendfile call; the chunked-read path fails the test."""
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        calls.append(n)
        return n

    def no_reads(*args: Any) -> bytes:
        raise AssertionError("a file-backed body was read into Python")

    monkeypatch.setattr(os, "sendfile", counting)
    monkeypatch.setattr(bodies, "_pread", no_reads)
    return calls


async def stored_big(make_proxy: MakeProxy, origin: ScriptedOrigin) -> str:
    """A proxy holding the 200 MiB object (stored on the way through); its URL."""

    async def generate(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Cache-Control": "max-age=600", "Date": origin.date(), "ETag": '"big"'}
        )
        resp.content_length = SIZE
        await resp.prepare(request)
        for i in range(SIZE // CHUNK):
            await resp.write(pattern(i))
        await resp.write_eof()
        return resp

    origin.script("/big", generate)
    assert origin.server is not None
    p = await make_proxy(
        f"http://127.0.0.1:{origin.server.port}", max_object_size=SIZE, size_limit=2 * SIZE
    )
    url = p.url + "/big"
    async with aiohttp.ClientSession() as fill, fill.get(url) as r:
        assert "stored" in r.headers["Cache-Status"]
        async for _ in r.content.iter_chunked(1 << 20):
            pass
    return url


async def read(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], watch: RssWatch
) -> tuple[int, dict[str, str], int, int]:
    """(status, fields, length, crc32 of the body), sampling RSS every 8 MiB."""
    n = crc = 0
    async with client.get(url, headers=headers) as r:
        async for chunk in r.content.iter_chunked(CHUNK):
            n += len(chunk)
            crc = zlib.crc32(chunk, crc)
            if n // CHUNK % 32 == 0:
                watch.sample()
        return r.status, dict(r.headers), n, crc


async def test_200mib_object_served_whole_and_by_ranges_with_flat_memory(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    sendfile_calls: list[int],
) -> None:
    url = await stored_big(make_proxy, origin)
    mid = SIZE // 8
    cases = [
        # (Range, status, first byte, last byte): RFC 9110 section 14.1.2 forms
        (None, 200, 0, SIZE - 1),
        (f"bytes={mid}-{mid + 150 * (1 << 20) - 1}", 206, mid, mid + 150 * (1 << 20) - 1),
        ("bytes=-1000", 206, SIZE - 1000, SIZE - 1),  # suffix
        (f"bytes={SIZE - 5 * CHUNK - 3}-", 206, SIZE - 5 * CHUNK - 3, SIZE - 1),  # open
        ("bytes=7-7", 206, 7, 7),
    ]
    for rng, status, first, last in cases:
        watch = RssWatch()
        before = sum(sendfile_calls)
        got_status, fields, n, crc = await read(client, url, {"Range": rng} if rng else {}, watch)
        assert got_status == status, rng
        assert fields["Cache-Status"].startswith("edgeproxy; hit"), rng
        assert int(fields["Content-Length"]) == n == last - first + 1, rng
        if status == 206:
            # RFC 9110 section 14.4
            assert fields["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
        assert crc == span_crc(first, last), rng
        assert sum(sendfile_calls) - before == n, "every body byte went through sendfile"
        assert watch.growth < MAX_GROWTH, f"{rng}: RSS grew {watch.growth >> 20} MiB"
    assert origin.hits("/big") == 1


async def test_multipart_ranges_of_a_file_body_use_sendfile_per_part(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    sendfile_calls: list[int],
) -> None:
    # RFC 9110 section 14.6: each part's bytes come from the file, the part
    # headers and boundaries from memory; parsed back with aiohttp's reader.
    url = await stored_big(make_proxy, origin)
    spans = [(0, 99), (SIZE // 2, SIZE // 2 + 8 * CHUNK - 1), (SIZE - 10, SIZE - 1)]
    spec = ",".join(f"{a}-{b}" for a, b in spans)
    before = sum(sendfile_calls)
    async with client.get(url, headers={"Range": f"bytes={spec}"}) as r:
        assert r.status == 206
        assert r.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
        reader = aiohttp.MultipartReader.from_response(r)
        got = []
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            got.append((part.headers["Content-Range"], zlib.crc32(await part.read())))
    assert got == [(f"bytes {a}-{b}/{SIZE}", span_crc(a, b)) for a, b in spans]
    assert sum(sendfile_calls) - before == sum(b - a + 1 for a, b in spans)


async def test_small_hot_bodies_are_written_from_memory(
    make_proxy: MakeProxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    sendfile_calls: list[int],
) -> None:
    # The hot tier keeps small bodies in memory (store/tiered.py): no file,
    # no sendfile, one write.
    origin.script("/s", Reply(body=b"x" * 1000, headers={"Cache-Control": "max-age=60"}))
    assert origin.server is not None
    p = await make_proxy(f"http://127.0.0.1:{origin.server.port}")
    for _ in range(2):
        async with client.get(p.url + "/s") as r:
            assert await r.read() == b"x" * 1000
    assert r.headers["Cache-Status"].startswith("edgeproxy; hit")
    assert sendfile_calls == []


# -- send_file on both loops, with back-pressure ------------------------------


def loop_factories() -> list[Any]:
    factories: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        factories.append(pytest.param(None, id="uvloop", marks=pytest.mark.skip("no uvloop")))
    else:
        factories.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    return factories


@pytest.mark.no_blockbuster  # the test's own reader thread and file setup block; send_file's
# calls run on the pool either way
@pytest.mark.parametrize("loop_factory", loop_factories())
def test_sendfile_waits_for_room_and_flushes_the_head_first(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = os.urandom(3 << 20)
    path = tmp_path / "body"
    path.write_bytes(body)
    head = b"H" * (2 << 20)  # more than the socket takes: the transport holds the rest
    server_sock, client_sock = socket.socketpair()
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    client_sock.settimeout(30)  # bounded, whatever the sender does
    received = bytearray()
    start_reading = threading.Event()
    waits = {"n": 0}
    real_writable = bodies._writable

    async def counting_writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
        waits["n"] += 1
        start_reading.set()  # the reader starts once the socket is full
        await real_writable(loop, fd)

    monkeypatch.setattr(bodies, "_writable", counting_writable)

    def reader() -> None:
        start_reading.wait(30)
        total = len(head) + len(body)
        while len(received) < total:  # bounded: ends with the bytes, the socket or a timeout
            try:
                chunk = client_sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            received.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()

    f = open(path, "rb")  # noqa: SIM115 - closed below, opened before any loop runs

    async def main() -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=server_sock)
        transport.write(head)  # type: ignore[attr-defined]
        sent = await bodies.send_file(transport, f.fileno(), 1000, len(body) - 1000)
        transport.close()
        return sent

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            sent = runner.run(main())
    finally:
        start_reading.set()
        f.close()
        server_sock.close()
        thread.join(30)
        client_sock.close()
    assert sent == len(body) - 1000
    assert waits["n"] > 0, "the socket never filled: back-pressure not exercised"
    assert bytes(received) == head + body[1000:]


async def test_sendfile_to_a_client_that_left_is_a_connection_reset(tmp_path: Any) -> None:
    path = tmp_path / "body"
    await asyncio.to_thread(path.write_bytes, b"z" * (4 << 20))
    server_sock, client_sock = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=server_sock)
    client_sock.close()
    f = await asyncio.to_thread(open, path, "rb")
    try:
        with pytest.raises(ConnectionResetError):
            await bodies.send_file(transport, f.fileno(), 0, 4 << 20)
    finally:
        transport.close()
        await asyncio.to_thread(f.close)
