"""The reference servers the benchmark compares edgeproxy against, and a fallback origin.

    python -m bench_lib.apps bare        --port P [--loop asyncio|uvloop]
    python -m bench_lib.apps passthrough --port P --upstream URL [--loop ...]
    python -m bench_lib.apps origin      --port P [--loop ...]

- bare: answers every path with a fixed 1 KiB body from memory (and a 304 to
  a matching If-None-Match): the ceiling for one aiohttp process.
- passthrough: a plain aiohttp reverse proxy, no cache: forwards the request,
  strips hop-by-hop fields, streams the response back.
- origin: the same URL space as the nginx origin (see servers.NGINX_ORIGIN),
  used when nginx is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

KIB = 1024
MIB = 1024 * KIB
SIZES = {"1k": KIB, "1m": MIB, "16m": 16 * MIB, "1g": 1024 * MIB}
BARE_BODY = b"x" * KIB
BARE_ETAG = '"bare-1k"'
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
COUNTS = web.AppKey("counts", Counter)
SESSION = web.AppKey("session", aiohttp.ClientSession)


# -- bare ---------------------------------------------------------------------


async def bare(request: web.Request) -> web.Response:
    if request.headers.get("If-None-Match") == BARE_ETAG:
        return web.Response(status=304, headers={"ETag": BARE_ETAG})
    return web.Response(
        body=BARE_BODY,
        headers={
            "ETag": BARE_ETAG,
            "Cache-Control": "max-age=3600",
            "Content-Type": "application/octet-stream",
        },
    )


def bare_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", bare)
    return app


# -- passthrough --------------------------------------------------------------


def _strip(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


def passthrough_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=0)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=100)
        app[SESSION] = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30),
        )
        yield
        await app[SESSION].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = _strip(request.headers, HOP_BY_HOP | {"host"})
        body = request.content.iter_chunked(65536) if request.body_exists else None
        async with request.app[SESSION].request(
            request.method,
            URL(upstream + request.raw_path, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as up:
            resp = web.StreamResponse(
                status=up.status, headers=_strip(up.headers, HOP_BY_HOP | {"content-length"})
            )
            if up.content_length is not None and up.status not in (204, 304):
                resp.content_length = up.content_length
            await resp.prepare(request)
            async for chunk in up.content.iter_chunked(65536):
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


# -- origin (fallback when nginx is missing) ----------------------------------


def _etag(name: str) -> str:
    return '"' + hashlib.sha256(name.encode()).hexdigest()[:16] + '"'


def origin_app() -> web.Application:
    """/static/<size>: max-age=3600; /reval/<size>: max-age=0 and a 304 on a match."""
    app = web.Application()
    app[COUNTS] = Counter()
    chunk = b"o" * MIB

    async def obj(request: web.Request) -> web.StreamResponse:
        kind, name = request.match_info["kind"], request.match_info["size"]
        size = SIZES.get(name)
        if size is None:
            request.app[COUNTS][404] += 1
            raise web.HTTPNotFound()
        etag = _etag(name)
        headers = {
            "ETag": etag,
            "Cache-Control": "max-age=3600" if kind == "static" else "max-age=0",
            "Content-Type": "application/octet-stream",
        }
        if request.headers.get("If-None-Match") == etag:
            request.app[COUNTS][304] += 1
            return web.Response(status=304, headers=headers)
        request.app[COUNTS][200] += 1
        if size <= MIB:
            return web.Response(body=chunk[:size], headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.content_length = size
        await resp.prepare(request)
        for _ in range(size // MIB):  # bounded: size is one of SIZES
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def stats(request: web.Request) -> web.Response:
        counts = request.app[COUNTS]
        return web.json_response({"total": sum(counts.values()), "304": counts[304]})

    app.router.add_get("/__stats", stats)
    app.router.add_get("/{kind:static|reval}/{size}", obj)
    return app


def main() -> None:
    p = argparse.ArgumentParser(prog="bench_lib.apps")
    p.add_argument("kind", choices=["bare", "passthrough", "origin"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", help="origin base URL (passthrough)")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = p.parse_args()
    if args.kind == "bare":
        app = bare_app()
    elif args.kind == "passthrough":
        if not args.upstream:
            p.error("passthrough needs --upstream")
        app = passthrough_app(args.upstream)
    else:
        app = origin_app()
    loop = None
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
