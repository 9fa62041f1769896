"""Route precedence and matching (first match wins), header edits, key rules."""

from __future__ import annotations

import textwrap

import pytest
from multidict import CIMultiDict

from edgeproxy.cachekey import apply_key_rules, key_extras
from edgeproxy.config import HeaderEdits, glob_regex, parse_config
from edgeproxy.routing import apply_edits, bare_host, host_matches, select_route

CONFIG = parse_config(
    textwrap.dedent(
        """\
        origins: {app: http://a, img: http://i}
        routes:
          - name: admin-deny
            match: {path: /admin}
          - name: api-writes
            match: {host: api.example.com, methods: [POST, PUT]}
            origin: app
            cache: off
          - name: api
            match: {host: api.example.com}
            origin: app
          - name: images
            match: {host: "*.example.com", path: {glob: "/img/**.png"}}
            origin: img
          - name: versioned
            match: {path: {regex: "\\\\.v[0-9]+\\\\."}}
            origin: img
          - name: www
            match: {host: [www.example.com, example.com]}
            origin: app
        default_route: www
        """
    ),
    "routes.yaml",
)


@pytest.mark.parametrize(
    ("host", "path", "method", "expected"),
    [
        ("api.example.com", "/admin/x", "GET", "admin-deny"),  # first match wins
        ("api.example.com", "/v1/items", "POST", "api-writes"),
        ("api.example.com", "/v1/items", "GET", "api"),
        ("API.Example.COM:8080", "/v1", "GET", "api"),  # case and port ignored
        ("cdn.example.com", "/img/a/b.png", "GET", "images"),
        ("a.b.example.com", "/img/x.png", "GET", "images"),
        ("example.com", "/img/x.png", "GET", "www"),  # *.example.com excludes the apex
        ("cdn.example.com", "/img/x.jpg", "GET", "www"),  # no match -> default route
        ("other.org", "/app.v12.js", "GET", "versioned"),  # regex searches the path
        ("other.org", "/app.js", "GET", "www"),  # default route
    ],
)
def test_route_precedence(host: str, path: str, method: str, expected: str) -> None:
    route = select_route(CONFIG.routes, CONFIG.default_route, host, path, method)
    assert route is not None and route.name == expected


def test_no_route_and_no_default_is_none() -> None:
    assert select_route(CONFIG.routes, None, "other.org", "/x", "GET") is None


def test_route_without_origin_is_selected_so_the_proxy_can_explain() -> None:
    route = select_route(CONFIG.routes, None, "x", "/admin", "GET")
    assert route is not None and route.origin is None


@pytest.mark.parametrize(
    ("patterns", "host", "ok"),
    [
        ((), "anything", True),
        (("example.com",), "example.com", True),
        (("example.com",), "www.example.com", False),
        (("*.example.com",), "www.example.com", True),
        (("*.example.com",), "example.com", False),
        (("*.example.com",), "badexample.com", False),
    ],
)
def test_host_matches(patterns: tuple[str, ...], host: str, ok: bool) -> None:
    assert host_matches(patterns, host) is ok


@pytest.mark.parametrize(
    ("header", "host"),
    [("Example.com:80", "example.com"), ("[::1]:8080", "[::1]"), ("a.b.", "a.b"), ("x", "x")],
)
def test_bare_host(header: str, host: str) -> None:
    assert bare_host(header) == host


@pytest.mark.parametrize(
    ("pattern", "path", "ok"),
    [
        ("/a/*.js", "/a/x.js", True),
        ("/a/*.js", "/a/b/x.js", False),  # * stays inside one segment
        ("/a/**.js", "/a/b/x.js", True),
        ("/a/?.js", "/a/x.js", True),
        ("/a/?.js", "/a/xy.js", False),
        ("/a.b", "/aXb", False),  # dots are literal
    ],
)
def test_glob(pattern: str, path: str, ok: bool) -> None:
    assert (glob_regex(pattern).fullmatch(path) is not None) is ok


def test_header_edits_remove_then_set_then_add() -> None:
    h: CIMultiDict[str] = CIMultiDict([("Server", "x"), ("X-A", "1"), ("X-A", "2"), ("Keep", "k")])
    apply_edits(h, HeaderEdits(add=(("X-A", "3"),), set=(("X-B", "b"),), remove=("server",)))
    assert list(h.items()) == [
        ("X-A", "1"),
        ("X-A", "2"),
        ("Keep", "k"),
        ("X-B", "b"),
        ("X-A", "3"),
    ]
    apply_edits(h, HeaderEdits(set=(("x-a", "only"),)))
    assert h.getall("X-A") == ["only"]


@pytest.mark.parametrize(
    ("target", "rules", "expected"),
    [
        ("/p?b=2&a=1", {}, "/p?b=2&a=1"),
        ("/p?b=2&a=1", {"ignore_query": True}, "/p"),
        ("/p?b=2&a=1", {"sort_query": True}, "/p?a=1&b=2"),
        ("/p?b=2&a=1&utm=x", {"query_params": ("a", "b")}, "/p?b=2&a=1"),
        ("/p?utm=x", {"query_params": ("a",)}, "/p"),
        ("/p?a=1&&a=0", {"sort_query": True}, "/p?a=1&a=0"),
        ("/p", {"sort_query": True}, "/p"),
    ],
)
def test_key_query_rules(target: str, rules: dict[str, object], expected: str) -> None:
    assert apply_key_rules(target, **rules) == expected  # type: ignore[arg-type]


def test_key_extras_fragment() -> None:
    assert key_extras([]) == ""
    assert (
        key_extras([("h:accept-language", "fr"), ("c:ab", None)]) == "#h:accept-language=fr&c:ab="
    )
