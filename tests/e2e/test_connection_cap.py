"""Many idle connections are bounded (issue #8): `limits.max_connections`.

Raw sockets hold connections open without a request (idle, as a slowloris
client would). Past the cap a new connection is refused, not queued: it
gets a 503 with Retry-After (RFC 9110 sections 15.6.4 and 10.2.3) and is
closed, and nothing reaches the origin. A slot freed by a closing client is
usable again, and connections under the cap are served as before.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from edgeproxy.config import parse_config
from edgeproxy.errors import ConfigError
from edgeproxy.state import EDGE
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, until

GET = b"GET /x HTTP/1.1\r\nHost: www.example.test\r\n\r\n"

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def restart_with(proxy: Proxy, **limits: object) -> None:
    await proxy.close()
    proxy.config = dataclasses.replace(
        proxy.config, limits=dataclasses.replace(proxy.config.limits, **limits)
    )
    await proxy.start()


def open_count(proxy: Proxy) -> int:
    """Connections the proxy's server holds (refused ones are never among them)."""
    assert proxy.server is not None and proxy.server.handler is not None
    return len(proxy.server.handler.connections)


@pytest.fixture
async def conns() -> AsyncIterator[list[Conn]]:
    held: list[Conn] = []
    yield held
    for _, writer in held:
        writer.close()


async def connect(proxy: Proxy, conns: list[Conn]) -> Conn:
    assert proxy.server is not None
    conn = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    conns.append(conn)
    return conn


async def request(conn: Conn) -> bytes:
    """One GET on a kept-alive connection: the status line and fields."""
    reader, writer = conn
    writer.write(GET)
    await writer.drain()
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def test_connections_past_the_cap_get_503_and_are_closed(
    proxy: Proxy, origin: ScriptedOrigin, conns: list[Conn]
) -> None:
    origin.script("/x", Reply(body=b"ok", headers={"Cache-Control": "max-age=60"}))
    await restart_with(proxy, max_connections=3)
    for _ in range(3):
        await connect(proxy, conns)  # idle: no request yet
    await until(lambda: open_count(proxy) == 3, "three open connections")
    reader, writer = await connect(proxy, conns)
    writer.write(GET)  # a request on the refused connection is never read
    answer = await asyncio.wait_for(reader.read(), 5)  # EOF: the proxy closed its side
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nRetry-After: 1" in head and b"\r\nConnection: close" in head
    assert body == b"Service Unavailable: too many open connections\n"
    assert origin.received == []
    assert open_count(proxy) == 3
    # The connections under the cap are served normally.
    for conn in conns[:3]:
        assert (await request(conn)).startswith(b"HTTP/1.1 200 ")
    assert origin.hits("/x") == 1


async def test_a_closed_connection_frees_its_slot(
    proxy: Proxy, origin: ScriptedOrigin, conns: list[Conn]
) -> None:
    origin.script("/x", Reply(body=b"ok", headers={"Cache-Control": "max-age=60"}))
    await restart_with(proxy, max_connections=2)
    first = await connect(proxy, conns)
    await connect(proxy, conns)
    await until(lambda: open_count(proxy) == 2, "two open connections")
    first[1].close()
    await until(lambda: open_count(proxy) == 1, "the closed connection to be forgotten")
    third = await connect(proxy, conns)
    assert (await request(third)).startswith(b"HTTP/1.1 200 ")


async def test_refusals_are_logged_once_not_per_connection(
    proxy: Proxy, conns: list[Conn], caplog: pytest.LogCaptureFixture
) -> None:
    await restart_with(proxy, max_connections=1)
    await connect(proxy, conns)
    await until(lambda: open_count(proxy) == 1, "one open connection")
    for _ in range(5):
        reader, _ = await connect(proxy, conns)
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 503 ")
    refusals = [r for r in caplog.records if "refusing new ones" in r.getMessage()]
    assert len(refusals) == 1


async def test_zero_means_no_cap(proxy: Proxy, origin: ScriptedOrigin, conns: list[Conn]) -> None:
    origin.script("/x", Reply(body=b"ok", headers={"Cache-Control": "max-age=60"}))
    await restart_with(proxy, max_connections=0)
    for _ in range(20):
        await connect(proxy, conns)
    for conn in conns:
        assert (await request(conn)).startswith(b"HTTP/1.1 200 ")


async def test_the_cap_follows_a_reload_for_new_connections(
    proxy: Proxy, conns: list[Conn]
) -> None:
    # Limits are read as each connection opens (server.py): a reload applies
    # to the next connection, never to one already open.
    edge = proxy.app[EDGE]
    cfg = edge.snapshot.config
    edge.snapshot = dataclasses.replace(
        edge.snapshot,
        config=dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, max_connections=1)),
    )
    await connect(proxy, conns)
    await until(lambda: open_count(proxy) == 1, "one open connection")
    reader, _ = await connect(proxy, conns)
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 503 ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("limits:\n  max_connections: 10\n", 10),
        ("limits:\n  max_connections: 0\n", 0),
        ("{}\n", 4096),  # the default
    ],
)
def test_max_connections_config(text: str, expected: int) -> None:
    assert parse_config(text).limits.max_connections == expected


@pytest.mark.parametrize("value", ["-1", "1.5", "many", "true"])
def test_max_connections_must_be_a_count(value: str) -> None:
    with pytest.raises(ConfigError, match="max_connections"):
        parse_config(f"limits:\n  max_connections: {value}\n")
