"""Assembly: config -> aiohttp application with its lifecycle (cleanup_ctx)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, cast

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.http_parser import HttpRequestParserPy, RawRequestMessage
from aiohttp.web_request import BaseRequest

from edgeproxy import origin, proxy, wire
from edgeproxy.admin import AdminSetupError, build_admin_app, check_bind, read_token
from edgeproxy.bodies import ShortBody
from edgeproxy.cluster import Cluster
from edgeproxy.config import Config, Limits
from edgeproxy.gctune import tune_gc
from edgeproxy.h1client import OriginConnections
from edgeproxy.http.request_head import parse_request_head
from edgeproxy.metrics import Metrics
from edgeproxy.policy.entry import Entry
from edgeproxy.reload import Loader, Reloader
from edgeproxy.state import EDGE, EdgeState, Snapshot
from edgeproxy.store.base import Store, StoreError
from edgeproxy.store.disk import DiskStore
from edgeproxy.store.tiered import TieredStore
from edgeproxy.upstream import Prefetched
from edgeproxy.wire_miss import Miss
from edgeproxy.wire_revalidation import Revalidation
from edgeproxy.workers import EXIT_SETUP, RELOAD_OTHERS, SetupError, Supervisor

log = logging.getLogger("edgeproxy")


def snapshot(config: Config) -> Snapshot:
    return Snapshot(config=config, policy=config.cache.policy())


async def open_store(config: Config) -> Store:
    """diskcache, behind the per-worker hot tier unless `cache.memory_size` is 0.

    Never fails on the disk: a damaged database is moved aside, and a cache
    that can't be opened (unwritable, full) starts degraded, passing through
    until it can (store/disk.py). Without a usable directory the hot tier
    (its generation file lives there) is off in this worker.
    """
    cache = config.cache
    disk = await DiskStore.open(cache.directory, size_limit=cache.size_limit)
    if cache.memory_size <= 0:
        return disk
    if disk.health().state == "degraded":
        log.error("hot tier off: the cache directory is not usable (restart once it is)")
        return disk
    try:
        return await TieredStore.open(
            disk, max_bytes=cache.memory_size, max_object=cache.memory_max_object
        )
    except StoreError as e:  # TieredStore.open closed the disk store
        log.error("hot tier off: %s (restart once the directory is writable)", e)
        return await DiskStore.open(cache.directory, size_limit=cache.size_limit)


def build_app(
    config: Config,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The public proxy application. `clock` (HTTP time) and `monotonic` (pool
    time: ejections, health checks) are injectable for tests."""
    app = web.Application(client_max_size=0, handler_args={"max_field_size": 65536})
    metrics = Metrics.for_process()  # this app's own registry, or the workers' files

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = await open_store(config)
        disk = store.disk if isinstance(store, TieredStore) else store
        if isinstance(disk, DiskStore):
            metrics.watch_evictions(disk)
        max_conns = config.origin.max_connections if config.origin else 100
        session = origin.make_session(max_conns)
        conns = OriginConnections()
        edge = EdgeState(
            snapshot(config), store, session, clock, monotonic, metrics=metrics, conns=conns
        )
        app[EDGE] = edge
        checks = asyncio.get_running_loop().create_task(
            origin.health_checks(edge), name="health checks"
        )
        try:
            yield
        finally:
            # Our own tasks first (background revalidations use the session and store).
            checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checks
            await edge.stop_tasks()
            await session.close()
            conns.close()
            await store.close()
            metrics.flush()  # a stopping worker's last counts reach its file

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app


class _HeadRefused(BadHttpMessage):
    """A request head refused with a status other than aiohttp's blanket 400."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _StrictRequestParser(HttpRequestParserPy):
    """aiohttp's pure-Python request parser, with the statuses RFC 9112 asks for.

    Too long a request line is 414 (RFC 9112 section 3, RFC 9110 section
    15.5.15); too big or too many header fields 431 (RFC 6585 section 5);
    a major version other than 1 is 505 (RFC 9110 section 15.6.6): HTTP/2
    never arrives in an HTTP/1.1 request line.
    """

    def feed_data(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
        # The line is appended to _lines only once it fits, so an empty
        # _lines means the request line was the one too long.
        try:
            return super().feed_data(data, *args, **kwargs)
        except LineTooLong as e:
            if not self._lines:
                raise _HeadRefused(
                    414, f"request line longer than {self.max_line_size} bytes"
                ) from e
            raise _HeadRefused(431, f"a header field over {self.max_field_size} bytes") from e
        except BadHttpMessage as e:
            if e.message == "Too many headers received":
                raise _HeadRefused(431, f"more than {self.max_headers} header fields") from e
            raise

    def parse_message(self, lines: list[bytes]) -> RawRequestMessage:
        msg = super().parse_message(lines)
        if msg.version.major != 1:
            raise _HeadRefused(505, f"HTTP/{msg.version.major}.{msg.version.minor}")
        if msg.method == "CONNECT" or msg.path == "*":
            # Authority- and asterisk-form (RFC 9112 sections 3.2.3-3.2.4): an
            # edge tunnels nothing, and "*" names no resource of an origin.
            raise _HeadRefused(400, "only origin-form and absolute-form targets are served")
        return msg

    def head_pending(self) -> bool:
        """Part of a request head is in (a message started, its body not yet)."""
        return bool(self._lines or self._tail) and self._payload_parser is None

    def body_pending(self) -> bool:
        return self._payload_parser is not None


_REFUSED_LINGER = 2.0  # seconds a refused connection stays for the client to read its 503

_REASONS = {400: "Bad Request", 414: "URI Too Long", 431: "Request Header Fields Too Large"}
_REASONS[505] = "HTTP Version Not Supported"


class _AnyMethodProtocol(web_protocol.RequestHandler):
    """aiohttp's request handler, parsing request heads with its pure-Python parser.

    The C parser (llhttp) rejects any method outside its fixed list with a
    400, but a method is any token (RFC 9110 section 9.1) and a proxy forwards
    extension methods it doesn't know. The Python parser accepts every token;
    it costs ~20us more per request head, which is worth forwarding
    everything. tests/e2e/test_forwarding.py guards this against aiohttp
    changes.

    Hostile clients (tests/e2e/test_hostile_requests.py), per `Limits`:
    a malformed head gets its status (400/414/431/505) with a short reason
    and the connection closed, logged as one WARNING line, no traceback; a
    head must be complete within `header_timeout` of its first byte (else
    408 and close: a byte-a-second dribble is not progress), a request body
    may not go `body_timeout` without a byte (else the connection is
    closed and the handler's read fails), and an idle connection closes
    after `keepalive_timeout`.

    Connections past `max_connections` open in this process (idle keep-alive
    ones count) are refused, not queued: a 503 with Retry-After is written at
    once, without reading anything, our side is shut down, and the socket
    closes when the client closes it (or after `_REFUSED_LINGER` seconds).
    Queueing would leave them in the kernel's backlog, invisible and
    unbounded in time; a 503 tells the client (or the load balancer in
    front) to go elsewhere or retry, and costs nearly nothing.
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        auto_decompress: bool = True,
        limits: Limits | None = None,
        **kwargs: Any,
    ) -> None:
        lim = limits or Limits()
        kwargs.update(
            max_line_size=lim.max_request_line,
            max_field_size=lim.max_header_size,
            max_headers=lim.max_headers,
            keepalive_timeout=lim.keepalive_timeout,
        )
        super().__init__(manager, loop=loop, auto_decompress=auto_decompress, **kwargs)
        self._limits = lim
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        queue = getattr(web_protocol, "MAX_MSG_QUEUE_SIZE", None)
        self._strict = _StrictRequestParser(
            self,
            loop,
            self._read_bufsize,
            max_line_size=self.max_line_size,
            max_field_size=self.max_field_size,
            max_headers=self.max_headers,
            payload_exception=web_protocol.RequestPayloadError,
            auto_decompress=auto_decompress,
            **({} if queue is None else {"max_msg_queue_size": queue}),
        )
        self._parser = self._strict
        self._refused: asyncio.TimerHandle | None = None  # set: over the connection cap
        self._edge: EdgeState | None = None  # set: the wire fast path may answer (wire.py)
        # A wire.FileHit being sent, or a Revalidation or Miss (wire_*.py) under
        # way (`_wire_job`: which), in `_wire_task`.
        self._wire_task: asyncio.Task[None] | None = None
        self._wire_job: wire.FileHit | Revalidation | Miss | None = None
        # What a wire job leaves the full path with a request (take_handover).
        self._prefetched: Prefetched | None = None
        self._looked_up: tuple[str, list[Entry]] | None = None
        self._held = b""  # what the client sent after it
        self._client: str | None = None  # the peer's address, for the access log

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cap = self._limits.max_connections
        manager = self._manager
        if cap and manager is not None and len(manager.connections) >= cap:
            self._refuse_connection(cast(asyncio.Transport, transport), manager, cap)
            return
        super().connection_made(transport)
        self._edge = getattr(manager, "edge", _no_edge)()
        if self._edge is not None:
            peer = transport.get_extra_info("peername")
            # As aiohttp's request.remote reads it.
            self._client = str(peer[0]) if isinstance(peer, list | tuple) else None

    def _refuse_connection(self, transport: asyncio.Transport, manager: Any, cap: int) -> None:
        """503 (RFC 9110 section 15.6.4) on a connection past the cap; never
        registered with the server, so it holds no request handler."""
        refused = getattr(manager, "refused", 0) + 1
        manager.refused = refused
        if refused % 1000 == 1:  # a flood must not flood the log
            log.warning("%d open connections: refusing new ones (%d so far)", cap, refused)
        body = b"Service Unavailable: too many open connections\n"
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        if transport.can_write_eof():
            transport.write_eof()  # the client reads the 503, then our FIN
        # Closing at once could reset the connection under a request the
        # client is still sending, and lose the 503 with it: linger a little.
        self._refused = self._loop.call_later(_REFUSED_LINGER, transport.close)
        self._refused_transport = transport

    def eof_received(self) -> None:
        if self._refused is not None:
            self._refused_transport.close()  # the client is done: so are we
            return
        super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return  # whatever a refused client sends is dropped
        if self._wire_task is not None:
            self._held += data  # after the request being answered (reading is paused)
            return
        if self._edge is not None and self._idle():
            data = self._answer_on_wire(self._edge, data)
            if not data:
                return
        self._to_aiohttp(data)

    def _to_aiohttp(self, data: bytes) -> None:
        """aiohttp's parser and handler take `data`; the head and body timers follow."""
        super().data_received(data)
        if self._force_close or self._close or self.transport is None:
            self._cancel_timers()
            return
        loop = self._loop
        if self._strict.head_pending():
            if self._head_timer is None:  # from the head's first byte, not reset by more
                self._head_timer = loop.call_later(
                    self._limits.header_timeout, self._head_timed_out
                )
        elif self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._strict.body_pending():  # reset by every byte: an idle gap, not a total
            self._body_timer = loop.call_later(self._limits.body_timeout, self._body_timed_out)

    def _idle(self) -> bool:
        """Between requests: aiohttp has finished the last one it was given
        (its response is written), holds no part of another, and the client
        reads what we write. aiohttp's own task may not have come back for
        the next request yet (a task resumes a loop turn later): what is left
        for it to do then is keep-alive bookkeeping, or closing a connection
        whose last response said so; a response written meanwhile goes out
        before the close."""
        return (
            self._wire_task is None
            and not self._messages
            and not self._request_in_progress
            and self._payload_parser is None
            and not self._upgraded
            and not self._force_close
            and not self._close
            and not self._paused
            and not self._strict.head_pending()
            and self.transport is not None
        )

    def _answer_on_wire(self, edge: EdgeState, data: bytes) -> bytes:
        """Write the answers wire.answer has for the complete heads at the
        start of `data`; the rest (from the first head it leaves, or a
        partial one) is returned for aiohttp, which reads it as if it had
        come alone. Writing stops when the transport asks us to pause: the
        rest then waits on aiohttp's flow control."""
        lim = self._limits
        transport = self.transport
        assert transport is not None
        start = 0
        while start < len(data):
            head = parse_request_head(
                data, start, lim.max_request_line, lim.max_header_size, lim.max_headers
            )
            if head is None:
                break
            try:
                out = wire.answer(edge, head, self._client)
            except Exception:
                # A bug here must not cost the request: the full path takes it.
                log.exception(
                    "wire fast path failed on %s; answering it the usual way", head.target
                )
                out = None
            if out is None:
                break
            if not isinstance(out, bytes):
                # Answered by a task; whatever follows waits for it, unread.
                self._held = data[head.end :]
                self._wire_job = out
                self._wire_task = self._loop.create_task(
                    self._run_wire_job(out, data[start : head.end])
                )
                self._pause_transport_reading()  # the transport only: the parser is idle
                self._served_here()
                return b""
            transport.write(out)
            start = head.end
            if self._paused:
                break
        if not start:
            return data
        self._served_here()
        return data[start:]

    def _served_here(self) -> None:
        """Requests answered here count for keep-alive as aiohttp's do."""
        if self._keepalive_timeout > 0:
            close_at = self._loop.time() + self._keepalive_timeout
            self._next_keepalive_close_time = close_at
            if self._keepalive_handle is None:
                self._keepalive_handle = self._loop.call_at(close_at, self._process_keepalive)
        manager = self._manager
        if manager is not None:
            manager.requests_count += 1

    async def _run_wire_job(self, job: wire.FileHit | Revalidation | Miss, raw: bytes) -> None:
        """Send a file-backed hit or run a revalidation, then go on with what
        the client sent after it. When it did not answer (a file body gone
        before anything was written, an origin answer other than a 304),
        the full path answers the request (`raw`) instead, taking the
        origin's answer if it got one (`take_handover`)."""
        transport = self.transport
        answered = False
        try:
            assert transport is not None
            answered = await job.send(transport)
        except ConnectionResetError:
            answered = True  # the client left: nothing more to do for it
        except ShortBody as e:
            answered = True
            log.warning("%s: %s; dropping the connection", raw[:200], e)
            if self.transport is not None:
                self.transport.abort()  # a short body would look complete
        except Exception:
            answered = True  # the head may be out: the connection can't go on
            log.exception("wire fast path failed answering %r", raw[:200])
            if self.transport is not None:
                self.transport.abort()
        finally:
            self._wire_task = self._wire_job = None
            held, self._held = self._held, b""
        pre = None if answered or isinstance(job, wire.FileHit) else job.prefetched
        looked = job.looked_up if not answered and isinstance(job, Miss) else None
        if self.transport is None or self.transport.is_closing():
            if pre is not None:
                pre.discard()  # the client left: nobody to relay it to
            return
        self._served_here()
        if not self._reading_paused and not self._buffer_paused:
            self._resume_transport_reading()
        if not answered:  # the full path answers it (and what came after)
            self._prefetched, self._looked_up = pre, looked
            self._to_aiohttp(raw + held)
        elif held:
            self.data_received(held)

    def take_handover(self) -> tuple[Prefetched | None, tuple[str, list[Entry]] | None]:
        """For the handler of the request just handed to aiohttp
        (proxy.handle), once: the origin's answer a wire job got for it,
        and the store's lookup (key, entries) a wire Miss made."""
        handed = self._prefetched, self._looked_up
        self._prefetched = self._looked_up = None
        return handed

    def _process_keepalive(self) -> None:
        if self._wire_task is not None:  # answering: not idle
            self._keepalive_handle = self._loop.call_at(
                self._loop.time() + self._keepalive_timeout, self._process_keepalive
            )
            return
        super()._process_keepalive()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp's signature
        """aiohttp's drain, after a file hit or revalidation under way here
        (it knows only its own handlers)."""
        task = self._wire_task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except asyncio.CancelledError:
                # The send was cancelled (its client left): go on with the
                # drain, unless it is the drain itself being cancelled.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except TimeoutError:
                pass  # past the drain: aiohttp's shutdown closes the connection
        await super().shutdown(timeout)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or not self._strict.head_pending():
            return
        if self._request_in_progress or self._messages:
            # A pipelined head waits on us, not on the client: count from later.
            self._head_timer = self._loop.call_later(
                self._limits.header_timeout, self._head_timed_out
            )
            return
        log.warning("request head not complete in %gs: closing", self._limits.header_timeout)
        # RFC 9110 section 15.5.9: 408 on a connection the server closes.
        body = b"Request Timeout: request head not received in time\n"
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.force_close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport is None or not self._strict.body_pending():
            return
        if self._reading_paused:
            # Back-pressure from our side (the handler isn't reading): not the client's stall.
            self._body_timer = self._loop.call_later(
                self._limits.body_timeout, self._body_timed_out
            )
            return
        log.warning("request body idle for %gs: closing", self._limits.body_timeout)
        # The handler's pending read fails with a connection error (connection_lost).
        self.force_close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused is not None:
            self._refused.cancel()
            return  # never registered: nothing of aiohttp's to tear down
        self._cancel_timers()
        if self._wire_task is not None and isinstance(self._wire_job, wire.FileHit):
            self._wire_task.cancel()  # nobody left to send to (its body is closed)
        # A revalidation goes on: the store and the requests collapsed on it
        # want its answer. One handed over but never taken goes back.
        pre, self._prefetched = self._prefetched, None
        if pre is not None:
            pre.discard()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A malformed head: its status and one short line, logged without a
        traceback (a hostile client must not flood the log). Anything else
        (a handler bug) goes to aiohttp's own, traceback and all."""
        if not isinstance(exc, BadHttpMessage) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, _HeadRefused):
            status = exc.status
        reason = exc.message if len(exc.message) <= 160 else exc.message[:160] + "..."
        peer = request.transport.get_extra_info("peername") if request.transport else None
        log.warning("refused a request from %s: %d %s", peer and peer[0], status, reason)
        title = _REASONS.get(status, "Bad Request")
        resp = web.Response(status=status, text=f"{title}: {reason}\n")
        resp.force_close()
        return resp


def _no_edge() -> EdgeState | None:
    return None


class _AnyMethodServer(web.Server):
    limits: Callable[[], Limits] = Limits
    edge: Callable[[], EdgeState | None] = staticmethod(_no_edge)

    def __call__(self) -> web_protocol.RequestHandler:
        return _AnyMethodProtocol(self, loop=self._loop, limits=self.limits(), **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _AnyMethodServer  # same state, our protocol factory
        app = self.app

        def limits() -> Limits:
            # Read per connection: a reload applies to new connections.
            return app[EDGE].snapshot.config.limits if EDGE in app else Limits()

        def edge() -> EdgeState | None:
            # The proxy's state once it started; other apps (test origins): none.
            return app.get(EDGE)

        server.limits = limits  # type: ignore[attr-defined]
        server.edge = edge  # type: ignore[attr-defined]
        return server


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The public listener's runner; `run` and the e2e harness both use it.

    Handlers are not cancelled when a client disconnects: the proxy notices
    on its next write and aborts what it was storing. Per-connection limits
    (sizes, timeouts) come from the app's config (`limits`), read as each
    connection opens; an app without one (the test origin) gets the defaults.
    """
    return _Runner(app, handler_cancellation=False, access_log=None, **kwargs)


async def serve_app(app: web.Application, host: str, port: int) -> None:
    """One app on one address until cancelled (the demo origin uses it)."""
    runner = make_runner(app, handle_signals=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, on uvloop when it is installed (the `speed` extra)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    log.debug("using uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def run_app(app: web.Application, host: str, port: int) -> None:
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        run_loop(serve_app(app, host, port))


def apply_config(edge: EdgeState) -> Callable[[Config], None]:
    """The reloader's swap: one reference, read once per request."""

    def apply(config: Config) -> None:
        edge.snapshot = snapshot(config)

    return apply


class _WorkerReloader(Reloader):
    """A worker's reloader: a `POST /reload` it answered reaches the other
    workers through the supervisor (workers.py). SIGHUPs and file edits
    already reach every worker, so they are not passed on."""

    async def reload(self, trigger: str) -> bool:
        ok = await super().reload(trigger)
        if ok and trigger == ADMIN_RELOAD:
            os.kill(os.getppid(), RELOAD_OTHERS)
        return ok


ADMIN_RELOAD = "admin POST /reload"  # the trigger admin.post_reload passes


async def serve(
    config: Config,
    load: Loader | None,
    config_path: str | None,
    *,
    worker_of: int | None = None,
) -> None:
    """Run the public and admin listeners until SIGINT/SIGTERM, then drain.

    SIGHUP reloads the config; so do `POST /reload` and edits to the file.
    On SIGTERM/SIGINT the public listener closes at once (new connections
    are refused), in-flight requests get `config.drain_timeout` seconds to
    finish (then they are cancelled: a cancelled fill aborts, nothing
    half-written is committed), and the function returns.

    `worker_of` (the supervisor's pid) makes this a worker (workers.py): the
    listeners share their ports (SO_REUSEPORT), an admin `POST /reload` is
    passed on, and the worker stops when its supervisor is gone.
    """
    token = read_token(config.admin)
    check_bind(config.admin, token)
    if token is None:
        log.warning("admin listener %s has no token: open to local users only", config.admin.listen)
    proxy_app = build_app(config)
    # Our own SIGTERM handler, not aiohttp's: its GracefulExit ends asyncio.run,
    # which cancels every task, in-flight handlers included.
    runner = make_runner(proxy_app, shutdown_timeout=config.drain_timeout)
    await runner.setup()
    admin_runner: web.AppRunner | None = None
    cluster: Cluster | None = None
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reuse = True if worker_of is not None else None
    try:
        edge = proxy_app[EDGE]
        edge.admin_token = token
        if config.cluster.redis_url is not None:
            # Before the listeners open: a returning edge replays missed purges first.
            cluster = await Cluster.start(config, edge)
        reloader_type = Reloader if worker_of is None else _WorkerReloader
        reloader = reloader_type(config, load, apply_config(edge), edge.clock, edge.metrics)
        admin_app = build_admin_app(edge, reloader, token, cluster=cluster)
        admin_app.on_response_prepare.append(_worker_header)
        admin_runner = web.AppRunner(admin_app, access_log=None)
        await admin_runner.setup()
        public = config.listen
        await web.TCPSite(runner, public.host, public.port, reuse_port=reuse).start()
        admin = config.admin.listen
        await web.TCPSite(admin_runner, admin.host, admin.port, reuse_port=reuse).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if load is not None:
            loop.add_signal_handler(
                signal.SIGHUP, lambda: tasks.append(loop.create_task(_reload(reloader)))
            )
        if config_path is not None:
            tasks.append(loop.create_task(reloader.watch(config_path)))
        if worker_of is not None:
            tasks.append(loop.create_task(_orphan_watch(worker_of, stop)))
        tune_gc()  # what start-up made lives as long as we do: out of every collection
        log.info(
            "edgeproxy listening on http://%s (admin http://%s), %d routes, cache in %s",
            config.listen,
            config.admin.listen,
            len(config.routes),
            config.cache.directory,
        )
        await stop.wait()
        log.info("stopping: draining in-flight requests (up to %gs)", config.drain_timeout)
    finally:
        # The SIGTERM/SIGINT handlers stay until the end: a repeated signal
        # (an impatient init system) must not kill a drain half way.
        # Stop accepting first: new connections are refused while the rest drains.
        for site in list(runner.sites):
            await site.stop()
        for task in tasks:
            task.cancel()
        if admin_runner is not None:
            await admin_runner.cleanup()
        if cluster is not None:
            await cluster.stop()
        await runner.cleanup()  # waits for in-flight handlers, then the app's cleanup_ctx
        if cluster is not None:
            await cluster.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _worker_header(request: web.Request, response: web.StreamResponse) -> None:
    # Which process answered: with SO_REUSEPORT any worker may (operators, tests).
    response.headers["Edgeproxy-Worker"] = str(os.getpid())


async def _orphan_watch(parent: int, stop: asyncio.Event) -> None:
    """A worker whose supervisor died (kill -9) stops rather than run unsupervised."""
    while True:  # no event to wait on: the kernel reparents an orphan silently
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            break
    log.error("supervisor %d is gone: stopping", parent)
    stop.set()


async def _reload(reloader: Reloader) -> None:
    await reloader.reload("SIGHUP")


def worker_count(config: Config) -> int:
    """`workers` from the config/flag; unset: one per CPU, but one with a
    cluster (each worker would run its own purge-bus consumer: not supported
    yet, so an explicit `workers > 1` with a cluster is refused)."""
    if config.workers is not None:
        if config.workers > 1 and config.cluster.redis_url is not None:
            raise SetupError(
                "workers > 1 with cluster.redis_url is not supported yet: use --workers 1"
            )
        if config.workers > 1 and 0 in (config.listen.port, config.admin.listen.port):
            raise SetupError("workers > 1 needs fixed listen ports (port 0 is one per worker)")
        return config.workers
    if config.cluster.redis_url is not None:
        return 1
    if 0 in (config.listen.port, config.admin.listen.port):
        return 1
    return os.cpu_count() or 1


def run(config: Config, load: Loader | None = None, config_path: str | None = None) -> int:
    """Serve with `worker_count(config)` processes; the exit code."""
    count = worker_count(config)
    if count == 1:
        with contextlib.suppress(KeyboardInterrupt):
            run_loop(serve(config, load, config_path))
        return 0
    check_bind(config.admin, read_token(config.admin))  # fail before forking
    parent = os.getpid()

    def worker(index: int) -> int:
        try:
            run_loop(serve(config, load, config_path, worker_of=parent))
        except (AdminSetupError, OSError) as e:
            print(f"edgeproxy: worker {index}: {e}", file=sys.stderr)
            return EXIT_SETUP
        return 0

    log.info("edgeproxy supervisor pid %d: %d workers", parent, count)
    return Supervisor(count, worker, config.drain_timeout).run()
