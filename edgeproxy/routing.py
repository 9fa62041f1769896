"""Route selection and per-route header edits: pure functions of config and request."""

from __future__ import annotations

from collections.abc import Sequence

from multidict import CIMultiDict

from edgeproxy.config import HeaderEdits, Route


def host_matches(patterns: Sequence[str], host: str) -> bool:
    """Exact host, or `*.example.com` for any subdomain (not the apex itself)."""
    if not patterns:
        return True
    for p in patterns:
        if p.startswith("*."):
            if host.endswith(p[1:]) and len(host) > len(p) - 1:
                return True
        elif host == p:
            return True
    return False


def bare_host(host_header: str) -> str:
    """Host without port, lower-cased, for matching (IPv6 literals keep brackets)."""
    h = host_header.strip().lower().rstrip(".")
    if h.startswith("["):
        end = h.find("]")
        return h[: end + 1] if end > 0 else h
    return h.rsplit(":", 1)[0] if ":" in h else h


def match_route(routes: Sequence[Route], host_header: str, path: str, method: str) -> Route | None:
    """The first route whose host, path and methods all match (config order)."""
    host = bare_host(host_header)
    for route in routes:
        m = route.match
        if m.methods is not None and method not in m.methods:
            continue
        if not host_matches(m.hosts, host):
            continue
        if m.path is not None and not m.path.matches(path):
            continue
        return route
    return None


def select_route(
    routes: Sequence[Route], default: str | None, host_header: str, path: str, method: str
) -> Route | None:
    route = match_route(routes, host_header, path, method)
    if route is None and default is not None:
        route = next((r for r in routes if r.name == default), None)
    return route


def apply_edits(headers: CIMultiDict[str], edits: HeaderEdits) -> CIMultiDict[str]:
    """remove, then set (replace), then add (append); in place, returned for chaining."""
    for name in edits.remove:
        headers.popall(name, None)
    for name, value in edits.set:
        headers[name] = value
    for name, value in edits.add:
        headers.add(name, value)
    return headers
