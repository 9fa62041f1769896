"""Cache poisoning (RFC 9111 section 7.1): the classic tricks, replayed end to end.

Each test scripts a *vulnerable* origin that reflects the suspicious input
into its body (a link built from X-Forwarded-Host, /admin served when
X-Original-URL says so, a `;`-cloaked parameter, the content of a GET, ...),
sends the attack through the proxy, then a clean request for the same URL,
and asserts the clean client gets clean content, and what reached the origin.

Path normalisation, as observed: the proxy keys and forwards the request
target exactly as received (`request.raw_path`). It does not decode
percent-escapes, change their case, resolve dot-segments or fold the path's
case, so `/a%2Fb`, `/a%2fb` and `/a/b` are three keys, and each is fetched
upstream as sent: whatever the origin makes of a target, it is stored under
that same target. Only the host is normalised (lower-cased, trailing dot and
default port dropped), and the normalised host is both the key's and the
X-Forwarded-Host sent upstream.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from urllib.parse import unquote_plus

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from edgeproxy.config import parse_config
from tests.conftest import FakeClock
from tests.e2e.harness import Got, Handler, Proxy, ScriptedOrigin, fetch

HOST = "www.example.test"

YAML = """\
cache: {{dir: {cache}}}
origins:
  app: {{url: "{app}"}}
routes:
  - name: api
    match: {{host: api.example.test}}
    origin: app
    request_headers: {{set: {{X-Route: api}}}}
  - name: jsonp
    match: {{path: {{prefix: /jsonp}}}}
    origin: app
    cache_key: {{query_params: [callback]}}
  - name: sorted
    match: {{path: {{prefix: /sorted}}}}
    origin: app
    cache_key: {{sort_query: true}}
  - name: keyed
    match: {{path: {{prefix: /keyed}}}}
    origin: app
    cache_key: {{headers: [X-Host]}}
  - name: site
    match: {{host: "{host}"}}
    origin: app
default_route: site
"""

CACHEABLE = {"Cache-Control": "max-age=60"}


@pytest.fixture
async def edge(tmp_path, origin: ScriptedOrigin, clock: FakeClock) -> AsyncIterator[Proxy]:  # type: ignore[no-untyped-def]
    assert origin.server is not None
    text = YAML.format(
        cache=tmp_path / "cache", app=f"http://127.0.0.1:{origin.server.port}", host=HOST
    )
    p = Proxy(parse_config(textwrap.dedent(text), "poisoning.yaml"), clock)
    await p.start()
    yield p
    await p.close()


async def get(
    client: aiohttp.ClientSession,
    edge: Proxy,
    target: str,
    headers: dict[str, str] | None = None,
    **kw: object,
) -> Got:
    """GET `target` byte for byte (never re-encoded), with Host defaulting to HOST."""
    url = URL(edge.url + target, encoded=True)
    return await fetch(client, "GET", url, headers={"Host": HOST, **(headers or {})}, **kw)


def script(origin: ScriptedOrigin, path: str, handler: Handler) -> None:
    """Script a custom handler whose Date is on the test clock (aiohttp's is wall time)."""

    async def dated(request: web.Request) -> web.StreamResponse:
        resp = await handler(request)
        resp.headers["Date"] = origin.date()
        return resp

    origin.script(path, dated)


def is_hit(got: Got) -> bool:
    return got.headers["Cache-Status"].startswith("edgeproxy; hit")


async def vulnerable_app(request: web.Request) -> web.Response:
    """An origin that trusts every override a framework might honour."""
    h = request.headers
    host = h.get("X-Forwarded-Host", request.host)
    scheme = h.get("X-Forwarded-Scheme") or h.get("X-Forwarded-Proto") or "http"
    path = h.get("X-Original-URL") or h.get("X-Rewrite-URL") or request.raw_path
    method = h.get("X-HTTP-Method-Override", request.method)
    text = f'{method} <a href="{scheme}://{host}{path}"> route={h.get("X-Route", "-")}\n'
    return web.Response(text=text, headers=CACHEABLE)


# --- Unkeyed headers ---------------------------------------------------------

CLEAN_PAGE = b'GET <a href="http://www.example.test/page"> route=-\n'


@pytest.mark.parametrize(
    ("field", "value", "evil"),
    [
        # Replaced by this hop's own value (forwarding.py), never the client's.
        pytest.param("X-Forwarded-Host", "evil.example", "www.example.test", id="x-forwarded-host"),
        pytest.param("X-Forwarded-Proto", "javascript", "http", id="x-forwarded-proto"),
        # Stripped: URL and method overrides the key knows nothing about.
        pytest.param("X-Forwarded-Scheme", "nothttps", None, id="x-forwarded-scheme"),
        pytest.param("X-Original-URL", "/admin", None, id="x-original-url"),
        pytest.param("X-Rewrite-URL", "/admin", None, id="x-rewrite-url"),
        pytest.param("X-HTTP-Method-Override", "DELETE", None, id="x-http-method-override"),
    ],
)
async def test_unkeyed_override_headers_cannot_poison(
    edge: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    field: str,
    value: str,
    evil: str | None,
) -> None:
    # RFC 9111 section 7.1: a field the key lacks must not change what is stored.
    script(origin, "/page", vulnerable_app)
    attack = await get(client, edge, "/page", {field: value})
    assert attack.status == 200 and attack.body == CLEAN_PAGE
    seen = origin.last().headers
    # The attacker's value never reached the origin: replaced, or removed.
    assert seen.getall(field, []) == ([evil] if evil is not None else [])
    clean = await get(client, edge, "/page")
    assert is_hit(clean) and clean.body == CLEAN_PAGE
    assert origin.hits("/page") == 1


async def test_x_forwarded_host_is_not_trusted_for_routing(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # Routing reads the Host field (RFC 9110 section 7.2) only: X-Forwarded-Host
    # naming the api host neither selects the api route nor its key.
    script(origin, "/page", vulnerable_app)
    attack = await get(client, edge, "/page", {"X-Forwarded-Host": "api.example.test"})
    assert attack.body == CLEAN_PAGE  # route=-: the site route, not api
    api = await get(client, edge, "/page", {"Host": "api.example.test"})
    assert not is_hit(api)
    assert api.body == b'GET <a href="http://api.example.test/page"> route=api\n'
    clean = await get(client, edge, "/page")
    assert is_hit(clean) and clean.body == CLEAN_PAGE
    assert origin.hits("/page") == 2


async def test_header_named_in_key_rules_keys_variants_apart(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # A field the origin reads (X-Host) is safe once the route keys on it.
    async def reflect_x_host(request: web.Request) -> web.Response:
        return web.Response(text=f"host={request.headers.get('X-Host', '-')}", headers=CACHEABLE)

    script(origin, "/keyed", reflect_x_host)
    attack = await get(client, edge, "/keyed", {"X-Host": "evil.example"})
    assert attack.body == b"host=evil.example"
    clean = await get(client, edge, "/keyed")
    assert not is_hit(clean) and clean.body == b"host=-"
    again = await get(client, edge, "/keyed")
    assert is_hit(again) and again.body == b"host=-"
    assert origin.hits("/keyed") == 2


# --- Fat GET -----------------------------------------------------------------


async def test_fat_get_body_cannot_poison(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # A framework that merges body parameters into the query's (fat GET).
    async def merge_body(request: web.Request) -> web.Response:
        params = dict(request.query)
        body = (await request.read()).decode()
        params.update(p.split("=", 1) for p in body.split("&") if "=" in p)
        return web.Response(text=f"{params.get('callback', '-')}(data)", headers=CACHEABLE)

    script(origin, "/fat", merge_body)
    await get(client, edge, "/fat?callback=ok", data=b"callback=evil")
    clean = await get(client, edge, "/fat?callback=ok")
    assert clean.body == b"ok(data)"


# --- Parameter cloaking and duplicate parameters ----------------------------


async def lenient_query(request: web.Request) -> web.Response:
    """A lax parser: splits on `&` and `;`, decodes and case-folds names, last wins."""
    query = request.raw_path.partition("?")[2]
    params: dict[str, str] = {}
    for piece in query.replace(";", "&").split("&"):
        name, _, val = piece.partition("=")
        params[unquote_plus(name).casefold()] = unquote_plus(val)
    return web.Response(text=f"{params.get('callback', '-')}(data)", headers=CACHEABLE)


@pytest.mark.parametrize(
    ("path", "attack"),
    [
        # The route keeps only `callback` in the key; the rest must not smuggle one.
        pytest.param("/jsonp", "?callback=ok&utm=1;callback=evil", id="semicolon-cloak"),
        pytest.param("/jsonp", "?callback=ok&c%61llback=evil", id="encoded-name"),
        pytest.param("/jsonp", "?callback=ok&CALLBACK=evil", id="case-name"),
        pytest.param("/jsonp", "?callback=ok&utm=1;C%41LLBACK=evil", id="all-three"),
        # No key rules: the whole query is keyed, `;` and all.
        pytest.param("/plain", "?callback=ok;callback=evil", id="plain-semicolon"),
        pytest.param("/plain", "?callback=ok&callback=evil", id="plain-duplicate"),
    ],
)
async def test_parameter_cloaking_cannot_poison(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, path: str, attack: str
) -> None:
    script(origin, path, lenient_query)
    poisoned = await get(client, edge, path + attack)
    assert poisoned.body == b"evil(data)"  # the origin really was fooled
    assert origin.last().raw_path == path + attack  # forwarded as keyed: raw
    clean = await get(client, edge, path + "?callback=ok")
    assert not is_hit(clean) and clean.body == b"ok(data)"
    assert origin.hits(path) == 2


async def test_unkeyed_parameter_is_still_dropped_from_the_key(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # The cloaking defence keeps query_params working for harmless extras.
    script(origin, "/jsonp", lenient_query)
    first = await get(client, edge, "/jsonp?callback=ok&utm=1")
    second = await get(client, edge, "/jsonp?utm=2&callback=ok")
    assert first.body == second.body == b"ok(data)" and is_hit(second)
    assert origin.hits("/jsonp") == 1


async def first_wins(request: web.Request) -> web.Response:
    p = request.query.getone("p", "-")
    return web.Response(text=f"p={p}", headers=CACHEABLE)


async def test_duplicate_parameters_are_distinct_keys(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # HTTP parameter pollution: an origin reads the first of repeated names.
    script(origin, "/plain", first_wins)
    for target, body in [("?p=2&p=1", b"p=2"), ("?p=1&p=2", b"p=1"), ("?p=1", b"p=1")]:
        got = await get(client, edge, "/plain" + target)
        assert not is_hit(got) and got.body == body
        assert origin.last().raw_path == "/plain" + target
    assert origin.hits("/plain") == 3


async def test_sort_query_keeps_order_of_repeated_names(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    script(origin, "/sorted", first_wins)
    attack = await get(client, edge, "/sorted?p=2&p=1")
    assert attack.body == b"p=2"
    clean = await get(client, edge, "/sorted?p=1&p=2")
    assert clean.body == b"p=1"


async def test_sort_query_still_shares_reordered_distinct_names(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    script(origin, "/sorted", first_wins)
    await get(client, edge, "/sorted?p=1&q=2")
    again = await get(client, edge, "/sorted?q=2&p=1")
    assert is_hit(again) and again.body == b"p=1"
    assert origin.hits("/sorted") == 1


# --- Case and encoding tricks -------------------------------------------------


async def reflect_forwarded_host(request: web.Request) -> web.Response:
    return web.Response(text=f"//{request.headers['X-Forwarded-Host']}/", headers=CACHEABLE)


@pytest.mark.parametrize(
    "variant",
    [
        # RFC 3986 section 6.2.2.1 (case) and 6.2.3 (default port, empty port);
        # RFC 9110 section 4.2.1: http's default port is 80.
        pytest.param("WWW.EXAMPLE.TEST", id="upper"),
        pytest.param("Www.Example.Test:80", id="mixed-default-port"),
        pytest.param("www.example.test:", id="empty-port"),
        pytest.param("www.example.test.", id="trailing-dot"),
    ],
)
async def test_host_variants_are_keyed_and_forwarded_alike(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, variant: str
) -> None:
    script(origin, "/h", reflect_forwarded_host)
    attack = await get(client, edge, "/h", {"Host": variant})
    # The origin is told the normalised host, the one the key was built from.
    assert origin.last().headers["X-Forwarded-Host"] == HOST
    assert attack.body == b"//www.example.test/"
    clean = await get(client, edge, "/h")
    assert is_hit(clean) and clean.body == b"//www.example.test/"
    assert origin.hits("/h") == 1


async def test_other_port_is_another_key(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    script(origin, "/h", reflect_forwarded_host)
    other = await get(client, edge, "/h", {"Host": "www.example.test:8080"})
    assert other.body == b"//www.example.test:8080/"
    clean = await get(client, edge, "/h")
    assert not is_hit(clean) and clean.body == b"//www.example.test/"
    assert origin.hits("/h") == 2


async def reflect_raw_path(request: web.Request) -> web.Response:
    return web.Response(text=f"raw={request.raw_path} path={request.path}", headers=CACHEABLE)


@pytest.mark.parametrize(
    ("attack", "clean", "decoded"),
    [
        # No decoding (RFC 3986 section 2.2: %2F is data, not a separator).
        pytest.param("/a%2Fb", "/a/b", "/a/b", id="encoded-slash"),
        pytest.param("/a%2fb", "/a%2Fb", "/a/b", id="escape-case"),
        # RFC 3986 section 6.2.2.2 calls these equal; the key does not fold them.
        pytest.param("/%61", "/a", "/a", id="unreserved-escape"),
        pytest.param("/A", "/a", None, id="path-case"),
    ],
)
async def test_path_variants_are_distinct_keys_and_fetches(
    edge: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    attack: str,
    clean: str,
    decoded: str | None,
) -> None:
    # The origin routes on the decoded path, so both spellings reach one handler.
    for p in {attack, clean, decoded or attack}:
        script(origin, p, reflect_raw_path)
    first = await get(client, edge, attack)
    assert origin.last().raw_path == attack
    second = await get(client, edge, clean)
    assert not is_hit(second)
    assert origin.last().raw_path == clean
    assert second.body.startswith(f"raw={clean} ".encode())
    # Each spelling is stored under its own key: key and fetch agree.
    again = await get(client, edge, attack)
    assert is_hit(again) and again.body == first.body
    assert first.body.startswith(f"raw={attack} ".encode())
    assert origin.hits() == 2


# --- Storing rules: Set-Cookie, Authorization, Vary, Cookie -------------------


async def test_set_cookie_is_not_served_to_another_client(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # RFC 9111 section 7.3: Set-Cookie doesn't inhibit caching; the edge's
    # default (allow_set_cookie: false) does, so a session never leaks.
    async def login(request: web.Request) -> web.Response:
        user = request.headers.get("X-User", "anon")
        return web.Response(text=f"hi {user}", headers={**CACHEABLE, "Set-Cookie": f"sid={user}"})

    script(origin, "/login", login)
    victim = await get(client, edge, "/login", {"X-User": "alice"})
    assert victim.headers["Set-Cookie"] == "sid=alice"
    other = await get(client, edge, "/login")
    assert not is_hit(other)
    assert other.headers.getall("Set-Cookie") == ["sid=anon"] and other.body == b"hi anon"
    assert origin.hits("/login") == 2


@pytest.mark.parametrize(
    ("cache_control", "shared"),
    [
        # RFC 9111 section 3.5: only these directives let a shared cache store it.
        pytest.param("max-age=60", False, id="3.5 max-age alone"),
        pytest.param("public, max-age=60", True, id="3.5 public"),
        pytest.param("s-maxage=60", True, id="3.5 s-maxage"),
        pytest.param("max-age=60, must-revalidate", True, id="3.5 must-revalidate"),
    ],
)
async def test_authorized_response_is_stored_only_when_allowed(
    edge: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    cache_control: str,
    shared: bool,
) -> None:
    async def account(request: web.Request) -> web.Response:
        who = request.headers.get("Authorization", "nobody")
        return web.Response(text=f"account of {who}", headers={"Cache-Control": cache_control})

    script(origin, "/account", account)
    await get(client, edge, "/account", {"Authorization": "Bearer alice"})
    other = await get(client, edge, "/account")
    assert is_hit(other) is shared
    # Shared only because the origin said so; otherwise the clean client gets its own.
    assert other.body == (b"account of Bearer alice" if shared else b"account of nobody")
    assert origin.hits("/account") == (1 if shared else 2)


async def test_vary_keeps_an_unkeyed_header_variant_apart(
    edge: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession
) -> None:
    # RFC 9111 section 4.1: stored under the Vary'ed value, served only to a match.
    async def themed(request: web.Request) -> web.Response:
        theme = request.headers.get("X-Theme", "default")
        return web.Response(text=f"theme={theme}", headers={**CACHEABLE, "Vary": "X-Theme"})

    script(origin, "/themed", themed)
    await get(client, edge, "/themed", {"X-Theme": "<script>"})
    clean = await get(client, edge, "/themed")
    assert not is_hit(clean) and clean.body == b"theme=default"
    other = await get(client, edge, "/themed", {"X-Theme": "dark"})
    assert not is_hit(other) and other.body == b"theme=dark"
    again = await get(client, edge, "/themed", {"X-Theme": "<script>"})
    assert is_hit(again) and again.body == b"theme=<script>"
    assert origin.hits("/themed") == 3


@pytest.mark.parametrize(
    "response_fields",
    [
        pytest.param({**CACHEABLE, "Vary": "Cookie"}, id="4.1 vary-cookie"),
        pytest.param({"Cache-Control": "private, max-age=60"}, id="5.2.2.7 private"),
    ],
)
async def test_cookie_personalised_response_not_served_to_others(
    edge: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    response_fields: dict[str, str],
) -> None:
    async def greet(request: web.Request) -> web.Response:
        return web.Response(
            text=f"cookie={request.headers.get('Cookie', '-')}", headers=response_fields
        )

    script(origin, "/greet", greet)
    await get(client, edge, "/greet", {"Cookie": "sid=alice"})
    clean = await get(client, edge, "/greet")
    assert not is_hit(clean) and clean.body == b"cookie=-"
    assert origin.hits("/greet") == 2
