"""A lean HTTP/1.1 client for requests to plain-http origin servers.

aiohttp's client spent more CPU on each origin request (~100 us: request and
response objects, URL handling, timers rescheduled per read) than the rest
of a revalidation. Here a request is one pre-joined head (and its body, if
any, streamed after it) written to a pooled keep-alive connection, and the
response is parsed by llhttp (httptools, the parser uvicorn uses). TLS
servers and server URLs with credentials stay on aiohttp's client
(origin.py picks).

What a response offers is the part of aiohttp's ClientResponse the proxy
uses (`status`, `headers`, `content_length`, `content.iter_chunked`,
`release`, `close`), with the same errors: failures before the head are
EdgeErrors (origin.py's mapping), failures mid-body are
aiohttp.ClientPayloadError or TimeoutError, which fill.py already handles.

Connections (RFC 9112 section 9): kept alive unless either side says close,
at most `limit` per server (waiters queue in order), idle ones reused
newest first and closed after KEEPALIVE seconds unused. A body-less
idempotent request whose server closed the connection before sending a
byte (the keep-alive race, RFC 9112 section 9.3.1) is sent once more on a
new connection; a POST, or any request with a body, never is.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import re
import socket
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.errors import EdgeError, OriginProtocolError, OriginTimeout, OriginUnreachable
from edgeproxy.frozen import set_fields
from edgeproxy.http.cache_status import ProxyError

_NATIVE = __file__.endswith(".so")  # compiled (edgeproxy/frozen.py)

KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default)
HEAD_LIMIT = 256 * 1024  # a response head past this is an error (aiohttp: 64 KiB a field)
HIGH_WATER = 256 * 1024  # buffered body bytes past which the socket is not read
LOW_WATER = 64 * 1024

# RFC 9110 section 5.5: no CR, LF or NUL (or other controls) in a field.
# Control characters a request head may not carry (tab aside), but CR and LF:
# request_head counts those, as it writes one pair a line.
_OTHER_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# RFC 9110 section 9.2.2.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class Body(Protocol):
    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...


class UpstreamResponse(Protocol):
    """What the proxy reads of an origin response: aiohttp's ClientResponse
    and OriginResponse below both are one."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> CIMultiDictProxy[str]: ...
    @property
    def content_length(self) -> int | None: ...
    @property
    def content(self) -> Body: ...
    def release(self) -> Any: ...
    def close(self) -> None: ...


class _Stale(Exception):
    """A reused connection closed before any byte of a response: send again."""


class Server:
    """A server's connections: `limit` at most (0: no limit), idle ones kept."""

    def __init__(self, url: str, limit: int) -> None:
        parts = urlsplit(url)
        assert parts.scheme == "http" and parts.hostname is not None
        self.host = parts.hostname
        self.port = parts.port or 80
        # Host when the request has none (RFC 9110 section 7.2), without the
        # default port, as aiohttp's client sends it.
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.netloc = host if self.port == 80 else f"{host}:{self.port}"
        self.limit = limit
        self.count = 0  # open or opening connections, idle ones included
        self.idle: list[_Connection] = []
        self.waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()

    async def acquire(self, now: float, reuse: bool = True) -> _Connection | None:
        """An idle connection, or None: the caller may open one (counted).

        Without `reuse` (after the server dropped one) every idle one is
        closed: they are as old as the one that failed.
        """
        while self.idle:
            conn = self.idle.pop()
            if reuse and conn.usable(now):
                return conn
            conn.close()
        if not self.limit or self.count < self.limit:
            self.count += 1
            return None
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed over as we were cancelled: pass it on.
                got = waiter.result()
                if got is None:
                    self.freed()  # the slot we were given goes to the next
                else:
                    self.give_back(got, now)
            raise

    def give_back(self, conn: _Connection, now: float) -> None:
        """A connection whose last response ended cleanly and may be reused."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = now
        self.idle.append(conn)
        while self.idle and now - self.idle[0].idle_since > KEEPALIVE:
            self.idle.pop(0).close()

    def freed(self) -> None:
        """A connection closed: its slot goes to the first waiter."""
        self.count -= 1
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.count += 1
                waiter.set_result(None)
                return

    def forget(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.response: OriginResponse | None = None
        self.open = True  # False once closed or lost: its slot is freed once
        self.idle_since = 0.0
        self.sending = False  # a request body is still going out: not reusable yet
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False

    def usable(self, now: float) -> bool:
        t = self.transport
        fresh = now - self.idle_since <= KEEPALIVE
        return self.open and t is not None and not t.is_closing() and fresh

    def close(self, abort: bool = False) -> None:
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        self._gone()

    def _gone(self) -> None:
        if self.open:
            self.open = False
            self.server.forget(self)
            self.server.freed()
        self.resume_writing()  # nobody waits to write to a closed connection

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if self._write_paused and self.open:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            self.close()  # bytes nobody asked for: the connection is not in step
            return
        response.feed(data)

    def eof_received(self) -> bool:
        response = self.response
        if response is not None:
            response.ended(None)
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        response = self.response
        if response is not None:
            response.ended(exc)
        self._gone()


class _Done:
    """What a finished response parses further bytes with: an error."""

    def feed_data(self, data: bytes) -> None:
        raise httptools.HttpParserError("bytes after the end of the response")


_DONE: Any = _Done()


class OriginResponse:
    """One response, parsed as it arrives (httptools callbacks)."""

    def __init__(
        self,
        conn: _Connection,
        method: str,
        read_timeout: float | None,
        name: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._conn: _Connection | None = conn
        self._wire = conn  # kept after the end: bytes past it drop the connection
        self._method = method
        self._name = name
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._fields: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._head: asyncio.Future[None] = loop.create_future()
        self._got_bytes = False
        self.status = 0
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        self.content_length: int | None = None
        self._until_close = False  # no framing: the body ends with the connection
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timeout = read_timeout
        self._last_read = loop.time()
        self._timer: asyncio.TimerHandle | None = (
            loop.call_later(read_timeout, self._check_timeout) if read_timeout else None
        )
        self._upload: asyncio.Task[None] | None = None
        self._retry = False  # replay on a new connection if closed before a byte (_Stale)

    @property
    def content(self) -> OriginResponse:
        """aiohttp's `response.content`: here the response itself reads the body
        (a property, not `self.content = self`: no reference cycle, so a
        finished response is freed by its refcount, not by the GC)."""
        return self

    # -- bytes in (from _Connection) -----------------------------------------

    def feed(self, data: bytes) -> None:
        self._got_bytes = True
        if self._timer is not None:
            self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            if self._complete:
                return  # bytes after the response: the connection is already dropped
            if self._head.done():
                self._fail(aiohttp.ClientPayloadError(f"invalid body from {self._name}: {e}"))
            else:
                self._fail(OriginProtocolError(f"invalid response from {self._name}: {e}"))
            return
        if not self._head.done() and not self._complete:
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_LIMIT:
                too_long = f"invalid response from {self._name}: head too long"
                self._fail(OriginProtocolError(too_long))

    def progress(self) -> None:
        """Request body bytes went out: the read timeout counts from now."""
        if self._timer is not None:
            self._last_read = self._loop.time()

    def ended(self, exc: Exception | None) -> None:
        """The connection closed (EOF or lost) while this response was on it."""
        if self._complete:
            return
        if self._head.done() and self._until_close and exc is None:
            self._finish(keep_alive=False)
            return
        if not self._head.done():
            if not self._got_bytes and self._retry:
                self._fail(_Stale())
            else:
                self._fail(
                    OriginUnreachable(
                        f"origin {self._name} closed the connection",
                        ProxyError.CONNECTION_TERMINATED,
                    )
                )
            return
        cut = f"origin {self._name} closed the connection mid-body"
        self._fail(aiohttp.ClientPayloadError(cut))

    # -- httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._wire.close()  # a second response nobody asked for

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._fields = []  # informational (RFC 9110 section 15.2): the real one follows
            return
        self.status = status
        headers = CIMultiDict(self._fields)
        self.headers = CIMultiDictProxy(headers)
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if length is not None and not chunked:
            try:
                self.content_length = int(length)
            except ValueError:
                self.content_length = None
        no_body = self._method == "HEAD" or status in (101, 204, 304)
        self._until_close = not no_body and not chunked and length is None
        self._head.set_result(None)
        if no_body:
            # RFC 9112 section 6.3: no content whatever the fields say. A fresh
            # parser is made for the next request, so this one's idea of a
            # HEAD response's body does not matter.
            self._finish(keep_alive=status != 101 and self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self._conn is not None:
            self._paused = True
            t = self._conn.transport
            if t is not None:
                t.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0 or self._complete:
            return  # the end of an informational response
        self._finish(keep_alive=self._parser.should_keep_alive())

    # -- state changes ---------------------------------------------------------

    def _finish(self, keep_alive: bool) -> None:
        self._complete = True
        self._stop_timer()
        self._parser = _DONE  # it refers to us: a cycle until dropped
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.response = None
            if self._paused:
                # What is buffered is ours; the connection reads for its next user.
                self._paused = False
                if conn.transport is not None:
                    conn.transport.resume_reading()
            if keep_alive and conn.open and not conn.sending:
                conn.server.give_back(conn, self._loop.time())
            else:
                conn.close()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._complete:
            return
        self._complete = True
        self._error = exc
        self._stop_timer()
        self._parser = _DONE
        if self._upload is not None and not self._upload.done():
            self._upload.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.response = None
            conn.close(abort=True)
        if not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()  # retrieved: a caller that left won't be warned about it
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_timeout(self) -> None:
        assert self._timeout is not None
        self._timer = None
        if self._complete:
            return
        idle = self._loop.time() - self._last_read
        if self._paused or idle < self._timeout:
            # Waiting on our own reader is not the origin's delay (as aiohttp).
            wait = self._timeout if self._paused else self._timeout - idle
            self._timer = self._loop.call_later(wait, self._check_timeout)
            return
        if self._head.done():
            self._fail(TimeoutError(f"origin {self._name} sent nothing for {self._timeout} s"))
        else:
            self._fail(OriginTimeout(f"origin {self._name} sent no response in time"))

    # -- what the proxy uses ---------------------------------------------------

    @property
    def arrived(self) -> bool:
        """The whole response is in (its body buffered, none of it read
        yet or not): reading it will not wait."""
        return self._complete and self._error is None

    def iter_chunked(self, n: int) -> _Chunks:
        """The body as it arrives, in pieces of at most `n` bytes (an
        iterator class, not an async generator: mypyc compiles those not)."""
        return _Chunks(self, n)

    async def next_chunk(self, n: int) -> bytes | None:
        """The next piece of the body (at most `n` bytes) once there is one;
        None at its end."""
        chunks = self._chunks
        while True:
            if chunks:
                chunk = chunks.popleft()
                if len(chunk) > n:
                    chunks.appendleft(chunk[n:])
                    chunk = chunk[:n]
                self._buffered -= len(chunk)
                if self._paused and self._buffered < LOW_WATER:
                    self._paused = False
                    self._last_read = self._loop.time()
                    if self._conn is not None and self._conn.transport is not None:
                        self._conn.transport.resume_reading()
                return chunk
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def release(self) -> None:
        """Done with the response: a connection still mid-body is closed."""
        if not self._complete:
            self._fail(aiohttp.ClientPayloadError("response released before its end"))

    def close(self) -> None:
        self.release()


class _Chunks:
    """`async for chunk in response.iter_chunked(n)`: OriginResponse.next_chunk
    until the end."""

    __slots__ = ("_n", "_response")

    def __init__(self, response: OriginResponse, n: int) -> None:
        self._response = response
        self._n = n

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._response.next_chunk(self._n)
        if chunk is None:
            raise StopAsyncIteration
        return chunk


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One request as it goes out (and, once, out again)."""

    method: str
    head: bytes
    body: AsyncIterable[bytes] | None
    chunked: bool
    retry: bool
    name: str
    connect_timeout: float | None
    read_timeout: float | None

    def __init__(
        self,
        method: str,
        head: bytes,
        body: AsyncIterable[bytes] | None,
        chunked: bool,
        retry: bool,
        name: str,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> None:
        if not _NATIVE:  # edgeproxy/frozen.py
            set_fields(
                self,
                (
                    "method",
                    "head",
                    "body",
                    "chunked",
                    "retry",
                    "name",
                    "connect_timeout",
                    "read_timeout",
                ),
                (method, head, body, chunked, retry, name, connect_timeout, read_timeout),
            )
            return
        self.method = method  # type: ignore[misc]
        self.head = head  # type: ignore[misc]
        self.body = body  # type: ignore[misc]
        self.chunked = chunked  # type: ignore[misc]
        self.retry = retry  # type: ignore[misc]
        self.name = name  # type: ignore[misc]
        self.connect_timeout = connect_timeout  # type: ignore[misc]
        self.read_timeout = read_timeout  # type: ignore[misc]


class OriginConnections:
    """Every server's pool of connections, for one event loop."""

    def __init__(self) -> None:
        self.servers: dict[str, Server] = {}

    def server(self, url: str, limit: int) -> Server:
        found = self.servers.get(url)
        if found is None:
            found = self.servers[url] = Server(url, limit)
        found.limit = limit  # a reload may have changed it
        return found

    async def request(
        self,
        url: str,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        *,
        name: str,
        limit: int,
        connect_timeout: float | None,
        read_timeout: float | None,
        body: AsyncIterable[bytes] | None = None,
    ) -> OriginResponse:
        """Send a request; return once the response head is in (its body, if
        any, may still be going out).

        `limit`: connections to this server at most (0: no limit). A body is
        sent with the Content-Length in `headers`, else chunked.
        """
        server = self.server(url, limit)
        out = _Outgoing(
            method=method,
            head=request_head(method, target, headers, server.netloc, body is not None),
            body=body,
            chunked=body is not None and "content-length" not in headers,
            # RFC 9112 section 9.3.1: only an idempotent request may be sent
            # again, and only one whose body (none) can be.
            retry=body is None and method in IDEMPOTENT,
            name=name,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        try:
            return await self._send(server, out)
        except _Stale:
            # Either nothing was written (a connection handed over closed in
            # between: any request may go, its body still unread) or a retry-
            # able request got no byte back: once more, on a new connection.
            pass
        try:
            return await self._send(server, dataclasses.replace(out, retry=False), fresh=True)
        except _Stale as e:
            raise OriginUnreachable(
                f"origin {name} closed the connection", ProxyError.CONNECTION_TERMINATED
            ) from e

    async def _send(self, server: Server, out: _Outgoing, fresh: bool = False) -> OriginResponse:
        loop = asyncio.get_running_loop()
        conn = await server.acquire(loop.time(), reuse=not fresh)
        if conn is None:
            conn = await _connect(loop, server, out.name, out.connect_timeout)
        elif not conn.open:
            raise _Stale()  # handed over, then closed before we could use it
        assert conn.transport is not None
        response = OriginResponse(conn, out.method, out.read_timeout, out.name, loop)
        response._retry = out.retry
        conn.response = response
        try:
            conn.transport.write(out.head)
            if out.body is not None:
                conn.sending = True
                upload = _upload(conn, response, out.body, out.chunked)
                response._upload = loop.create_task(upload)
            await response._head
        except (_Stale, EdgeError):
            raise
        except BaseException:
            response._fail(asyncio.CancelledError())  # mid-request: not reusable
            raise
        return response

    def close(self) -> None:
        for server in self.servers.values():
            for conn in list(server.idle):
                conn.close()
        self.servers.clear()


async def _upload(
    conn: _Connection, response: OriginResponse, body: AsyncIterable[bytes], chunked: bool
) -> None:
    """The request's body, while the response may already be arriving."""
    transport = conn.transport
    assert transport is not None
    try:
        async for chunk in body:
            if not conn.open:
                return  # the response ended the exchange (an early error answer)
            if not chunk:
                continue
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            response.progress()
            await conn.drain()
        if chunked and conn.open:
            transport.write(b"0\r\n\r\n")
    except asyncio.CancelledError:
        raise
    except Exception as e:  # the client's body broke off: so does this request
        response._fail(e)
        conn.close(abort=True)
        return
    finally:
        conn.sending = False


async def _connect(
    loop: asyncio.AbstractEventLoop, server: Server, name: str, within: float | None
) -> _Connection:
    """A new connection, its slot already counted (freed on failure)."""
    conn = _Connection(server)
    try:
        async with asyncio.timeout(within or None):
            transport, _ = await loop.create_connection(lambda: conn, server.host, server.port)
    except TimeoutError as e:
        conn.close(abort=True)
        timed_out = f"connecting to {name}: timed out"
        raise OriginTimeout(timed_out, ProxyError.CONNECTION_TIMEOUT) from e
    except socket.gaierror as e:
        conn.close(abort=True)
        raise OriginUnreachable(f"resolving {name}: {e}", ProxyError.DNS_ERROR) from e
    except OSError as e:
        conn.close(abort=True)
        raise OriginUnreachable(
            f"connecting to {name}: {e.strerror or e}", ProxyError.CONNECTION_REFUSED
        ) from e
    except BaseException:
        conn.close(abort=True)  # frees the slot once, whatever the transport does later
        raise
    conn.transport = transport  # uvloop calls connection_made later
    return conn


def request_head(
    method: str, target: str, headers: CIMultiDict[str], netloc: str, body: bool = False
) -> bytes:
    """The request line and fields (RFC 9112 sections 3 and 5), as sent.

    A body without a Content-Length goes chunked (RFC 9112 section 7.1); no
    body, for a method that usually has one, is `Content-Length: 0` (RFC 9110
    section 8.6), as aiohttp sends. Raises ValueError for a control
    character in any of them (a field that would split the request), as
    aiohttp's client does.
    """
    parts = [method, " ", target, " HTTP/1.1\r\n"]
    lines = 2 + len(headers)  # the CRLFs we write: request line, fields, the end
    if "host" not in headers:
        parts += ("Host: ", netloc, "\r\n")
        lines += 1
    if "content-length" not in headers:
        if body:
            parts.append("Transfer-Encoding: chunked\r\n")
            lines += 1
        elif method not in _NO_BODY_METHODS:
            parts.append("Content-Length: 0\r\n")
            lines += 1
    for name, value in headers.items():
        parts += (name, ": ", value, "\r\n")
    parts.append("\r\n")
    text = "".join(parts)
    # Checked on the whole head at once: the CRs and LFs are ours alone (one
    # of each a line), and no other control character came in.
    if (
        text.count("\n") != lines
        or text.count("\r") != lines
        or _OTHER_CONTROL.search(text) is not None
        or " " in method
        or " " in target
    ):
        raise ValueError("forbidden control character in the request to the origin")
    return text.encode("utf-8", "surrogateescape")
