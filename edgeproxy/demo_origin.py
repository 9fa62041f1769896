"""A small bundled origin for trying edgeproxy out (`edgeproxy demo-origin`).

Routes show the cache's behaviour: /static (long max-age and an ETag),
/short (max-age=5 with ETag and Last-Modified: goes stale and revalidates),
/private, /nostore, /vary (varies on Accept-Language) and /echo.
"""

from __future__ import annotations

import hashlib
import time

from aiohttp import web

from edgeproxy.http.etags import parse_etag, parse_etag_list, weak_match

START = time.time()


def _etag(text: str) -> str:
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:16] + '"'


def _conditional(
    request: web.Request, etag: str, body: str, headers: dict[str, str]
) -> web.Response:
    headers = {"ETag": etag, **headers}
    # If-None-Match by weak comparison (RFC 9110 section 13.1.2), not a substring test.
    tags = parse_etag_list(request.headers.get("If-None-Match"))
    ours = parse_etag(etag)
    if (
        tags is not None
        and ours is not None
        and (tags.any or any(weak_match(t, ours) for t in tags.tags))
    ):
        return web.Response(status=304, headers=headers)
    return web.Response(text=body, headers=headers, content_type="text/plain")


async def index(request: web.Request) -> web.Response:
    return web.Response(
        text=__doc__ or "", content_type="text/plain", headers={"Cache-Control": "max-age=60"}
    )


async def static(request: web.Request) -> web.Response:
    body = f"static content for {request.path}\n"
    return _conditional(request, _etag(body), body, {"Cache-Control": "public, max-age=3600"})


async def short(request: web.Request) -> web.Response:
    body = "this goes stale after 5 seconds, then revalidates with a 304\n"
    lm = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(START))
    return _conditional(
        request, _etag(body), body, {"Cache-Control": "max-age=5", "Last-Modified": lm}
    )


async def private(request: web.Request) -> web.Response:
    return web.Response(text="for your eyes only\n", headers={"Cache-Control": "private"})


async def nostore(request: web.Request) -> web.Response:
    return web.Response(text=f"generated at {time.time()}\n", headers={"Cache-Control": "no-store"})


async def vary(request: web.Request) -> web.Response:
    lang = request.headers.get("Accept-Language", "en")[:2]
    text = {"fr": "bonjour\n", "de": "hallo\n"}.get(lang, "hello\n")
    return web.Response(
        text=text, headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"}
    )


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    lines = [f"{request.method} {request.path_qs}"] + [
        f"{k}: {v}" for k, v in request.headers.items()
    ]
    return web.Response(text="\n".join(lines) + f"\n\n{len(body)} body bytes\n")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/static/{name:.*}", static)
    app.router.add_get("/short", short)
    app.router.add_get("/private", private)
    app.router.add_get("/nostore", nostore)
    app.router.add_get("/vary", vary)
    app.router.add_route("*", "/echo", echo)
    return app


def run(host: str, port: int) -> None:
    # The proxy's own runner, so /echo answers extension methods too.
    from edgeproxy.server import run_app

    run_app(make_app(), host, port)
