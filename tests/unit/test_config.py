"""Config parsing and validation: every error names file, line and key path."""

from __future__ import annotations

import textwrap

import pytest

from edgeproxy.config import Address, parse_config, parse_size
from edgeproxy.errors import ConfigError

GOOD = textwrap.dedent(
    """\
    listen: 0.0.0.0:8080
    admin:
      listen: 127.0.0.1:9191
      token_file: /etc/edgeproxy/token
    cache:
      dir: /var/cache/edgeproxy
      size_limit: 2GiB
      max_object_size: 16MiB
      heuristic_fraction: 0.2
      heuristic_max: 3600
      status_name: edge-1
    origins:
      app:
        servers: [http://10.0.0.1:8000, http://10.0.0.2:8000]
        connect_timeout: 1.5
        read_timeout: 10
        max_connections: 50
        client: aiohttp
        host: www.example.com
      static: https://static.example.net
    routes:
      - name: api
        match: {host: api.example.com, path: {prefix: /v1/}, methods: [GET, head]}
        origin: app
        cache: off
      - name: assets
        match: {host: "*.example.com", path: {glob: "/assets/**/*.js"}}
        origin: static
        default_ttl: 300
        max_ttl: 86400
        stale_while_revalidate: 30
        stale_if_error: 600
        cache_key: {query_params: [v], sort_query: true, headers: [Accept-Language],
                    cookies: [ab]}
        allow_set_cookie: true
        request_headers: {set: {X-Edge: "1"}, remove: [Cookie]}
        response_headers: {add: {X-Served-By: edge}, remove: [Server]}
      - name: rest
        match: {path: {regex: "^/(img|css)/"}}
        origin: app
        force_ttl: 60
    default_route: rest
    """
)


def test_full_file_parses_into_typed_objects() -> None:
    cfg = parse_config(GOOD, "edge.yaml")
    assert cfg.listen == Address("0.0.0.0", 8080)
    assert cfg.admin.listen == Address("127.0.0.1", 9191)
    assert cfg.cache.size_limit == 2 * 1024**3
    assert cfg.cache.max_object_size == 16 * 1024**2
    assert cfg.origins["app"].servers == ("http://10.0.0.1:8000", "http://10.0.0.2:8000")
    assert cfg.origins["app"].host_header == "www.example.com"
    assert cfg.origins["static"].servers == ("https://static.example.net",)
    assert (cfg.origins["app"].client, cfg.origins["static"].client) == ("aiohttp", "lean")
    assert [r.name for r in cfg.routes] == ["api", "assets", "rest"]
    api, assets, rest = cfg.routes
    assert api.cache is False
    assert api.match.methods == frozenset({"GET", "HEAD"})
    assert assets.policy.default_ttl == 300 and assets.policy.max_ttl == 86400
    assert assets.policy.allow_set_cookie is True
    assert api.policy.allow_set_cookie is False
    assert assets.stale_while_revalidate == 30 and assets.stale_if_error == 600
    assert assets.key.query_params == ("v",) and assets.key.headers == ("accept-language",)
    assert assets.request_headers.set == (("X-Edge", "1"),)
    assert assets.response_headers.remove == ("Server",)
    assert rest.policy.force_ttl == 60
    assert assets.policy.heuristic_fraction == 0.2  # cache defaults flow into routes
    assert cfg.default_route == "rest"


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "config/edge.yaml")
    return info.value.errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen: nowhere\n", "config/edge.yaml:1 listen: expected HOST:PORT, got 'nowhere'"),
        ("bogus: 1\n", "config/edge.yaml:1 bogus: unknown key"),
        ("cache:\n  size_limit: -5\n", "config/edge.yaml:2 cache.size_limit: expected a size"),
        ("cache:\n  heuristic_fraction: 2\n", "config/edge.yaml:2 cache.heuristic_fraction:"),
        ("cache:\n  allow_set_cookie: maybe\n", "config/edge.yaml:2 cache.allow_set_cookie:"),
        (
            "origins:\n  app:\n    servers: [ftp://x]\n",
            "config/edge.yaml:3 origins.app.servers[0]: expected an absolute http(s) URL",
        ),
        (
            "origins:\n  app:\n    url: http://x/path\n",
            "config/edge.yaml:3 origins.app.url: expected an absolute http(s) URL with no path",
        ),
        (
            "origins:\n  app:\n    url: http://x\n    read_timeout: -1\n",
            "config/edge.yaml:4 origins.app.read_timeout: expected seconds >= 0, got -1",
        ),
        (
            "origins:\n  app:\n    url: http://x\n    colour: red\n",
            "config/edge.yaml:4 origins.app.colour: unknown key",
        ),
        (
            "origins:\n  app: {connect_timeout: 1}\n",
            "config/edge.yaml:2 origins.app.servers: required",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - name: r\n    origin: nope\n",
            "config/edge.yaml:4 routes[0].origin: unknown origin 'nope' (known: a)",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - {name: r, origin: a}\n  - {name: r, origin: a}\n",
            "config/edge.yaml:4 routes[1].name: duplicate route name 'r'",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - name: r\n    match:\n      path: {regex: '(['}\n",
            "config/edge.yaml:5 routes[0].match.path: invalid regex '(['",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - name: r\n    default_ttl: -3\n",
            "config/edge.yaml:4 routes[0].default_ttl: expected seconds >= 0, got -3",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - name: r\n    cache: sometimes\n",
            "config/edge.yaml:4 routes[0].cache: expected on or off, got 'sometimes'",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - name: r\n"
            "    match: {path: {prefix: /a, glob: /b}}\n",
            "config/edge.yaml:4 routes[0].match.path: give exactly one of prefix, glob, regex",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - name: r\n    match: {host: 'bad host!'}\n",
            "config/edge.yaml:4 routes[0].match.host: expected a host name or *.example.com",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - name: r\n    match: {methods: ['G T']}\n",
            "config/edge.yaml:4 routes[0].match.methods[0]: expected an HTTP method",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - name: r\n    cache_key: {ignore_query: true, "
            "query_params: [a]}\n",
            "config/edge.yaml:4 routes[0].cache_key.ignore_query: conflicts with query_params",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - name: r\n    request_headers:\n"
            "      set: {'Bad Name': x}\n",
            "config/edge.yaml:5 routes[0].request_headers.set.Bad Name: not a valid header field",
        ),
        (
            "origins: {a: http://x}\nroutes: [{name: r}]\ndefault_route: other\n",
            "config/edge.yaml:3 default_route: no route named 'other'",
        ),
        (
            "origin: http://x\norigins: {a: http://y}\n",
            "config/edge.yaml:1 origin: use either `origin` (one) or `origins` (named), not both",
        ),
        (
            "origins:\n  a:\n    url: http://x\n    client: curl\n",
            "config/edge.yaml:4 origins.a.client: expected lean or aiohttp, got 'curl'",
        ),
        ("listen: [1\n", "config/edge.yaml:2: invalid YAML"),
        ("- a\n- b\n", "config/edge.yaml:1 (top level): expected a mapping"),
    ],
)
def test_each_error_names_file_line_and_key(text: str, expected: str) -> None:
    errors = errors_of(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_all_errors_reported_at_once() -> None:
    errors = errors_of(
        """\
        listen: nope
        cache:
          size_limit: lots
        origins:
          a: http://x
        routes:
          - name: r
            origin: missing
            match: {path: {regex: "("}}
        """
    )
    assert len(errors) == 4
    assert [e.split(" ")[0] for e in errors] == [
        "config/edge.yaml:1",
        "config/edge.yaml:3",
        "config/edge.yaml:8",
        "config/edge.yaml:9",
    ]


def test_single_origin_shorthand_gets_a_catch_all_route() -> None:
    cfg = parse_config("origin: http://127.0.0.1:8000\n", "f.yaml")
    assert cfg.origin is not None and cfg.origin.url == "http://127.0.0.1:8000"
    assert [(r.name, r.origin) for r in cfg.routes] == [("default", "default")]


def test_flags_override_file_values() -> None:
    cfg = parse_config("origin: http://a:1\nlisten: 127.0.0.1:1\n", "f.yaml").with_overrides(
        origin="http://b:2", listen="127.0.0.1:3", cache_dir="/tmp/c", admin_listen="127.0.0.1:4"
    )
    assert cfg.origin is not None and cfg.origin.url == "http://b:2"
    assert cfg.listen == Address("127.0.0.1", 3)
    assert cfg.admin.listen == Address("127.0.0.1", 4)
    assert cfg.cache.directory == "/tmp/c"


def test_bad_flags_are_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("", "f.yaml").with_overrides(origin="ftp://x", listen="x")
    assert info.value.errors == [
        "--listen: expected HOST:PORT, got 'x'",
        "--origin: expected an absolute http(s) URL, got 'ftp://x'",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (10, 10),
        ("64k", 64000),
        ("64KiB", 65536),
        ("1GiB", 1 << 30),
        ("1.5MB", 1500000),
        ("-1", None),
        (-1, None),
        ("lots", None),
        (True, None),
        (1.5, None),
    ],
)
def test_parse_size(value: object, expected: int | None) -> None:
    assert parse_size(value) == expected


def test_example_config_file_is_valid() -> None:
    from pathlib import Path

    from edgeproxy.config import load_config

    cfg = load_config(str(Path(__file__).resolve().parents[2] / "config" / "edge.yaml"))
    assert cfg.routes


# -- Protecting the origin: pools, stale serving, collapsing, targeted fields ----

PROTECT = textwrap.dedent(
    """\
    cache:
      targeted_field: Acme-Cache-Control
      strip_targeted: false
      collapse_wait: 2.5
      collapse_max_waiters: 50
      hit_for_pass: 0
      collapse_buffer: 256KiB
    origins:
      app:
        servers: [http://10.0.0.1:8000, http://10.0.0.2:8000]
        balance: least_connections
        health_check: {path: /healthz, interval: 2, timeout: 0.5, rise: 3}
        fail_threshold: 5
        ejection_timeout: 10
      static:
        url: https://static.example.net
        health_check: {path: /ping, interval: 1}
    routes:
      - name: assets
        origin: static
        stale_while_revalidate: 30
        stale_if_error: 600
        grace: 3600
      - name: rest
        origin: app
    """
)


def test_origin_protection_keys_parse_into_typed_objects() -> None:
    from edgeproxy.pool import PoolSettings, Strategy

    cfg = parse_config(PROTECT, "edge.yaml")
    c = cfg.cache
    assert (c.targeted_field, c.strip_targeted) == ("Acme-Cache-Control", False)
    assert (c.collapse_wait, c.collapse_max_waiters, c.hit_for_pass) == (2.5, 50, 0.0)
    assert c.collapse_buffer == 256 * 1024
    # RFC 9213 section 2.1: our field first, then CDN-Cache-Control.
    assert c.targeted == ("acme-cache-control", "cdn-cache-control")
    assert cfg.origins["app"].pool == PoolSettings(
        strategy=Strategy.LEAST_CONNECTIONS,
        health_path="/healthz",
        interval=2.0,
        timeout=0.5,
        rise=3,
        fail_threshold=5,
        ejection_timeout=10.0,
    )
    # An interval under the default 2 s timeout brings the timeout down with it.
    assert cfg.origins["static"].pool == PoolSettings(
        health_path="/ping", interval=1.0, timeout=1.0
    )
    assets, rest = cfg.routes
    assert assets.policy.stale_while_revalidate == 30 and assets.policy.stale_if_error == 600
    assert assets.policy.grace == 3600
    assert assets.policy.targeted == ("acme-cache-control", "cdn-cache-control")
    assert rest.policy.stale_if_error is None and rest.policy.grace == 86400


def test_origin_protection_defaults() -> None:
    from edgeproxy.pool import PoolSettings

    cfg = parse_config("origin: http://x\n", "edge.yaml")
    c = cfg.cache
    assert c.targeted == ("edgeproxy-cache-control", "cdn-cache-control")
    assert c.strip_targeted is True
    assert (c.collapse_wait, c.collapse_max_waiters, c.hit_for_pass) == (10.0, 1000, 30.0)
    assert c.collapse_buffer == 256 * 1024
    assert cfg.origins["default"].pool == PoolSettings()
    assert cfg.routes[0].policy.targeted == c.targeted


def test_targeted_field_may_be_cdn_cache_control_itself() -> None:
    cfg = parse_config("cache: {targeted_field: CDN-Cache-Control}\n", "edge.yaml")
    assert cfg.cache.targeted == ("cdn-cache-control",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cache:\n  targeted_field: 'Bad Name'\n",
            "config/edge.yaml:2 cache.targeted_field: expected a header field name",
        ),
        ("cache:\n  strip_targeted: 1\n", "config/edge.yaml:2 cache.strip_targeted: expected true"),
        ("cache:\n  collapse_wait: -1\n", "config/edge.yaml:2 cache.collapse_wait: expected sec"),
        (
            "cache:\n  collapse_max_waiters: many\n",
            "config/edge.yaml:2 cache.collapse_max_waiters: expected an integer >= 0",
        ),
        ("cache:\n  hit_for_pass: x\n", "config/edge.yaml:2 cache.hit_for_pass: expected seconds"),
        ("cache:\n  collapse_buffer: lots\n", "config/edge.yaml:2 cache.collapse_buffer: expected"),
        (
            "origins:\n  a:\n    url: http://x\n    balance: random\n",
            "config/edge.yaml:4 origins.a.balance: expected round_robin or least_connections",
        ),
        (
            "origins:\n  a:\n    url: http://x\n    fail_threshold: 0\n",
            "config/edge.yaml:4 origins.a.fail_threshold: expected an integer > 0, got 0",
        ),
        (
            "origins:\n  a:\n    url: http://x\n    ejection_timeout: -1\n",
            "config/edge.yaml:4 origins.a.ejection_timeout: expected seconds >= 0",
        ),
        (
            "origins:\n  a:\n    url: http://x\n    health_check: {interval: 1}\n",
            "config/edge.yaml:4 origins.a.health_check.path: required",
        ),
        (
            "origins:\n  a:\n    url: http://x\n    health_check:\n      path: health\n",
            "config/edge.yaml:5 origins.a.health_check.path: expected a path starting with /",
        ),
        (
            "origins:\n  a:\n    url: http://x\n    health_check:\n      path: /h\n"
            "      interval: 0\n",
            "config/edge.yaml:6 origins.a.health_check.interval: expected seconds > 0, got 0",
        ),
        (
            "origins:\n  a:\n    url: http://x\n    health_check:\n      path: /h\n      rise: 0\n",
            "config/edge.yaml:6 origins.a.health_check.rise: expected an integer > 0",
        ),
        (
            "origins:\n  a:\n    url: http://x\n    health_check:\n      path: /h\n"
            "      colour: red\n",
            "config/edge.yaml:6 origins.a.health_check.colour: unknown key",
        ),
        (
            "origins:\n  a:\n    url: http://x\n    health_check:\n      path: /h\n"
            "      interval: 1\n      timeout: 5\n",
            "config/edge.yaml:5 origins.a.health_check: timeout must be > 0 and at most interval",
        ),
        (
            "origins: {a: http://x}\nroutes:\n  - name: r\n    grace: -1\n",
            "config/edge.yaml:4 routes[0].grace: expected seconds >= 0, got -1",
        ),
    ],
)
def test_origin_protection_errors_name_file_line_and_key(text: str, expected: str) -> None:
    errors = errors_of(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_example_cluster_block_is_valid_once_uncommented() -> None:
    """config/edge.yaml documents `cluster:` commented out (no Redis in the demo)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "config" / "edge.yaml").read_text()
    lines = text.splitlines()
    start = lines.index("# cluster:")
    block: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line.removeprefix("# "))
    cfg = parse_config("origin: http://127.0.0.1:1\n" + "\n".join(block) + "\n", "edge.yaml")
    assert cfg.cluster.redis_url == "redis://127.0.0.1:6379/0"
    assert cfg.cluster.shared_tier is False
