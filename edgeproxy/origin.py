"""The upstream HTTP clients: which one a request takes (the lean h1client for
plain-http servers, one shared aiohttp session for the rest), errors mapped
to EdgeError.

Also the I/O half of origin pools (pool.py holds the state machine): the
active health-check loop, and which errors mean "never connected" (the only
ones a GET or HEAD is retried on another server for).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from edgeproxy.config import OriginConfig
from edgeproxy.errors import EdgeError, OriginProtocolError, OriginTimeout, OriginUnreachable
from edgeproxy.h1client import OriginConnections, UpstreamResponse
from edgeproxy.http.cache_status import ProxyError
from edgeproxy.pool import Pool, PoolSettings

if TYPE_CHECKING:
    from edgeproxy.state import EdgeState

log = logging.getLogger("edgeproxy.origin")

# Fields aiohttp would otherwise invent; a proxy forwards what the client sent.
_SKIP_AUTO = ("User-Agent", "Accept-Encoding", "Accept", "Content-Type")


def make_session(max_connections_per_host: int = 100) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=max_connections_per_host, enable_cleanup_closed=False
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_SKIP_AUTO,
        max_line_size=65536,
        max_field_size=65536,
        timeout=aiohttp.ClientTimeout(total=None),
    )


async def send(
    session: aiohttp.ClientSession,
    origin: OriginConfig,
    method: str,
    target: str,
    headers: CIMultiDict[str],
    body: AsyncIterable[bytes] | None,
    server: str | None = None,
    conns: OriginConnections | None = None,
) -> UpstreamResponse:
    """Send one request to the origin and return once the response head is in.

    `target` is the request target exactly as received (path and query),
    never re-encoded. The caller must release the response. A request to a
    plain-http server goes through `conns` (h1client.py, the lean client)
    unless the origin says `client: aiohttp`; TLS and credentialed servers
    through aiohttp's.
    """
    base = server or origin.url
    # userinfo in a server URL is aiohttp's to turn into Authorization.
    if (
        conns is not None
        and origin.client == "lean"
        and base.startswith("http://")
        and "@" not in base
    ):
        return await conns.request(
            base,
            method,
            target,
            headers,
            name=origin.name,
            limit=origin.max_connections,
            connect_timeout=origin.connect_timeout,
            read_timeout=origin.read_timeout,
            body=body,
        )
    url = URL(base + target, encoded=True)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=origin.connect_timeout, sock_read=origin.read_timeout
    )
    try:
        return await session.request(
            method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=timeout,
            compress=None,
        )
    except aiohttp.ConnectionTimeoutError as e:
        raise OriginTimeout(
            f"connecting to {origin.name}: timed out", ProxyError.CONNECTION_TIMEOUT
        ) from e
    except aiohttp.SocketTimeoutError as e:
        raise OriginTimeout(f"origin {origin.name} sent no response in time") from e
    except aiohttp.ClientConnectorDNSError as e:
        raise OriginUnreachable(
            f"resolving {origin.name}: {e.os_error}", ProxyError.DNS_ERROR
        ) from e
    except aiohttp.ClientConnectorError as e:
        raise OriginUnreachable(
            f"connecting to {origin.name}: {e.os_error.strerror or e}",
            ProxyError.CONNECTION_REFUSED,
        ) from e
    except aiohttp.ServerDisconnectedError as e:
        raise OriginUnreachable(
            f"origin {origin.name} closed the connection", ProxyError.CONNECTION_TERMINATED
        ) from e
    except aiohttp.ClientResponseError as e:
        raise OriginProtocolError(f"invalid response from {origin.name}: {e.message}") from e
    except (aiohttp.ClientOSError, ssl.SSLError) as e:
        raise OriginUnreachable(
            f"connection to {origin.name} failed: {e}", ProxyError.CONNECTION_TERMINATED
        ) from e
    except TimeoutError as e:
        raise OriginTimeout(f"origin {origin.name} timed out") from e


# Errors raised before any byte of the request can have reached a server:
# the connection was never made. Only these may be retried elsewhere.
_NOT_CONNECTED = frozenset(
    {ProxyError.CONNECTION_REFUSED, ProxyError.DNS_ERROR, ProxyError.CONNECTION_TIMEOUT}
)


def connected(e: EdgeError) -> bool:
    """Might the request have reached the server? (pool.should_retry's `connected`)."""
    return e.proxy_error not in _NOT_CONNECTED


async def check(
    session: aiohttp.ClientSession, origin: OriginConfig, server: str, settings: PoolSettings
) -> bool:
    """One active health check: GET the health path; a 2xx or 3xx passes."""
    assert settings.health_path is not None
    headers = {"User-Agent": "edgeproxy-health-check"}
    if origin.host_header is not None:
        headers["Host"] = origin.host_header
    try:
        async with session.get(
            URL(server + settings.health_path, encoded=True),
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=settings.timeout),
        ) as resp:
            return 200 <= resp.status < 400
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
        log.debug("health check of %s failed: %s", server, e)
        return False


async def health_checks(edge: EdgeState, idle: float = 1.0) -> None:
    """Run every origin's due health checks, forever (a task of the app's lifecycle).

    Pools come from the current config each round, so a reload's new origins
    and servers are checked within `idle` seconds.
    """
    while True:
        pools = edge.pools()
        now = edge.monotonic()
        jobs = [
            _check_one(edge, edge.snapshot.config.origins[name], pool, server)
            for name, pool in pools.items()
            for server in pool.due_checks(now)
        ]
        if jobs:
            await asyncio.gather(*jobs)
        due = [t for p in pools.values() if (t := p.next_check_at()) is not None]
        wait = min([*due, edge.monotonic() + idle]) - edge.monotonic()
        await asyncio.sleep(max(0.0, wait))


async def _check_one(edge: EdgeState, origin: OriginConfig, pool: Pool, server: str) -> None:
    ok = await check(edge.session, origin, server, pool.settings)
    was_up = pool.is_up(server, edge.monotonic())
    pool.record_check(server, ok, edge.monotonic())
    if pool.is_up(server, edge.monotonic()) != was_up:
        log.warning(
            "origin %s server %s is %s (health check)",
            origin.name,
            server,
            "back up" if ok else "down",
        )
