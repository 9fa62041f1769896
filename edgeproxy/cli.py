"""Command line: `edgeproxy serve | check-config | demo-origin`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from edgeproxy import __version__
from edgeproxy.config import Config, load_config, parse_address
from edgeproxy.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeproxy", description="A caching reverse proxy.")
    p.add_argument("--version", action="version", version=f"edgeproxy {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the proxy")
    s.add_argument("--config", metavar="FILE", help="YAML config file")
    s.add_argument("--origin", metavar="URL", help="origin base URL, e.g. http://127.0.0.1:8000")
    s.add_argument("--listen", metavar="HOST:PORT", help="public listener (default 127.0.0.1:8080)")
    s.add_argument("--cache-dir", metavar="DIR", help="cache directory (default ./cache)")
    s.add_argument(
        "--admin-listen", metavar="HOST:PORT", help="admin listener (default 127.0.0.1:9090)"
    )
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    c = sub.add_parser("check-config", help="validate a config file and summarise it")
    c.add_argument("file")

    d = sub.add_parser("demo-origin", help="run the bundled demo origin server")
    d.add_argument("--listen", default="127.0.0.1:8000", metavar="HOST:PORT")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "demo-origin":
        addr = parse_address(args.listen)
        if addr is None:
            print(f"edgeproxy: --listen: expected HOST:PORT, got {args.listen!r}", file=sys.stderr)
            return 2
        from edgeproxy import demo_origin

        demo_origin.run(addr.host, addr.port)
        return 0
    return 2


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config) if args.config else Config()
        config = config.with_overrides(
            origin=args.origin,
            listen=args.listen,
            cache_dir=args.cache_dir,
            admin_listen=args.admin_listen,
        )
    except ConfigError as e:
        for line in e.errors:
            print(f"edgeproxy: {line}", file=sys.stderr)
        return 2
    if config.origin is None:
        print(
            "edgeproxy: no origin: pass --origin URL or set origin: in the config", file=sys.stderr
        )
        return 2
    from edgeproxy import server

    server.run(config)
    return 0


def _check_config(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return 1
    print(summary(config))
    return 0


def summary(config: Config) -> str:
    """What check-config prints: listeners, cache, origins, routes in match order."""
    c = config.cache
    lines = [
        f"{config.source}: OK",
        f"listen {config.listen}; admin {config.admin.listen}",
        f"cache {c.directory} (limit {c.size_limit} bytes, max object {c.max_object_size} bytes)",
        f"origins ({len(config.origins)}):",
    ]
    for name, o in config.origins.items():
        lines.append(
            f"  {name}: {', '.join(o.servers)} (connect {o.connect_timeout:g}s, "
            f"read {o.read_timeout:g}s, max {o.max_connections} connections"
            + (f", Host {o.host_header}" if o.host_header else "")
            + ")"
        )
    lines.append(f"routes ({len(config.routes)}, first match wins):")
    for i, r in enumerate(config.routes, 1):
        m = r.match
        parts = (
            f"host={','.join(m.hosts)}" if m.hosts else "",
            f"path {m.path.kind} {m.path.pattern!r}" if m.path else "",
            f"methods={','.join(sorted(m.methods))}" if m.methods else "",
        )
        where = " ".join(p for p in parts if p) or "everything"
        action = f"-> {r.origin}" if r.origin else "-> 404 (no origin)"
        cache = "cache on" if r.cache else "cache off (bypass)"
        default = " [default]" if r.name == config.default_route else ""
        lines.append(f"  {i}. {r.name}{default}: {where} {action}, {cache}")
    return "\n".join(lines)
