"""Typed, frozen configuration parsed once from YAML (the only module importing yaml).

The rest of the code never reads raw dicts. Every error names file, line and
key path (`edge.yaml:42 routes[3].match.path: invalid regex ...`), and all
errors in a file are collected before raising `ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml

from edgeproxy.cachekey import KeyRules
from edgeproxy.errors import ConfigError
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.policy.transform import Compression
from edgeproxy.pool import PoolSettings, Strategy

T = TypeVar("T")

DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


OriginClient = Literal["lean", "aiohttp"]


@dataclass(frozen=True, slots=True)
class OriginConfig:
    name: str
    servers: tuple[str, ...]  # scheme://host[:port], no path
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    host_header: str | None = None  # Host sent upstream; None = the server's own
    max_connections: int = 100
    # Requests to http:// servers go through the lean client (h1client.py)
    # unless "aiohttp"; https:// (and credentialed) servers always use aiohttp's.
    client: OriginClient = "lean"
    # Balancing, passive ejection and active health checks (pool.py).
    pool: PoolSettings = field(default_factory=PoolSettings)

    @property
    def url(self) -> str:
        return self.servers[0]


@dataclass(frozen=True, slots=True)
class PathMatch:
    kind: Literal["prefix", "glob", "regex"]
    pattern: str
    regex: re.Pattern[str] | None = None  # compiled glob or regex

    def matches(self, path: str) -> bool:
        if self.kind == "prefix":
            return path.startswith(self.pattern)
        assert self.regex is not None
        if self.kind == "glob":
            return self.regex.fullmatch(path) is not None
        return self.regex.search(path) is not None  # like nginx `location ~`


@dataclass(frozen=True, slots=True)
class RouteMatch:
    hosts: tuple[str, ...] = ()  # exact or "*.example.com"; empty = any host
    path: PathMatch | None = None
    methods: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    add: tuple[tuple[str, str], ...] = ()
    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.set or self.remove)


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: RouteMatch = field(default_factory=RouteMatch)
    origin: str | None = None  # None: answered 404 with a reason
    cache: bool = True  # off = pure pass-through, Cache-Status fwd=bypass
    policy: CachePolicy = field(default_factory=CachePolicy)
    key: KeyRules = field(default_factory=KeyRules)
    stale_while_revalidate: float | None = None
    stale_if_error: float | None = None
    request_headers: HeaderEdits = field(default_factory=HeaderEdits)
    response_headers: HeaderEdits = field(default_factory=HeaderEdits)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    listen: Address = Address("127.0.0.1", 9090)
    token_file: str | None = None  # the token itself never lives in the YAML
    token_env: str = "EDGEPROXY_ADMIN_TOKEN"
    purge_method: bool = False  # accept `PURGE <url>` on the public listener


@dataclass(frozen=True, slots=True)
class CacheConfig:
    directory: str = "./cache"
    size_limit: int = 1 << 30
    max_object_size: int = 64 << 20
    heuristic_fraction: float = 0.1
    heuristic_max: float = 86400.0
    status_name: str = "edgeproxy"
    allow_set_cookie: bool = False
    # RFC 9213: our own targeted field, obeyed before CDN-Cache-Control; both
    # are removed from client responses unless strip_targeted is off.
    targeted_field: str = "Edgeproxy-Cache-Control"
    strip_targeted: bool = True
    # Request collapsing (collapse.py): how long a waiter waits for the
    # leader's response head, how many may wait per key (0: no collapsing),
    # how long a key whose response was uncacheable skips collapsing, and how
    # much of a body is held in memory for waiters before spilling to a file
    # (as much as the disk store holds in memory before it spills).
    collapse_wait: float = 10.0
    collapse_max_waiters: int = 1000
    hit_for_pass: float = 30.0
    collapse_buffer: int = 256 << 10
    # Surrogate keys (purge by tag): the response fields read for tags, and
    # whether they are removed from responses to clients.
    tag_headers: tuple[str, ...] = ("surrogate-key", "cache-tag")
    strip_tags: bool = True
    # The in-memory hot tier in front of diskcache (store/tiered.py), per
    # worker: total bytes (0 turns it off) and the largest body it keeps.
    memory_size: int = 64 << 20
    memory_max_object: int = 256 << 10
    # Fresh hot-tier hits answered by the listener's protocol before aiohttp
    # (wire.py): same rules, a fraction of the cost. Off: every request
    # goes through aiohttp and proxy.handle.
    fast_path: bool = True
    # Edge compression (policy/transform.py, compress.py): the `compress` block.
    compress: Compression = field(default_factory=Compression)

    @property
    def targeted(self) -> tuple[str, ...]:
        """The target list, most specific first (RFC 9213 section 2.1)."""
        own = self.targeted_field.lower()
        return (own,) if own == "cdn-cache-control" else (own, "cdn-cache-control")

    def policy(self) -> CachePolicy:
        return CachePolicy(
            heuristic_fraction=self.heuristic_fraction,
            heuristic_max=self.heuristic_max,
            allow_set_cookie=self.allow_set_cookie,
            max_object_size=self.max_object_size,
            targeted=self.targeted,
        )


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Many edges, one cache (cluster.py): purges shared through a Redis Stream,
    optionally a shared Redis cache tier. Off unless `redis_url` is set."""

    redis_url: str | None = None
    edge_id: str | None = None  # default: hostname:listen-port
    namespace: str = "edgeproxy"  # Redis key prefix
    stream_max_len: int = 100_000  # purges the stream keeps (MAXLEN ~)
    heartbeat: float = 1.0  # seconds between an edge's heartbeats
    edge_ttl: float = 5.0  # an edge silent this long is not live
    wait_timeout: float = 5.0  # the bound on a purge's "wait": true
    queue_max: int = 10_000  # purges kept while Redis is unreachable
    shared_tier: bool = False
    shared_max_object: int = 1 << 20
    shared_timeout: float = 0.1  # a shared-tier lookup's budget; past it, a miss


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client connection may send or hold (the `limits` block).

    Read when a connection opens (server.py), so a reload applies to new
    connections.
    """

    max_request_line: int = 8190  # bytes; longer: 414 (RFC 9112 section 3)
    max_header_size: int = 65536  # bytes per field line; longer: 431 (RFC 6585 section 5)
    max_headers: int = 128  # field lines; more: 431
    header_timeout: float = 30.0  # seconds from a head's first byte to its end; then 408
    body_timeout: float = 60.0  # seconds a request body may go without a byte; then closed
    keepalive_timeout: float = 75.0  # seconds an idle connection stays open
    # Open client connections per worker process; past it a new connection
    # gets a 503 and is closed (server.py). 0: no cap (the fd limit is then it).
    max_connections: int = 4096


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The `log` block: the access log (accesslog.py), one line per request,
    JSON or Apache/nginx combined; `serve` writes the lines to stdout on
    their own (cli.py), apart from errors on stderr."""

    access_log: bool = True
    access_format: Literal["json", "combined"] = "json"


@dataclass(frozen=True, slots=True)
class Config:
    listen: Address = Address("127.0.0.1", 8080)
    admin: AdminConfig = field(default_factory=AdminConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    origins: Mapping[str, OriginConfig] = field(default_factory=lambda: MappingProxyType({}))
    routes: tuple[Route, ...] = ()
    default_route: str | None = None
    via: str = "edgeproxy"
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    limits: Limits = field(default_factory=Limits)
    # Worker processes (workers.py); None: one per CPU. Read at start only.
    workers: int | None = None
    # Seconds in-flight requests get to finish on SIGTERM/SIGINT. Read at start only.
    drain_timeout: float = 30.0
    log: LogConfig = field(default_factory=LogConfig)
    source: str | None = None  # the file it came from, for reloads

    @property
    def origin(self) -> OriginConfig | None:
        """The default origin (the one `--origin` sets)."""
        return self.origins.get(DEFAULT) or next(iter(self.origins.values()), None)

    def with_overrides(
        self,
        *,
        origin: str | None = None,
        listen: str | None = None,
        cache_dir: str | None = None,
        admin_listen: str | None = None,
    ) -> Config:
        """Command-line flags win over file values; errors name the flag."""
        errors: list[str] = []
        cfg = self
        for flag, value, attr in (
            ("--listen", listen, "listen"),
            ("--admin-listen", admin_listen, "admin"),
        ):
            if value is None:
                continue
            addr = parse_address(value)
            if addr is None:
                errors.append(f"{flag}: expected HOST:PORT, got {value!r}")
            elif attr == "listen":
                cfg = replace(cfg, listen=addr)
            else:
                cfg = replace(cfg, admin=replace(cfg.admin, listen=addr))
        if origin is not None:
            problem = check_origin_url(origin)
            if problem:
                errors.append(f"--origin: {problem}")
            else:
                base = cfg.origins.get(DEFAULT) or OriginConfig(DEFAULT, (origin,))
                origins = dict(cfg.origins)
                origins[DEFAULT] = replace(base, servers=(origin.rstrip("/"),))
                cfg = replace(cfg, origins=MappingProxyType(origins))
                if not cfg.routes:
                    cfg = replace(cfg, routes=(default_route(cfg, DEFAULT),))
        if cache_dir is not None:
            cfg = replace(cfg, cache=replace(cfg.cache, directory=cache_dir))
        if errors:
            raise ConfigError(errors)
        return cfg


def default_route(cfg: Config, origin: str) -> Route:
    """The catch-all route used when a file names an origin but no routes."""
    return Route(name=DEFAULT, origin=origin, policy=cfg.cache.policy())


# -- scalar parsers ---------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}


def parse_size(value: Any) -> int | None:
    """Bytes from an int or "512MiB", "1GB", "64k"; None when invalid or negative."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = _SIZE.match(value)
    if not m:
        return None
    unit = (m.group(2) or "").lower().removesuffix("b")
    return int(float(m.group(1)) * _UNITS[unit])


def parse_address(value: str) -> Address | None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    host = host.strip("[]") or "127.0.0.1"
    return Address(host, int(port))


def check_origin_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as e:
        return f"invalid URL {url!r}: {e}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an absolute http(s) URL, got {url!r}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"origin URL must have no path, query or fragment: {url!r}"
    return None


_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_FIELD = _METHOD


def glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` matches within one path segment, `**` across segments, `?` one char."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


# -- YAML with line numbers ---------------------------------------------------


class _Reader:
    """Reads typed values out of a composed YAML node tree, collecting errors."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self._errors: list[tuple[int, str]] = []

    @property
    def errors(self) -> list[str]:
        """In file order, whatever order the checks ran in."""
        return [msg for _, msg in sorted(self._errors, key=lambda e: e[0])]

    def error(self, node: yaml.Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self._errors.append((line, f"{self.filename}:{line} {path}: {message}"))

    def mapping(self, node: yaml.Node, path: str, allowed: set[str]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path or "(top level)", "expected a mapping")
            return {}
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if key not in allowed:
                self.error(key_node, sub, f"unknown key (allowed: {', '.join(sorted(allowed))})")
            elif key in out:
                self.error(key_node, sub, "duplicate key")
            else:
                out[key] = value_node
        return out

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, path, "expected a list")
            return []
        return list(node.value)

    def value(self, node: yaml.Node) -> Any:
        return yaml.safe_load(yaml.serialize(node))

    def scalar(
        self, node: yaml.Node, path: str, parse: Callable[[Any], T | None], what: str
    ) -> T | None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, path, f"expected {what}")
            return None
        value = self.value(node)
        parsed = parse(value)
        if parsed is None:
            self.error(node, path, f"expected {what}, got {value!r}")
        return parsed

    def table(
        self,
        node: yaml.Node,
        path: str,
        fields: Mapping[str, tuple[Callable[[Any], Any], str]],
        extra: frozenset[str] = frozenset(),
    ) -> tuple[dict[str, Any], dict[str, yaml.Node]]:
        """A block of scalar keys, each with its parser and description.

        Returns the parsed values and every key's node (keys in `extra` are
        allowed, left to the caller, and only appear among the nodes).
        """
        m = self.mapping(node, path, {*fields, *extra})
        values: dict[str, Any] = {}
        for key, value_node in m.items():
            if key in extra:
                continue
            parse, what = fields[key]
            v = self.scalar(value_node, f"{path}.{key}", parse, what)
            if v is not None:
                values[key] = v
        return values, m

    def strings(
        self, node: yaml.Node, path: str, parse: Callable[[Any], str | None], what: str
    ) -> tuple[str, ...]:
        if isinstance(node, yaml.ScalarNode):
            one = self.scalar(node, path, parse, what)
            return (one,) if one is not None else ()
        out: list[str] = []
        for i, item in enumerate(self.sequence(node, path)):
            v = self.scalar(item, f"{path}[{i}]", parse, what)
            if v is not None:
                out.append(v)
        return tuple(out)


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _on_off(v: Any) -> bool | None:
    # YAML 1.1 reads a bare `on`/`off` as a boolean already.
    if isinstance(v, bool):
        return v
    return {"on": True, "off": False}.get(v) if isinstance(v, str) else None


def _seconds(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        return None
    return float(v)


def _positive_seconds(v: Any) -> float | None:
    s = _seconds(v)
    return s if s is not None and s > 0 else None


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _fraction(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        return None
    return float(v)


def _positive_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _field_name(v: Any) -> str | None:
    return v if isinstance(v, str) and _FIELD.match(v) else None


def _method(v: Any) -> str | None:
    return v.upper() if isinstance(v, str) and _METHOD.match(v) else None


def _host_pattern(v: Any) -> str | None:
    if not isinstance(v, str):
        return None
    h = v.strip().lower()
    return h if _HOST.match(h) else None


def _origin_url(v: Any) -> str | None:
    return v.rstrip("/") if isinstance(v, str) and check_origin_url(v) is None else None


def load_config(path: str) -> Config:
    """Parse and validate a YAML file; ConfigError lists every problem found."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from e
    return parse_config(text, path)


TOP_KEYS = {
    "listen",
    "admin",
    "origin",
    "origins",
    "routes",
    "default_route",
    "cache",
    "via",
    "cluster",
    "limits",
    "log",
    "workers",
    "drain_timeout",
}


def parse_config(text: str, filename: str = "<config>") -> Config:
    r = _Reader(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([f"{filename}:{line}: invalid YAML: {problem}"]) from e
    cfg = Config(source=filename)
    if root is None:
        return cfg
    top = r.mapping(root, "", TOP_KEYS)

    if "listen" in top:
        addr = r.scalar(top["listen"], "listen", lambda v: parse_address(str(v)), "HOST:PORT")
        cfg = replace(cfg, listen=addr) if addr else cfg
    if "via" in top:
        via = r.scalar(top["via"], "via", _field_name, "a pseudonym token for Via")
        cfg = replace(cfg, via=via) if via else cfg
    if "admin" in top:
        cfg = replace(cfg, admin=_admin(r, top["admin"], "admin"))
    if "cache" in top:
        cfg = replace(cfg, cache=_cache(r, top["cache"], "cache"))
    if "cluster" in top:
        cfg = replace(cfg, cluster=_cluster(r, top["cluster"], "cluster"))
    if "limits" in top:
        cfg = replace(cfg, limits=_limits(r, top["limits"], "limits"))
    if "log" in top:
        cfg = replace(cfg, log=_log(r, top["log"], "log"))
    if "workers" in top and r.value(top["workers"]) is not None:  # null: one per CPU
        n = r.scalar(top["workers"], "workers", _positive_int, "an integer > 0")
        cfg = replace(cfg, workers=n) if n is not None else cfg
    if "drain_timeout" in top:
        d = r.scalar(top["drain_timeout"], "drain_timeout", _seconds, "seconds >= 0")
        cfg = replace(cfg, drain_timeout=d) if d is not None else cfg

    origins: dict[str, OriginConfig] = {}
    if "origin" in top and "origins" in top:
        r.error(top["origin"], "origin", "use either `origin` (one) or `origins` (named), not both")
    elif "origin" in top:
        o = _origin(r, top["origin"], "origin", DEFAULT)
        if o is not None:
            origins[DEFAULT] = o
    elif "origins" in top:
        node = top["origins"]
        if not isinstance(node, yaml.MappingNode):
            r.error(node, "origins", "expected a mapping of origin name -> settings")
        else:
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else ""
                if not isinstance(name, str) or not _FIELD.match(name):
                    r.error(key_node, f"origins.{name}", "origin names are tokens like `app`")
                    continue
                if name in origins:
                    r.error(key_node, f"origins.{name}", "duplicate origin name")
                    continue
                o = _origin(r, value_node, f"origins.{name}", name)
                if o is not None:
                    origins[name] = o
    cfg = replace(cfg, origins=MappingProxyType(origins))

    routes: list[Route] = []
    if "routes" in top:
        seen: set[str] = set()
        for i, node in enumerate(r.sequence(top["routes"], "routes")):
            route = _route(r, node, f"routes[{i}]", cfg, i)
            if route is None:
                continue
            if route.name in seen:
                r.error(node, f"routes[{i}].name", f"duplicate route name {route.name!r}")
            seen.add(route.name)
            routes.append(route)
    elif origins:
        routes.append(default_route(cfg, DEFAULT if DEFAULT in origins else next(iter(origins))))
    cfg = replace(cfg, routes=tuple(routes))

    if "default_route" in top and r.value(top["default_route"]) is not None:  # null: none
        name = r.scalar(top["default_route"], "default_route", _str, "a route name")
        if name is not None and name not in {rt.name for rt in routes}:
            r.error(top["default_route"], "default_route", f"no route named {name!r}")
        cfg = replace(cfg, default_route=name)
    if r.errors:
        raise ConfigError(r.errors)
    return cfg


def _admin(r: _Reader, node: yaml.Node, path: str) -> AdminConfig:
    m = r.mapping(node, path, {"listen", "token_file", "token_env", "purge_method"})
    a = AdminConfig()
    if "listen" in m:
        addr = r.scalar(m["listen"], f"{path}.listen", lambda v: parse_address(str(v)), "HOST:PORT")
        a = replace(a, listen=addr) if addr else a
    if "token_file" in m:
        f = r.scalar(m["token_file"], f"{path}.token_file", _str, "a file path")
        a = replace(a, token_file=f) if f else a
    if "token_env" in m:
        e = r.scalar(
            m["token_env"], f"{path}.token_env", _field_name, "an environment variable name"
        )
        a = replace(a, token_env=e) if e else a
    if "purge_method" in m:
        b = r.scalar(m["purge_method"], f"{path}.purge_method", _bool, "true or false")
        a = replace(a, purge_method=b) if b is not None else a
    return a


def _origin(r: _Reader, node: yaml.Node, path: str, name: str) -> OriginConfig | None:
    if isinstance(node, yaml.ScalarNode):
        u = r.scalar(node, path, _origin_url, "an absolute http(s) URL with no path")
        return OriginConfig(name, (u,)) if u else None
    m = r.mapping(node, path, ORIGIN_KEYS)
    servers: tuple[str, ...] = ()
    if "url" in m and "servers" in m:
        r.error(m["url"], f"{path}.url", "use either `url` or `servers`, not both")
    elif "url" in m or "servers" in m:
        key = "url" if "url" in m else "servers"
        servers = r.strings(
            m[key], f"{path}.{key}", _origin_url, "an absolute http(s) URL with no path"
        )
    else:
        r.error(node, f"{path}.servers", "required: one or more server URLs")
    o = OriginConfig(name, servers)
    if "connect_timeout" in m:
        v = r.scalar(m["connect_timeout"], f"{path}.connect_timeout", _seconds, "seconds >= 0")
        o = replace(o, connect_timeout=v) if v is not None else o
    if "read_timeout" in m:
        v = r.scalar(m["read_timeout"], f"{path}.read_timeout", _seconds, "seconds >= 0")
        o = replace(o, read_timeout=v) if v is not None else o
    if "host" in m:
        h = r.scalar(m["host"], f"{path}.host", _str, "a host name")
        o = replace(o, host_header=h) if h is not None else o
    if "max_connections" in m:
        n = r.scalar(
            m["max_connections"], f"{path}.max_connections", _positive_int, "an integer > 0"
        )
        o = replace(o, max_connections=n) if n is not None else o
    if "client" in m:
        c: OriginClient | None = r.scalar(m["client"], f"{path}.client", _client, "lean or aiohttp")
        o = replace(o, client=c) if c is not None else o
    pool = _pool(r, m, node, path)
    o = replace(o, pool=pool) if pool is not None else o
    return o if servers else None


ORIGIN_KEYS = {
    "url",
    "servers",
    "connect_timeout",
    "read_timeout",
    "host",
    "max_connections",
    "client",
    "balance",
    "health_check",
    "fail_threshold",
    "ejection_timeout",
}
HEALTH_KEYS = {"path", "interval", "timeout", "rise"}


def _client(v: Any) -> OriginClient | None:
    if v == "lean":
        return "lean"
    return "aiohttp" if v == "aiohttp" else None


def _balance(v: Any) -> Strategy | None:
    try:
        return Strategy(v) if isinstance(v, str) else None
    except ValueError:
        return None


def _health_path(v: Any) -> str | None:
    return v if isinstance(v, str) and v.startswith("/") and not _has_ctl(v) else None


def _has_ctl(s: str) -> bool:
    return any(c <= " " or c == "\x7f" for c in s)


def _pool(r: _Reader, m: dict[str, yaml.Node], node: yaml.Node, path: str) -> PoolSettings | None:
    """An origin's pool settings; None (the defaults) when it sets none."""
    values: dict[str, Any] = {}
    if "balance" in m:
        b = r.scalar(m["balance"], f"{path}.balance", _balance, "round_robin or least_connections")
        if b is not None:
            values["strategy"] = b
    for key, parse, what in (
        ("fail_threshold", _positive_int, "an integer > 0"),
        ("ejection_timeout", _seconds, "seconds >= 0"),
    ):
        if key in m:
            v = r.scalar(m[key], f"{path}.{key}", parse, what)
            if v is not None:
                values[key] = v
    where = node
    if "health_check" in m:
        where = m["health_check"]
        hc = r.mapping(where, f"{path}.health_check", HEALTH_KEYS)
        if "path" not in hc and isinstance(where, yaml.MappingNode):
            r.error(where, f"{path}.health_check.path", "required: the path to GET, like /health")
        health: tuple[tuple[str, str, Callable[[Any], Any], str], ...] = (
            ("path", "health_path", _health_path, "a path starting with /"),
            ("interval", "interval", _positive_seconds, "seconds > 0"),
            ("timeout", "timeout", _positive_seconds, "seconds > 0"),
            ("rise", "rise", _positive_int, "an integer > 0"),
        )
        for key, field_name, check, what in health:
            if key in hc:
                got = r.scalar(hc[key], f"{path}.health_check.{key}", check, what)
                if got is not None:
                    values[field_name] = got
        if "timeout" not in hc and "interval" in values:
            # The default timeout (2 s) must not exceed a shorter interval.
            values["timeout"] = min(PoolSettings().timeout, values["interval"])
    if not values:
        return None
    try:
        return PoolSettings(**values)
    except ValueError as e:
        r.error(where, f"{path}.health_check" if where is not node else path, str(e))
        return None


def _cache(r: _Reader, node: yaml.Node, path: str) -> CacheConfig:
    fields: dict[str, tuple[Callable[[Any], Any], str]] = {
        "dir": (_str, "a directory path"),
        "size_limit": (parse_size, "a size such as 1GiB"),
        "max_object_size": (parse_size, "a size such as 64MiB"),
        "heuristic_fraction": (_fraction, "a number from 0 to 1"),
        "heuristic_max": (_seconds, "seconds >= 0"),
        "status_name": (_field_name, "a cache name token for Cache-Status"),
        "allow_set_cookie": (_bool, "true or false"),
        "targeted_field": (_field_name, "a header field name"),
        "strip_targeted": (_bool, "true or false"),
        "collapse_wait": (_seconds, "seconds >= 0"),
        "collapse_max_waiters": (_count, "an integer >= 0"),
        "hit_for_pass": (_seconds, "seconds >= 0"),
        "collapse_buffer": (parse_size, "a size such as 1MiB"),
        "strip_tags": (_bool, "true or false"),
        "memory_size": (parse_size, "a size such as 64MiB"),
        "memory_max_object": (parse_size, "a size such as 256KiB"),
        "fast_path": (_bool, "true or false"),
    }
    values, m = r.table(node, path, fields, frozenset({"tag_headers", "compress"}))
    if "dir" in values:
        values["directory"] = values.pop("dir")
    if "compress" in m:
        values["compress"] = _compress(r, m["compress"], f"{path}.compress")
    if "tag_headers" in m:
        names = r.strings(
            m["tag_headers"], f"{path}.tag_headers", _field_name, "a header field name"
        )
        values["tag_headers"] = tuple(n.lower() for n in names)
    cache = CacheConfig(**values)
    if cache.memory_max_object > cache.memory_size and "memory_max_object" in m:
        r.error(m["memory_max_object"], f"{path}.memory_max_object", "larger than memory_size")
    return cache


def _media_range(v: Any) -> str | None:
    """A media range: "type/subtype", "type/*" or "type/*+suffix", lower-cased."""
    if not isinstance(v, str):
        return None
    top, slash, sub = v.strip().lower().partition("/")
    if not slash or not _FIELD.match(top) or top == "*":
        return None
    ok = sub == "*" or (sub.startswith("*+") and _FIELD.match(sub[2:])) or _FIELD.match(sub)
    return f"{top}/{sub}" if ok and "*" not in sub.lstrip("*") else None


def _level(low: int, high: int) -> Callable[[Any], int | None]:
    def parse(v: Any) -> int | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
        return v if ok else None

    return parse


def _compress(r: _Reader, node: yaml.Node, path: str) -> Compression:
    """The `cache.compress` block: enabled, types, min_size, levels {gzip, br}."""
    fields: dict[str, tuple[Callable[[Any], Any], str]] = {
        "enabled": (_bool, "true or false"),
        "min_size": (parse_size, "a size such as 1KiB"),
    }
    values, m = r.table(node, path, fields, frozenset({"types", "levels"}))
    if "types" in m:
        values["types"] = r.strings(
            m["types"], f"{path}.types", _media_range, 'a media type such as "text/*"'
        )
    if "levels" in m:
        levels, _ = r.table(
            m["levels"],
            f"{path}.levels",
            {
                "gzip": (_level(1, 9), "an integer from 1 to 9"),
                "br": (_level(0, 11), "an integer from 0 to 11"),
            },
        )
        if "gzip" in levels:
            values["gzip_level"] = levels["gzip"]
        if "br" in levels:
            values["br_level"] = levels["br"]
    return Compression(**values)


def _redis_url(v: Any) -> str | None:
    if not isinstance(v, str) or _has_ctl(v):
        return None
    try:
        parts = urlsplit(v)
        _ = parts.port  # raises on a bad port
    except ValueError:
        return None
    if parts.scheme in ("redis", "rediss") and parts.hostname:
        return v
    return v if parts.scheme == "unix" and parts.path else None


_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]+$")


def _namespace(v: Any) -> str | None:
    return v if isinstance(v, str) and _NAMESPACE.match(v) else None


def _edge_id(v: Any) -> str | None:
    return v if isinstance(v, str) and v and v.isascii() and not _has_ctl(v) else None


def _cluster(r: _Reader, node: yaml.Node, path: str) -> ClusterConfig:
    fields: dict[str, tuple[Callable[[Any], Any], str]] = {
        "redis_url": (_redis_url, "a redis://, rediss:// or unix:// URL"),
        "edge_id": (_edge_id, "an edge name (visible ASCII, no spaces)"),
        "namespace": (_namespace, "a key prefix of letters, digits, _ . -"),
        "stream_max_len": (_positive_int, "an integer > 0"),
        "heartbeat": (_positive_seconds, "seconds > 0"),
        "edge_ttl": (_positive_seconds, "seconds > 0"),
        "wait_timeout": (_positive_seconds, "seconds > 0"),
        "queue_max": (_positive_int, "an integer > 0"),
        "shared_tier": (_bool, "true or false"),
        "shared_max_object": (parse_size, "a size such as 1MiB"),
        "shared_timeout": (_positive_seconds, "seconds > 0"),
    }
    values, m = r.table(node, path, fields)
    if isinstance(node, yaml.MappingNode) and "redis_url" not in m:
        r.error(node, f"{path}.redis_url", "required: the Redis URL that turns clustering on")
    c = ClusterConfig(**values)
    if "edge_ttl" in values and c.edge_ttl <= c.heartbeat:
        r.error(
            m["edge_ttl"], f"{path}.edge_ttl", f"must be longer than heartbeat ({c.heartbeat:g}s)"
        )
    return c


def _limits(r: _Reader, node: yaml.Node, path: str) -> Limits:
    fields: dict[str, tuple[Callable[[Any], Any], str]] = {
        "max_request_line": (parse_size, "a size such as 8KiB"),
        "max_header_size": (parse_size, "a size such as 64KiB"),
        "max_headers": (_positive_int, "an integer > 0"),
        "header_timeout": (_positive_seconds, "seconds > 0"),
        "body_timeout": (_positive_seconds, "seconds > 0"),
        "keepalive_timeout": (_positive_seconds, "seconds > 0"),
        "max_connections": (_count, "an integer >= 0 (0: no cap)"),
    }
    values, m = r.table(node, path, fields)
    for key in ("max_request_line", "max_header_size"):
        if values.get(key) == 0:
            r.error(m[key], f"{path}.{key}", f"expected {fields[key][1]} > 0, got 0")
            del values[key]
    return Limits(**values)


def _access_format(v: Any) -> str | None:
    return v if v in ("json", "combined") else None


def _log(r: _Reader, node: yaml.Node, path: str) -> LogConfig:
    fields: dict[str, tuple[Callable[[Any], Any], str]] = {
        "access_log": (_bool, "true or false"),
        "access_format": (_access_format, "json or combined"),
    }
    values, _ = r.table(node, path, fields)
    return LogConfig(**values)


ROUTE_KEYS = {
    "name",
    "match",
    "origin",
    "cache",
    "default_ttl",
    "force_ttl",
    "max_ttl",
    "stale_while_revalidate",
    "stale_if_error",
    "grace",
    "cache_key",
    "allow_set_cookie",
    "request_headers",
    "response_headers",
}


def _route(r: _Reader, node: yaml.Node, path: str, cfg: Config, index: int) -> Route | None:
    m = r.mapping(node, path, ROUTE_KEYS)
    if not isinstance(node, yaml.MappingNode):
        return None
    name = f"route{index}"
    if "name" in m:
        name = r.scalar(m["name"], f"{path}.name", _str, "a route name") or name
    route = Route(name=name, policy=cfg.cache.policy())
    if "match" in m:
        route = replace(route, match=_match(r, m["match"], f"{path}.match"))
    if "origin" in m:
        o = r.scalar(m["origin"], f"{path}.origin", _str, "an origin name")
        if o is not None and o not in cfg.origins:
            known = ", ".join(sorted(cfg.origins)) or "none defined"
            r.error(m["origin"], f"{path}.origin", f"unknown origin {o!r} (known: {known})")
        route = replace(route, origin=o)
    if "cache" in m:
        c = r.scalar(m["cache"], f"{path}.cache", _on_off, "on or off")
        route = replace(route, cache=c) if c is not None else route
    ttls: dict[str, Any] = {}
    for key in ("default_ttl", "force_ttl", "max_ttl"):
        if key in m:
            v = r.scalar(m[key], f"{path}.{key}", _seconds, "seconds >= 0")
            if v is not None:
                ttls[key] = v
    allow = cfg.cache.allow_set_cookie
    if "allow_set_cookie" in m:
        b = r.scalar(m["allow_set_cookie"], f"{path}.allow_set_cookie", _bool, "true or false")
        allow = b if b is not None else allow
    route = replace(route, policy=replace(route.policy, allow_set_cookie=allow, **ttls))
    stale: dict[str, Any] = {}
    for key in ("stale_while_revalidate", "stale_if_error", "grace"):
        if key in m:
            v = r.scalar(m[key], f"{path}.{key}", _seconds, "seconds >= 0")
            if v is not None:
                stale[key] = v
    grace = stale.pop("grace", None)
    # policy/stale.py reads the route's RFC 5861 defaults and grace from the policy.
    route = replace(
        route,
        policy=replace(route.policy, **stale, **({} if grace is None else {"grace": grace})),
        **stale,
    )
    if "cache_key" in m:
        route = replace(route, key=_key_rules(r, m["cache_key"], f"{path}.cache_key"))
    if "request_headers" in m:
        route = replace(
            route, request_headers=_edits(r, m["request_headers"], f"{path}.request_headers")
        )
    if "response_headers" in m:
        route = replace(
            route, response_headers=_edits(r, m["response_headers"], f"{path}.response_headers")
        )
    return route


def _match(r: _Reader, node: yaml.Node, path: str) -> RouteMatch:
    m = r.mapping(node, path, {"host", "path", "methods"})
    rm = RouteMatch()
    if "host" in m:
        hosts = r.strings(m["host"], f"{path}.host", _host_pattern, "a host name or *.example.com")
        rm = replace(rm, hosts=hosts)
    if "path" in m:
        rm = replace(rm, path=_path_match(r, m["path"], f"{path}.path"))
    if "methods" in m:
        methods = r.strings(m["methods"], f"{path}.methods", _method, "an HTTP method")
        rm = replace(rm, methods=frozenset(methods))
    return rm


def _path_match(r: _Reader, node: yaml.Node, path: str) -> PathMatch | None:
    if isinstance(node, yaml.ScalarNode):
        # A bare string is a prefix.
        p = r.scalar(node, path, _str, "a path prefix starting with /")
        if p is not None and not p.startswith("/"):
            r.error(node, path, f"a path prefix must start with '/', got {p!r}")
            return None
        return PathMatch("prefix", p) if p else None
    m = r.mapping(node, path, {"prefix", "glob", "regex"})
    if len(m) != 1:
        r.error(node, path, "give exactly one of prefix, glob, regex")
        return None
    kind, value_node = next(iter(m.items()))
    pattern = r.scalar(value_node, f"{path}.{kind}", _str, f"a {kind} pattern")
    if pattern is None:
        return None
    if kind == "prefix":
        return PathMatch("prefix", pattern)
    if kind == "glob":
        return PathMatch("glob", pattern, glob_regex(pattern))
    try:
        return PathMatch("regex", pattern, re.compile(pattern))
    except re.error as e:
        r.error(value_node, path, f"invalid regex {pattern!r}: {e}")
        return None


def _key_rules(r: _Reader, node: yaml.Node, path: str) -> KeyRules:
    m = r.mapping(node, path, {"ignore_query", "query_params", "sort_query", "headers", "cookies"})
    k = KeyRules()
    flags: dict[str, Any] = {}
    for key in ("ignore_query", "sort_query"):
        if key in m:
            b = r.scalar(m[key], f"{path}.{key}", _bool, "true or false")
            if b is not None:
                flags[key] = b
    k = replace(k, **flags)
    if "query_params" in m:
        k = replace(
            k,
            query_params=r.strings(
                m["query_params"], f"{path}.query_params", _str, "a query parameter name"
            ),
        )
    if "headers" in m:
        k = replace(
            k,
            headers=tuple(
                h.lower()
                for h in r.strings(
                    m["headers"], f"{path}.headers", _field_name, "a header field name"
                )
            ),
        )
    if "cookies" in m:
        k = replace(k, cookies=r.strings(m["cookies"], f"{path}.cookies", _str, "a cookie name"))
    if k.ignore_query and k.query_params is not None:
        r.error(m["ignore_query"], f"{path}.ignore_query", "conflicts with query_params")
    return k


def _edits(r: _Reader, node: yaml.Node, path: str) -> HeaderEdits:
    m = r.mapping(node, path, {"add", "set", "remove"})
    out: dict[str, Any] = {}
    for key in ("add", "set"):
        if key not in m:
            continue
        pairs = r.mapping(m[key], f"{path}.{key}", _AnyKey())
        items: list[tuple[str, str]] = []
        for name, value_node in pairs.items():
            if _field_name(name) is None:
                r.error(value_node, f"{path}.{key}.{name}", "not a valid header field name")
                continue
            v = r.scalar(value_node, f"{path}.{key}.{name}", _header_value, "a header value")
            if v is not None:
                items.append((name, v))
        out[key] = tuple(items)
    if "remove" in m:
        out["remove"] = r.strings(m["remove"], f"{path}.remove", _field_name, "a header field name")
    return HeaderEdits(**out)


def _header_value(v: Any) -> str | None:
    if isinstance(v, bool) or v is None:
        return None
    s = str(v)
    return s if not any(c in s for c in "\r\n\x00") else None


class _AnyKey(set[str]):
    """An `allowed` set that admits every key (header names are open-ended)."""

    def __contains__(self, item: object) -> bool:
        return True
