"""Command line: `edgeproxy serve | check-config | demo-origin | purge | entries | warm`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from edgeproxy import __version__, accesslog
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
    s.add_argument(
        "--no-watch", action="store_true", help="don't reload when the config file changes"
    )
    s.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="worker processes sharing the port and cache (default: `workers:`, else one per CPU)",
    )
    s.add_argument(
        "--drain-timeout",
        type=_non_negative_float,
        metavar="S",
        help="seconds in-flight requests get on SIGTERM/SIGINT (default: `drain_timeout:`, 30)",
    )
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    c = sub.add_parser("check-config", help="validate a config file and summarise it")
    c.add_argument("file")

    d = sub.add_parser("demo-origin", help="run the bundled demo origin server")
    d.add_argument("--listen", default="127.0.0.1:8000", metavar="HOST:PORT")

    pu = sub.add_parser(
        "purge",
        help="purge stored responses through the admin API",
        description="Purge by URL (every variant), URL prefix, surrogate tag, or everything. "
        "Prints the API's JSON answer.",
    )
    what = pu.add_mutually_exclusive_group(required=True)
    what.add_argument("url", nargs="?", metavar="URL", help="an absolute URL: all its variants")
    what.add_argument("--prefix", metavar="P", help="every URL starting with P (http://host/path/)")
    what.add_argument(
        "--tag", action="append", metavar="T", help="entries tagged T (repeat for several)"
    )
    what.add_argument("--all", action="store_true", help="everything (or one host with --host)")
    pu.add_argument("--host", metavar="H", help="with --all: only this host")
    pu.add_argument("--soft", action="store_true", help="mark stale (revalidate) instead of delete")
    pu.add_argument("--dry-run", action="store_true", help="only count what would be purged")
    _admin_args(pu)

    e = sub.add_parser("entries", help="list stored responses through the admin API")
    e.add_argument("--prefix", metavar="P", help="URLs starting with P")
    e.add_argument("--tag", metavar="T", help="entries tagged T")
    e.add_argument("--limit", type=int, metavar="N", help="at most N entries (default 100)")
    e.add_argument("--json", action="store_true", help="print the API's raw JSON")
    _admin_args(e)

    w = sub.add_parser(
        "warm",
        help="request URLs through the edge so they are cached",
        description="GET each URL (from FILE, '-' for stdin, and/or --sitemap) through "
        "--proxy, showing hits, misses and errors; exits 1 if any URL failed.",
    )
    w.add_argument("source", nargs="?", metavar="FILE", help="URLs, one per line ('-': stdin)")
    w.add_argument("--sitemap", metavar="URL", help="a sitemap.xml or sitemap index to warm")
    w.add_argument(
        "--proxy",
        metavar="URL",
        help="the edge to send through, e.g. http://127.0.0.1:8080; each URL's host goes "
        "in Host (default: request the URLs themselves)",
    )
    w.add_argument("--concurrency", type=_positive_int, default=8, metavar="N")
    w.add_argument("--rate", type=float, metavar="R", help="at most R requests per second")
    w.add_argument("--timeout", type=float, default=30.0, metavar="S", help="per request")
    w.add_argument(
        "-H", "--header", action="append", metavar="'NAME: VALUE'", help="add a request header"
    )
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return n


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return v


def _admin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--admin",
        metavar="URL",
        help="admin API base URL (default: --config's admin.listen, else http://127.0.0.1:9090)",
    )
    p.add_argument(
        "--config", metavar="FILE", help="read admin.listen and the token source from FILE"
    )


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
    if args.command in ("purge", "entries"):
        return _admin_command(args)
    if args.command == "warm":
        from edgeproxy import warm

        return warm.main(args)
    return 2


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {
        "origin": args.origin,
        "listen": args.listen,
        "cache_dir": args.cache_dir,
        "admin_listen": args.admin_listen,
    }
    path: str | None = args.config

    def load() -> Config:
        """The file (re-read on every reload) with the flags on top."""
        cfg = (load_config(path) if path else Config()).with_overrides(**overrides)
        if args.workers is not None:
            cfg = replace(cfg, workers=args.workers)
        if args.drain_timeout is not None:
            cfg = replace(cfg, drain_timeout=args.drain_timeout)
        return cfg

    try:
        config = load()
    except ConfigError as e:
        for line in e.errors:
            print(f"edgeproxy: {line}", file=sys.stderr)
        return 2
    if config.log.access_log:
        _access_log_to_stdout()
    if not config.routes:
        print(
            "edgeproxy: no origin: pass --origin URL or give origins and routes in the config",
            file=sys.stderr,
        )
        return 2
    from edgeproxy import server
    from edgeproxy.admin import AdminSetupError
    from edgeproxy.workers import SetupError

    try:
        return server.run(config, load if path else None, None if args.no_watch else path)
    except (AdminSetupError, OSError, SetupError) as e:
        print(f"edgeproxy: {e}", file=sys.stderr)
        return 1


def _access_log_to_stdout() -> None:
    """Access lines alone on stdout, one record per line (JSON or combined);
    errors and config events stay on stderr with their level and logger."""
    access = logging.getLogger("edgeproxy.access")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    # The lines themselves bypass the handler: batched per loop turn
    # (accesslog.LineWriter), ~10x cheaper than a logging record each.
    sys.stdout.flush()
    accesslog.write_to(sys.stdout.fileno())


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


# -- admin API commands -------------------------------------------------------


def purge_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /purge body for `edgeproxy purge ...` (the API validates it)."""
    body: dict[str, Any]
    if args.url is not None:
        body = {"url": args.url}
    elif args.prefix is not None:
        body = {"prefix": args.prefix}
    elif args.tag is not None:
        body = {"tag": args.tag[0]} if len(args.tag) == 1 else {"tags": args.tag}
    else:
        body = {"all": True}
        if args.host is not None:
            body["host"] = args.host
    if args.soft:
        body["soft"] = True
    if args.dry_run:
        body["dry_run"] = True
    return body


def _admin_command(args: argparse.Namespace) -> int:
    from edgeproxy.admin import AdminSetupError, read_token
    from edgeproxy.admin_client import AdminClient, AdminError, admin_settings, admin_url

    name = args.command
    if name == "purge" and args.host is not None and not args.all:
        print("edgeproxy purge: --host only goes with --all", file=sys.stderr)
        return 2
    if name == "entries" and args.limit is not None and args.limit < 1:
        print("edgeproxy entries: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config) if args.config else None
        token = read_token(admin_settings(config))
    except ConfigError as e:
        for line in e.errors:
            print(f"edgeproxy: {line}", file=sys.stderr)
        return 2
    except AdminSetupError as e:
        print(f"edgeproxy: {e}", file=sys.stderr)
        return 2
    client = AdminClient(args.admin or admin_url(config), token)
    try:
        if name == "purge":
            answer = asyncio.run(client.purge(purge_request(args)))
        else:
            answer = asyncio.run(client.entries(args.prefix, args.tag, args.limit))
    except AdminError as e:
        print(f"edgeproxy {name}: {e}", file=sys.stderr)
        return 1
    if name == "entries" and not args.json:
        from edgeproxy.admin_client import format_entries

        print(format_entries(answer))
    else:
        print(json.dumps(answer, indent=2 if name == "entries" else None))
    return 0
