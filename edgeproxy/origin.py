"""The upstream HTTP client: one shared aiohttp session, errors mapped to EdgeError."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from edgeproxy.config import OriginConfig
from edgeproxy.errors import OriginProtocolError, OriginTimeout, OriginUnreachable
from edgeproxy.http.cache_status import ProxyError

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
) -> aiohttp.ClientResponse:
    """Send one request to the origin and return once the response head is in.

    `target` is the request target exactly as received (path and query),
    never re-encoded. The caller must release the response.
    """
    url = URL((server or origin.url) + target, encoded=True)
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
