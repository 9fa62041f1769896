"""The lean origin client (edgeproxy/h1client.py) against a real loopback
server that keeps connections alive and says exactly which bytes it sends:
connection reuse, the keep-alive race, the per-server limit, timeouts,
request bodies, a slow reader. Through the proxy, every e2e module already
runs on it (it is the default client).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import MappingProxyType

import aiohttp
import pytest
from multidict import CIMultiDict

from edgeproxy.errors import OriginProtocolError, OriginTimeout, OriginUnreachable
from edgeproxy.h1client import OriginConnections, OriginResponse, _Connection
from edgeproxy.state import EDGE
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Reply, ScriptedOrigin, fetch

# A reply: the bytes to send for one request; None closes the connection
# without a byte; a callable gets the request's head and body.
Script = bytes | None | Callable[[bytes, bytes], bytes | None]


@dataclass
class KeepAliveOrigin:
    """Answers each request on a connection with the next scripted reply."""

    replies: list[Script] = field(default_factory=list)
    requests: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (conn, head, body)
    connections: int = 0
    pause: float = 0.0  # seconds before each reply
    url: str = ""
    server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                lower = head.lower()
                if b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                elif b"transfer-encoding: chunked" in lower:
                    while True:
                        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += chunk[:-2]
                self.requests.append((number, head, body))
                reply = self.replies.pop(0) if self.replies else b"HTTP/1.1 404 NF\r\n\r\n"
                if callable(reply):
                    reply = reply(head, body)
                if self.pause:
                    await asyncio.sleep(self.pause)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def ka() -> AsyncIterator[KeepAliveOrigin]:
    origin = KeepAliveOrigin()
    await origin.start()
    yield origin
    assert origin.server is not None
    origin.server.close()
    # Not wait_closed(): the client's idle connections stay open until `conns` closes.


@pytest.fixture
async def conns() -> AsyncIterator[OriginConnections]:
    c = OriginConnections()
    yield c
    c.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def get(
    conns: OriginConnections,
    origin: KeepAliveOrigin,
    method: str = "GET",
    *,
    limit: int = 10,
    read_timeout: float | None = 5,
    body: AsyncIterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> OriginResponse:
    return await conns.request(
        origin.url,
        method,
        "/p",
        CIMultiDict(headers or {}),
        name="o",
        limit=limit,
        connect_timeout=5,
        read_timeout=read_timeout,
        body=body,
    )


async def read(response: OriginResponse) -> bytes:
    return b"".join([c async for c in response.content.iter_chunked(65536)])


async def test_sequential_requests_share_one_connection(
    ka: KeepAliveOrigin, conns: OriginConnections
) -> None:
    ka.replies = [ok(b"one"), ok(b"", 'ETag: "x"\r\n'), ok(b"three")]
    assert await read(await get(conns, ka)) == b"one"
    head = await get(conns, ka, "HEAD")
    assert (head.status, head.headers["ETag"], head.content_length) == (200, '"x"', 0)
    assert await read(await get(conns, ka)) == b"three"
    assert [c for c, _, _ in ka.requests] == [1, 1, 1]
    first = ka.requests[0][1].decode()
    assert first.startswith("GET /p HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_connection_close_from_the_origin_is_not_reused(
    ka: KeepAliveOrigin, conns: OriginConnections
) -> None:
    ka.replies = [ok(b"a", "Connection: close\r\n"), ok(b"b")]
    assert await read(await get(conns, ka)) == b"a"
    assert await read(await get(conns, ka)) == b"b"
    assert [c for c, _, _ in ka.requests] == [1, 2]


async def test_the_keep_alive_race_is_retried_once_on_a_new_connection(
    ka: KeepAliveOrigin, conns: OriginConnections
) -> None:
    # The server drops an idle connection as the next request goes out
    # (RFC 9112 section 9.3.1): a GET is sent again, on a new connection.
    ka.replies = [ok(b"a"), None, ok(b"b")]
    assert await read(await get(conns, ka)) == b"a"
    assert await read(await get(conns, ka)) == b"b"
    assert [c for c, _, _ in ka.requests] == [1, 1, 2]


async def test_a_post_is_never_sent_twice(ka: KeepAliveOrigin, conns: OriginConnections) -> None:
    ka.replies = [ok(b"a"), None, ok(b"b")]
    assert await read(await get(conns, ka)) == b"a"

    async def one() -> AsyncIterator[bytes]:
        yield b"data"

    with pytest.raises(OriginUnreachable) as e:
        await get(conns, ka, "POST", body=one(), headers={"Content-Length": "4"})
    assert e.value.proxy_error.value == "connection_terminated"
    assert [(c, h.split(b" ")[0]) for c, h, _ in ka.requests] == [(1, b"GET"), (1, b"POST")]


async def test_the_limit_queues_requests_in_order_on_one_connection(
    ka: KeepAliveOrigin, conns: OriginConnections
) -> None:
    ka.pause = 0.05
    ka.replies = [ok(b"1"), ok(b"2"), ok(b"3")]
    got = await asyncio.gather(*(get(conns, ka, limit=1) for _ in range(3)))
    assert [await read(r) for r in got] == [b"1", b"2", b"3"]
    assert ka.connections == 1


async def test_a_cancelled_waiter_gives_its_turn_away(
    ka: KeepAliveOrigin, conns: OriginConnections
) -> None:
    ka.pause = 0.1
    ka.replies = [ok(b"1"), ok(b"2")]
    first = asyncio.create_task(get(conns, ka, limit=1))
    await asyncio.sleep(0.02)
    second = asyncio.create_task(get(conns, ka, limit=1))
    third = asyncio.create_task(get(conns, ka, limit=1))
    await asyncio.sleep(0.02)
    second.cancel()
    assert await read(await first) == b"1"
    assert await read(await third) == b"2"
    server = conns.servers[ka.url]
    assert (server.count, len(server.idle), len(server.waiters)) == (1, 1, 0)


async def test_no_response_in_time_is_a_timeout_and_the_connection_is_dropped(
    ka: KeepAliveOrigin, conns: OriginConnections
) -> None:
    ka.pause = 1.0
    ka.replies = [ok(b"late")]
    with pytest.raises(OriginTimeout):
        await get(conns, ka, read_timeout=0.1)
    server = conns.servers[ka.url]
    assert (server.count, server.idle) == (0, [])


async def test_silence_mid_body_is_a_timeout_for_the_reader(
    ka: KeepAliveOrigin, conns: OriginConnections
) -> None:
    ka.replies = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]
    response = await get(conns, ka, read_timeout=0.1)
    with pytest.raises(TimeoutError):
        await read(response)
    assert conns.servers[ka.url].count == 0


async def test_refused_and_garbage(ka: KeepAliveOrigin, conns: OriginConnections) -> None:
    ka.replies = [b"SMTP ready\r\n\r\n"]
    with pytest.raises(OriginProtocolError):
        await get(conns, ka)
    assert ka.server is not None
    ka.server.close()
    await ka.server.wait_closed()
    with pytest.raises(OriginUnreachable) as e:
        await get(conns, ka)
    assert e.value.proxy_error.value == "connection_refused"


@pytest.mark.parametrize("length", [True, False])
async def test_request_bodies_go_out_whole(
    ka: KeepAliveOrigin, conns: OriginConnections, length: bool
) -> None:
    parts = [b"a" * 70_000, b"", b"b" * 3, b"c" * 1_000_000]

    async def body() -> AsyncIterator[bytes]:
        for p in parts:
            yield p
            await asyncio.sleep(0)

    ka.replies = [lambda head, got: ok(str(len(got)).encode()), ok(b"after")]
    headers = {"Content-Length": str(sum(map(len, parts)))} if length else {}
    response = await get(conns, ka, "PUT", body=body(), headers=headers)
    assert await read(response) == b"1070003"
    assert ka.requests[0][2] == b"".join(parts)
    assert (b"transfer-encoding: chunked" in ka.requests[0][1].lower()) == (not length)
    await asyncio.sleep(0.01)  # the upload task has ended
    assert await read(await get(conns, ka)) == b"after"
    assert [c for c, _, _ in ka.requests] == [1, 1]  # reused once the body was out


async def test_released_mid_body_closes_the_connection(
    ka: KeepAliveOrigin, conns: OriginConnections
) -> None:
    ka.replies = [ok(b"z" * 2_000_000), ok(b"next")]
    response = await get(conns, ka)
    await anext(response.content.iter_chunked(1000))
    response.release()
    assert await read(await get(conns, ka)) == b"next"
    assert [c for c, _, _ in ka.requests] == [1, 2]


async def test_a_reader_that_never_reads_keeps_memory_bounded(
    ka: KeepAliveOrigin, conns: OriginConnections
) -> None:
    ka.replies = [ok(b"m" * 20_000_000)]
    response = await get(conns, ka)
    await asyncio.sleep(0.3)
    assert response._buffered < 2_000_000  # reading paused past the high-water mark
    assert len(await read(response)) == 20_000_000


async def test_proxy_status_of_a_dns_failure(conns: OriginConnections) -> None:
    with pytest.raises(OriginUnreachable) as e:
        await conns.request(
            "http://name.invalid:80",
            "GET",
            "/",
            CIMultiDict(),
            name="o",
            limit=1,
            connect_timeout=5,
            read_timeout=5,
        )
    assert e.value.proxy_error.value == "dns_error"
    with contextlib.suppress(KeyError):
        assert conns.servers["http://name.invalid:80"].count == 0


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_an_origin_can_be_sent_through_either_client(
    make_proxy: MakeProxy, origin: ScriptedOrigin, client: str
) -> None:
    # `origins.<name>.client` (config/edge.yaml): the same exchange either way.
    assert origin.server is not None
    url = f"http://127.0.0.1:{origin.server.port}"
    origin.script("/c", Reply(body=b"either", headers={"Cache-Control": "max-age=60"}))
    proxy = await make_proxy(url)
    cfg = proxy.config
    chosen = dataclasses.replace(cfg.origins["default"], client=client)
    proxy.app[EDGE].snapshot = dataclasses.replace(
        proxy.app[EDGE].snapshot,
        config=dataclasses.replace(cfg, origins=MappingProxyType({"default": chosen})),
    )
    async with aiohttp.ClientSession() as s:
        got = [
            await fetch(s, "GET", proxy.url + "/c?n=1"),
            await fetch(s, "POST", proxy.url + "/c"),
        ]
    assert [(g.status, g.body) for g in got] == [(200, b"either")] * 2
    conns = proxy.app[EDGE].conns
    assert conns is not None
    assert (url in conns.servers) == (client == "lean")
    assert [r.method for r in origin.received] == ["GET", "POST"]


async def test_a_connection_closed_while_handed_over_resends_nothing_twice_and_loses_no_body(
    ka: KeepAliveOrigin, conns: OriginConnections
) -> None:
    # A waiter is handed an idle connection that closes before the waiter
    # runs: nothing was written on it, so the request (a POST, body and all)
    # goes out on a new connection, once.
    server = conns.server(ka.url, 1)
    assert await server.acquire(0.0) is None  # the only slot, held

    async def body() -> AsyncIterator[bytes]:
        yield b"payload"

    ka.replies = [lambda head, got: ok(got)]
    post = asyncio.create_task(get(conns, ka, "POST", limit=1, body=body()))
    await asyncio.sleep(0.01)
    handed = _Connection(server)
    server.give_back(handed, 0.0)  # to the waiting POST ...
    handed.close()  # ... and gone before it runs (its slot freed)
    response = await post
    assert await read(response) == b"payload"
    assert [(c, b) for c, _, b in ka.requests] == [(1, b"payload")]


async def test_a_server_url_with_credentials_goes_through_aiohttp(
    make_proxy: MakeProxy, origin: ScriptedOrigin
) -> None:
    # aiohttp turns userinfo into Authorization: Basic; the lean client
    # leaves such servers to it rather than drop the credentials.
    assert origin.server is not None
    origin.script("/a", Reply(body=b"ok"))
    proxy = await make_proxy(f"http://user:pw@127.0.0.1:{origin.server.port}")
    async with aiohttp.ClientSession() as s:
        got = await fetch(s, "GET", proxy.url + "/a")
    assert got.status == 200
    assert origin.received[0].headers["Authorization"] == "Basic dXNlcjpwdw=="
    conns = proxy.app[EDGE].conns
    assert conns is not None and not conns.servers
