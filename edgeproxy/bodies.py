"""Stored bodies on the wire: the bytes of a span to the client, from memory in
one write or from the body's file by sendfile (else read off the loop).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import IO, cast

from aiohttp import web

from edgeproxy.responses import NoClient, RelayedResponse
from edgeproxy.store.base import Body
from edgeproxy.store.pool import StorePool

CHUNK = 65536


class ShortBody(Exception):
    """A stored body file ended before a range's last byte (damaged or truncated)."""


def _pread(f: IO[bytes], offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


async def _read_span(body: Body, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes start..end (inclusive) of a stored body: sliced from memory, or
    read from its file off the loop, CHUNK at a time (never the whole file)."""
    if body.data is not None:
        yield body.data[start : end + 1]
        return
    assert body.file is not None
    f = body.file
    loop = asyncio.get_running_loop()
    pos, stop = start, end + 1
    while pos < stop:
        chunk = await loop.run_in_executor(None, _pread, f, pos, min(CHUNK, stop - pos))
        if not chunk:
            raise ShortBody(f"ended at {pos} of {stop}")
        pos += len(chunk)
        yield chunk


async def send_span(
    request: web.Request, resp: web.StreamResponse, body: Body, start: int, end: int
) -> None:
    """Bytes start..end (inclusive) of a stored body to the client, after its
    head: from memory in one write, or from its file with sendfile (zero-copy:
    the bytes never enter Python), else (TLS, no socket) read CHUNK at a time."""
    if isinstance(resp, NoClient):
        return
    if body.data is not None:
        data = body.data if start == 0 and end == len(body.data) - 1 else body.data[start : end + 1]
        await resp.write(data)
        return
    assert body.file is not None
    transport = request.transport
    sock = None if transport is None else transport.get_extra_info("socket")
    if (
        transport is None
        or sock is None
        or transport.get_extra_info("sslcontext") is not None
        or not hasattr(os, "sendfile")
    ):
        async for chunk in _read_span(body, start, end):
            await resp.write(chunk)
        return
    sent = await send_file(transport, body.file.fileno(), start, end - start + 1)
    if isinstance(resp, RelayedResponse):
        resp.body_bytes += sent


# sendfile calls and file closes: a lean pool (store/pool.py), not the
# default executor: a hit on a file body made two hops through it.
_SENDERS = StorePool(4, "edgeproxy-send")


async def send_file(transport: asyncio.BaseTransport, file_fd: int, offset: int, count: int) -> int:
    """os.sendfile `count` bytes of `file_fd` from `offset` to the connection's socket.

    Neither asyncio's `loop.sendfile` (uvloop has none) nor aiohttp's
    FileResponse (which falls back to reads there) will do on both loops, so:
    the bytes already queued in the transport (the head) go out first; each
    sendfile call runs on the thread pool (it may read the disk: never on the
    loop) on a dup of the socket, and waiting for room in the socket buffer
    happens on the loop (add_writer on the dup; the transport owns the fd
    itself). The dup is taken at once, while the transport is known open, and
    is all we write to: if the client leaves and the transport closes its
    fd, whose number may be reused by another connection at once, the dup
    still names this socket, and the call fails instead of writing into
    someone else's.
    """
    # uvloop's transports are WriteTransports in all but their class (no isinstance).
    writer = cast(asyncio.WriteTransport, transport)
    sock = transport.get_extra_info("socket")
    if transport.is_closing() or sock is None:
        raise ConnectionResetError("client connection closed")
    try:
        fd = os.dup(sock.fileno())
    except OSError as e:
        raise ConnectionResetError(f"client connection closed: {e}") from e
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        # The head (and any multipart part header) first. Bounded: each turn
        # waits for the socket to take bytes, and the transport writes what
        # it holds as soon as it can.
        while writer.get_write_buffer_size() > 0:
            if transport.is_closing():
                raise ConnectionResetError("client connection closed")
            await _writable(loop, fd)
            await asyncio.sleep(0)  # the transport's own write callback runs first
        while sent < count:
            if transport.is_closing():
                raise ConnectionResetError("client connection closed")
            try:
                n = await _SENDERS.run(os.sendfile, fd, file_fd, offset + sent, count - sent)
            except (BlockingIOError, InterruptedError):
                await _writable(loop, fd)
                continue
            except (BrokenPipeError, ConnectionError) as e:
                raise ConnectionResetError(str(e)) from e
            if n == 0:
                raise ShortBody(f"ended at {offset + sent} of {offset + count}")
            sent += n
    finally:
        os.close(fd)
    return sent


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until the socket behind `fd` can take more bytes (or has failed)."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def close_body(body: Body) -> None:
    """Close a stored body's file (opened at lookup; the reader closes it)."""
    if body.file is not None:
        await _SENDERS.run(body.file.close)
