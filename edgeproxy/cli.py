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
            origin=args.origin, listen=args.listen, cache_dir=args.cache_dir
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
    print(f"{path}: OK")
    print(f"  listen  {config.listen}")
    print(f"  origin  {config.origin.url if config.origin else '(none)'}")
    print(
        f"  cache   {config.cache.directory} (limit {config.cache.size_limit} bytes, "
        f"max object {config.cache.max_object_size} bytes)"
    )
    return 0
