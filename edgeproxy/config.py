"""Typed, frozen configuration parsed once from YAML (the only module importing yaml).

Every error names file, line and key path (`edge.yaml:12 cache.size_limit:
expected a size ...`), and all errors are collected before raising.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from edgeproxy.errors import ConfigError
from edgeproxy.policy.settings import CachePolicy

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class OriginConfig:
    name: str
    url: str  # scheme://host[:port], no path
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    host_header: str | None = None  # Host sent upstream; None = the origin's own
    max_connections: int = 100


@dataclass(frozen=True, slots=True)
class CacheConfig:
    directory: str = "./cache"
    size_limit: int = 1 << 30
    max_object_size: int = 64 << 20
    heuristic_fraction: float = 0.1
    heuristic_max: float = 86400.0
    status_name: str = "edgeproxy"
    allow_set_cookie: bool = False

    def policy(self) -> CachePolicy:
        return CachePolicy(
            heuristic_fraction=self.heuristic_fraction,
            heuristic_max=self.heuristic_max,
            allow_set_cookie=self.allow_set_cookie,
            max_object_size=self.max_object_size,
        )


@dataclass(frozen=True, slots=True)
class Config:
    listen: Address = Address("127.0.0.1", 8080)
    origin: OriginConfig | None = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    via: str = "edgeproxy"
    source: str = "<defaults>"

    def with_overrides(
        self,
        *,
        origin: str | None = None,
        listen: str | None = None,
        cache_dir: str | None = None,
    ) -> Config:
        """Command-line flags win over file values; errors name the flag."""
        errors: list[str] = []
        cfg = self
        if listen is not None:
            addr = parse_address(listen)
            if addr is None:
                errors.append(f"--listen: expected HOST:PORT, got {listen!r}")
            else:
                cfg = replace(cfg, listen=addr)
        if origin is not None:
            problem = check_origin_url(origin)
            if problem:
                errors.append(f"--origin: {problem}")
            else:
                base = cfg.origin or OriginConfig(name="default", url=origin)
                cfg = replace(cfg, origin=replace(base, url=origin.rstrip("/")))
        if cache_dir is not None:
            cfg = replace(cfg, cache=replace(cfg.cache, directory=cache_dir))
        if errors:
            raise ConfigError(errors)
        return cfg


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


# -- YAML with line numbers ---------------------------------------------------


class _Reader:
    """Reads typed values out of a composed YAML node tree, collecting errors."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.errors: list[str] = []

    def error(self, node: yaml.Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.errors.append(f"{self.filename}:{line} {path}: {message}")

    def mapping(self, node: yaml.Node, path: str, allowed: set[str]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, "expected a mapping")
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

    def scalar(
        self, node: yaml.Node, path: str, parse: Callable[[Any], T | None], what: str
    ) -> T | None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, path, f"expected {what}")
            return None
        value = yaml.safe_load(yaml.serialize(node))
        parsed = parse(value)
        if parsed is None:
            self.error(node, path, f"expected {what}, got {value!r}")
        return parsed


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _seconds(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        return None
    return float(v)


def _fraction(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        return None
    return float(v)


def _positive_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def load_config(path: str) -> Config:
    """Parse and validate a YAML file; ConfigError lists every problem found."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from e
    return parse_config(text, path)


def parse_config(text: str, filename: str = "<config>") -> Config:
    r = _Reader(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([f"{filename}:{line}: invalid YAML: {e}"]) from e
    if root is None:
        return Config(source=filename)
    top = r.mapping(root, "", {"listen", "origin", "cache", "via"})
    cfg = Config(source=filename)

    if "listen" in top:
        addr = r.scalar(top["listen"], "listen", lambda v: parse_address(str(v)), "HOST:PORT")
        if addr is not None:
            cfg = replace(cfg, listen=addr)
    if "via" in top:
        via = r.scalar(top["via"], "via", _str, "a pseudonym for the Via field")
        if via is not None:
            cfg = replace(cfg, via=via)
    if "origin" in top:
        cfg = replace(cfg, origin=_origin(r, top["origin"], "origin"))
    if "cache" in top:
        cfg = replace(cfg, cache=_cache(r, top["cache"], "cache"))
    if r.errors:
        raise ConfigError(r.errors)
    return cfg


def _origin(r: _Reader, node: yaml.Node, path: str) -> OriginConfig | None:
    def url(v: Any) -> str | None:
        return v.rstrip("/") if isinstance(v, str) and check_origin_url(v) is None else None

    if isinstance(node, yaml.ScalarNode):
        u = r.scalar(node, path, url, "an absolute http(s) URL with no path")
        return OriginConfig("default", u) if u else None
    m = r.mapping(node, path, {"url", "connect_timeout", "read_timeout", "host", "max_connections"})
    if "url" not in m:
        r.error(node, f"{path}.url", "required")
        return None
    u = r.scalar(m["url"], f"{path}.url", url, "an absolute http(s) URL with no path")
    o = OriginConfig("default", u or "http://invalid")
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
    return o if u else None


def _cache(r: _Reader, node: yaml.Node, path: str) -> CacheConfig:
    fields: dict[str, tuple[Callable[[Any], Any], str]] = {
        "dir": (_str, "a directory path"),
        "size_limit": (parse_size, "a size such as 1GiB"),
        "max_object_size": (parse_size, "a size such as 64MiB"),
        "heuristic_fraction": (_fraction, "a number from 0 to 1"),
        "heuristic_max": (_seconds, "seconds >= 0"),
        "status_name": (_str, "a cache name for Cache-Status"),
        "allow_set_cookie": (_bool, "true or false"),
    }
    m = r.mapping(node, path, set(fields))
    values: dict[str, Any] = {}
    for key, value_node in m.items():
        parse, what = fields[key]
        v = r.scalar(value_node, f"{path}.{key}", parse, what)
        if v is not None:
            values["directory" if key == "dir" else key] = v
    return CacheConfig(**values)


def default_cache_dir() -> str:
    return os.environ.get("EDGEPROXY_CACHE_DIR", "./cache")
