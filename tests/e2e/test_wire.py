"""The wire fast path (edgeproxy/wire.py) on the connection: raw sockets.

Byte for byte the same response as aiohttp's handler sends (but the request
id), pipelined requests answered in order across both paths, heads split
over packets, connection management left to aiohttp, flow control (a client
that doesn't read is not buffered for without bound), keep-alive timing,
and a failure inside the fast path costing nothing but speed. Each test
runs with the fast path on ([wire]) and off ([aiohttp]): the client can't
tell them apart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from edgeproxy import wire
from edgeproxy.state import EDGE
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin

BODY = b"0123456789" * 100
FIELDS = {"Cache-Control": "max-age=100", "ETag": '"v1"', "Content-Type": "text/plain"}


def origin_url(origin: ScriptedOrigin) -> str:
    assert origin.server is not None
    return f"http://127.0.0.1:{origin.server.port}"


def get(path: str, *extra: bytes, method: bytes = b"GET") -> bytes:
    return (
        method
        + b" "
        + path.encode()
        + b" HTTP/1.1\r\nHost: edge.test\r\n"
        + b"".join(extra)
        + b"\r\n"
    )


class Conn:
    """One raw client connection: write bytes, read whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, proxy: Proxy) -> Conn:
        assert proxy.server is not None
        return cls(*await asyncio.open_connection("127.0.0.1", proxy.server.port))

    async def send(self, *parts: bytes) -> None:
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()

    async def response(self, head_only: bool = False) -> tuple[bytes, dict[str, str], bytes]:
        """The next response: its head bytes, fields (lower-case names), body."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        fields = {}
        for line in head.split(b"\r\n")[1:-2]:
            name, _, value = line.decode().partition(": ")
            fields[name.lower()] = value
        length = (
            0 if head_only or head.startswith(b"HTTP/1.1 304") else int(fields["content-length"])
        )
        body = await asyncio.wait_for(self.reader.readexactly(length), 5)
        return head, fields, body

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def p(make_proxy: MakeProxy, origin: ScriptedOrigin) -> Proxy:
    origin.script("/a", Reply(body=BODY, headers=dict(FIELDS)))
    origin.script("/b", Reply(body=b"bee", headers=dict(FIELDS)))
    return await make_proxy(origin_url(origin))


async def warm(conn: Conn, path: str) -> None:
    """A miss, then a hit: read from disk, it brings the key and its body
    into memory (a commit leaves a key not yet read out of it)."""
    for _ in range(2):
        await conn.send(get(path))
        await conn.response()


def wire_hits(proxy: Proxy) -> int:
    return proxy.app[EDGE].counters["wire_hits"]


async def test_same_bytes_as_aiohttps(
    make_proxy: MakeProxy, origin: ScriptedOrigin, tmp_path: Any, hit_path: str
) -> None:
    """The whole response, head and body, byte for byte (the request id aside),
    for a GET, a HEAD, a client 304 and a browser's keep-alive GET, against a
    proxy with the fast path off."""
    origin.script("/a", Reply(body=BODY, headers=dict(FIELDS)))
    on = await make_proxy(origin_url(origin), cache_dir=str(tmp_path / "on"))
    off = await make_proxy(origin_url(origin), cache_dir=str(tmp_path / "off"), fast_path=False)
    requests = [
        get("/a"),
        get("/a", method=b"HEAD"),
        get("/a", b'If-None-Match: "v1"\r\n'),
        get("/a", b"Connection: keep-alive\r\n"),  # as browsers send it
    ]
    seen = []
    for proxy in (on, off):
        conn = await Conn.open(proxy)
        await warm(conn, "/a")
        answers = []
        for raw in requests:
            await conn.send(raw)
            head, _, body = await conn.response(head_only=raw.startswith(b"HEAD"))
            answers.append(re.sub(rb"X-Request-Id: [0-9a-f]+", b"X-Request-Id: *", head) + body)
        conn.close()
        seen.append(answers)
    assert seen[0] == seen[1]
    assert seen[0][0].startswith(b"HTTP/1.1 200 OK\r\n") and seen[0][0].endswith(BODY)
    assert seen[0][2].startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert wire_hits(on) == (4 if hit_path == "wire" else 0)  # warm's hit read the disk
    assert wire_hits(off) == 0


async def test_pipelined_requests_answered_in_order(
    p: Proxy, origin: ScriptedOrigin, hit_path: str
) -> None:
    """Hits, a miss and a Range (both aiohttp's) in one packet: answers in order."""
    conn = await Conn.open(p)
    await warm(conn, "/a")
    await conn.send(
        get("/a") + get("/b") + get("/a") + get("/a", b"Range: bytes=0-3\r\n") + get("/a")
    )
    statuses_bodies = []
    for _ in range(5):
        head, fields, body = await conn.response()
        statuses_bodies.append(
            (head.split(b" ")[1], fields["cache-status"].split(";")[1].strip(), body)
        )
    conn.close()
    assert statuses_bodies == [
        (b"200", "hit", BODY),
        (b"200", "fwd=uri-miss", b"bee"),
        (b"200", "hit", BODY),
        (b"206", "hit", b"0123"),
        (b"200", "hit", BODY),
    ]
    assert origin.hits("/a") == 1 and origin.hits("/b") == 1
    # The first /a before the miss went on the wire; the rest followed aiohttp's.
    assert wire_hits(p) >= (1 if hit_path == "wire" else 0)


async def test_head_split_over_packets(p: Proxy, hit_path: str) -> None:
    conn = await Conn.open(p)
    await warm(conn, "/a")
    before = wire_hits(p)
    raw = get("/a")
    await conn.send(raw[:10])
    await asyncio.sleep(0.05)  # lets the proxy read the first part alone
    await conn.send(raw[10:])
    _, fields, body = await conn.response()
    assert body == BODY and fields["cache-status"].startswith("edgeproxy; hit")
    # aiohttp parsed the split head; the next whole one is the wire's again.
    assert wire_hits(p) == before
    await conn.send(raw)
    _, _, body = await conn.response()
    assert body == BODY
    assert wire_hits(p) == before + (1 if hit_path == "wire" else 0)
    conn.close()


async def test_connection_close_is_aiohttps(p: Proxy) -> None:
    conn = await Conn.open(p)
    await warm(conn, "/a")
    before = wire_hits(p)
    await conn.send(get("/a", b"Connection: close\r\n"))
    _, fields, body = await conn.response()
    assert body == BODY and fields["connection"] == "close"
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""  # closed
    assert wire_hits(p) == before
    conn.close()


async def test_http10_and_bodies_are_aiohttps(p: Proxy) -> None:
    conn = await Conn.open(p)
    await warm(conn, "/a")
    before = wire_hits(p)
    await conn.send(b"GET /a HTTP/1.0\r\nHost: edge.test\r\nConnection: keep-alive\r\n\r\n")
    head, fields, body = await conn.response()
    assert head.startswith(b"HTTP/1.0 200") and body == BODY
    await conn.send(get("/a", b"Content-Length: 2\r\n") + b"xy")
    _, fields, body = await conn.response()
    assert body == BODY and fields["cache-status"].startswith("edgeproxy; hit")
    assert wire_hits(p) == before
    conn.close()


async def test_a_client_that_does_not_read_is_not_buffered_for(
    make_proxy: MakeProxy, origin: ScriptedOrigin, hit_path: str
) -> None:
    """Many pipelined hits for a 200 KiB object, nothing read: the proxy stops
    writing at the transport's high-water mark (aiohttp's flow control takes
    over), then answers every one once the client reads."""
    big = bytes(range(256)) * 800  # 200 KiB: still a hot-tier body
    origin.script("/big", Reply(body=big, headers=dict(FIELDS)))
    p = await make_proxy(origin_url(origin))
    conn = await Conn.open(p)
    await warm(conn, "/big")
    n = 200  # 40 MiB of answers if all were written at once
    conn.writer.write(get("/big") * n)
    await conn.writer.drain()
    await asyncio.sleep(0.2)
    buffered = [
        proto.transport.get_write_buffer_size()
        for proto in p.server.runner.server.connections  # type: ignore[union-attr]
        if proto.transport is not None
    ]
    assert buffered and max(buffered) < 4 * len(big), buffered
    for _ in range(n):
        _, _, body = await conn.response()
        assert body == big
    conn.close()
    if hit_path == "wire":
        assert wire_hits(p) > 0


async def test_keepalive_timeout_counts_from_the_last_wire_answer(
    make_proxy: MakeProxy, origin: ScriptedOrigin, hit_path: str
) -> None:
    from edgeproxy.config import Limits

    origin.script("/a", Reply(body=BODY, headers=dict(FIELDS)))
    p = await make_proxy(origin_url(origin))
    edge = p.app[EDGE]
    cfg = edge.snapshot.config
    import dataclasses

    limits = Limits(keepalive_timeout=0.5)
    edge.snapshot = dataclasses.replace(
        edge.snapshot, config=dataclasses.replace(cfg, limits=limits)
    )
    conn = await Conn.open(p)
    await warm(conn, "/a")
    # Busy past the timeout on answers alone: the connection stays open.
    loop = asyncio.get_running_loop()
    until = loop.time() + 1.2
    while loop.time() < until:
        await conn.send(get("/a"))
        await conn.response()
        await asyncio.sleep(0.05)
    # Then idle: closed after the timeout.
    started = loop.time()
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""
    assert 0.4 < loop.time() - started < 5
    conn.close()


async def test_a_fast_path_failure_costs_only_speed(
    p: Proxy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, hit_path: str
) -> None:
    conn = await Conn.open(p)
    await warm(conn, "/a")

    def broken(*args: Any) -> bytes | None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(wire, "answer", broken)
    with caplog.at_level(logging.ERROR, "edgeproxy"):
        await conn.send(get("/a"))
        _, fields, body = await conn.response()
    assert body == BODY and fields["cache-status"].startswith("edgeproxy; hit")
    if hit_path == "wire":
        assert "wire fast path failed on /a" in caplog.text
    conn.close()


# -- file-backed hits: head from the protocol, body by sendfile in a task ------

BIG = bytes(range(256)) * 4096  # 1 MiB: above the hot tier's max object here


async def big_proxy(make_proxy: MakeProxy, origin: ScriptedOrigin, **kw: Any) -> Proxy:
    origin.script("/big", Reply(body=BIG, headers=dict(FIELDS)))
    origin.script("/a", Reply(body=BODY, headers=dict(FIELDS)))
    return await make_proxy(origin_url(origin), memory_max_object=64 << 10, **kw)


async def test_file_hits_same_bytes_and_in_order(
    make_proxy: MakeProxy, origin: ScriptedOrigin, tmp_path: Any, hit_path: str
) -> None:
    """A file-backed hit from the protocol is byte for byte aiohttp's, and
    what the client pipelined behind it is answered after it, in order."""
    on = await big_proxy(make_proxy, origin, cache_dir=str(tmp_path / "on"))
    off = await make_proxy(
        origin_url(origin), cache_dir=str(tmp_path / "off"), fast_path=False,
        memory_max_object=64 << 10,
    )  # fmt: skip
    seen = []
    for proxy in (on, off):
        conn = await Conn.open(proxy)
        await warm(conn, "/big")
        await warm(conn, "/a")
        before = wire_hits(proxy)
        await conn.send(get("/big") + get("/a") + get("/big", method=b"HEAD") + get("/big"))
        answers = []
        for i in range(4):
            head, _, body = await conn.response(head_only=i == 2)
            answers.append(re.sub(rb"X-Request-Id: [0-9a-f]+", b"X-Request-Id: *", head) + body)
        conn.close()
        seen.append(answers)
        expected = 4 if proxy is on and hit_path == "wire" else 0
        assert wire_hits(proxy) - before == expected
    assert seen[0] == seen[1]
    assert all(seen[0][i].endswith(BIG) for i in (0, 3)) and seen[0][1].endswith(BODY)
    assert origin.hits("/big") == 2  # one miss per proxy


async def test_file_hits_after_an_origin_broke_off_elsewhere(
    make_proxy: MakeProxy, origin: ScriptedOrigin, hit_path: str
) -> None:
    """A miss whose origin broke off mid-body (an error the wire path
    handles), then file hits on another connection: they complete, on the
    wire path. (Written for the compiled build's "no await in a finally"
    rule, edgeproxy/compiled.py; it did not reproduce that miscompilation,
    which needs the handler and the `finally` in one module.)"""

    async def cut(request: Any) -> Any:
        from aiohttp import web

        resp = web.StreamResponse(headers={**FIELDS, "Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()  # 10 bytes of the 1000 promised
        return resp

    p = await big_proxy(make_proxy, origin)
    origin.script("/cut", cut)
    conn = await Conn.open(p)
    await warm(conn, "/big")
    broken = await Conn.open(p)
    await broken.send(get("/cut"))
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await broken.response()
    broken.close()
    before = wire_hits(p)
    for _ in range(3):
        await conn.send(get("/big"))
        _, fields, body = await conn.response()
        assert body == BIG and fields["cache-status"].startswith("edgeproxy; hit")
    assert wire_hits(p) - before == (3 if hit_path == "wire" else 0)
    conn.close()


def remove_body_files(directory: str) -> int:
    """Delete diskcache's value files (bodies above its inline size)."""
    files = list(Path(directory).rglob("*.val"))
    for f in files:
        f.unlink()
    return len(files)


async def test_a_file_hit_whose_body_went_is_the_full_paths(
    make_proxy: MakeProxy, origin: ScriptedOrigin, hit_path: str
) -> None:
    """The body file vanished under a hot entry (damage, an outside hand):
    nothing was written yet, so the full path answers it (a miss, fetched)."""
    p = await big_proxy(make_proxy, origin)
    conn = await Conn.open(p)
    await warm(conn, "/big")
    assert await asyncio.to_thread(remove_body_files, p.config.cache.directory)
    await conn.send(get("/big"))
    _, fields, body = await conn.response()
    assert body == BIG
    assert "fwd=uri-miss" in fields["cache-status"]
    assert origin.hits("/big") == 2
    conn.close()


async def test_a_client_that_leaves_mid_file_hit_costs_nothing(
    make_proxy: MakeProxy, origin: ScriptedOrigin, caplog: pytest.LogCaptureFixture
) -> None:
    huge = os.urandom(1 << 20) * 8  # 8 MiB: more than the socket takes at once
    origin.script("/huge", Reply(body=huge, headers=dict(FIELDS)))
    p = await make_proxy(origin_url(origin), memory_max_object=64 << 10)
    conn = await Conn.open(p)
    await warm(conn, "/huge")
    with caplog.at_level(logging.WARNING, "edgeproxy"):
        for _ in range(5):
            leaving = await Conn.open(p)
            await leaving.send(get("/huge"))
            await leaving.reader.readexactly(1000)  # the head has started
            leaving.writer.transport.abort()  # gone, mid-body
        await asyncio.sleep(0.2)
        await conn.send(get("/huge"))
        _, _, body = await conn.response()
    assert body == huge
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    conn.close()


async def sending_a_file_hit(
    make_proxy: MakeProxy, origin: ScriptedOrigin
) -> tuple[Proxy, Conn, bytes]:
    """A proxy with a stored 16 MiB file body, and a connection that has just
    asked for it again (a file hit, more than the socket takes at once)."""
    huge = os.urandom(1 << 20) * 16
    origin.script("/huge", Reply(body=huge, headers=dict(FIELDS)))
    p = await make_proxy(origin_url(origin), memory_max_object=64 << 10)
    conn = await Conn.open(p)
    await warm(conn, "/huge")
    await conn.send(get("/huge"))
    return p, conn, huge


async def test_shutdown_drains_a_file_hit_in_flight(
    make_proxy: MakeProxy, origin: ScriptedOrigin, hit_path: str
) -> None:
    """The drain waits for a body being sent from the protocol, as it waits
    for aiohttp's handlers: a slow reader still gets all of it."""
    p, conn, huge = await sending_a_file_hit(make_proxy, origin)
    head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
    closing = asyncio.create_task(p.close())
    got = bytearray()
    while len(got) < len(huge):  # slowly: the drain must outlast it
        chunk = await asyncio.wait_for(conn.reader.read(1 << 20), 5)
        assert chunk, f"cut off at {len(got)} of {len(huge)}"
        got += chunk
        await asyncio.sleep(0.01)
    await asyncio.wait_for(closing, 20)
    assert head.startswith(b"HTTP/1.1 200") and bytes(got) == huge
    conn.close()


async def test_a_slow_file_hit_outlasts_the_keepalive_timeout(
    make_proxy: MakeProxy, origin: ScriptedOrigin, hit_path: str
) -> None:
    """Keep-alive closes idle connections; one sending a body is not idle."""
    import dataclasses

    from edgeproxy.config import Limits

    huge = os.urandom(1 << 20) * 16
    origin.script("/huge", Reply(body=huge, headers=dict(FIELDS)))
    p = await make_proxy(origin_url(origin), memory_max_object=64 << 10)
    warming = await Conn.open(p)
    await warm(warming, "/huge")
    warming.close()
    edge = p.app[EDGE]  # limits are read as a connection opens: the next one
    cfg = dataclasses.replace(edge.snapshot.config, limits=Limits(keepalive_timeout=0.2))
    edge.snapshot = dataclasses.replace(edge.snapshot, config=cfg)
    conn = await Conn.open(p)
    await conn.send(get("/huge"))
    await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
    got = 0
    while got < len(huge):  # ~0.8 s in all: four keep-alive timeouts
        chunk = await asyncio.wait_for(conn.reader.read(1 << 20), 5)
        assert chunk, f"cut off at {got} of {len(huge)}"
        got += len(chunk)
        await asyncio.sleep(0.05)
    assert got == len(huge)
    conn.close()


async def test_a_client_leaving_during_the_drain_ends_it(
    make_proxy: MakeProxy, origin: ScriptedOrigin, hit_path: str
) -> None:
    """A file hit's client leaves while shutdown waits for it: the drain goes
    on at once (the send is cancelled), nothing raises."""
    p, conn, _ = await sending_a_file_hit(make_proxy, origin)
    await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)  # sending, unread
    loop = asyncio.get_running_loop()
    started = loop.time()
    closing = asyncio.create_task(p.close())
    await asyncio.sleep(0.1)
    assert not closing.done()  # the drain waits for the body being sent
    conn.writer.transport.abort()
    await asyncio.wait_for(closing, 10)
    assert loop.time() - started < 5
