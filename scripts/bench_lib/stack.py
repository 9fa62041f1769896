"""The servers of a benchmark run: origin, edgeproxy, references; all on 127.0.0.1.

Cores (a 2-core machine): every server under test on core 0, the origin and
wrk on core 1, so the only thing on core 0 is the server being measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench_lib.servers import Proc, Procs, free_port, http_get, wait_http

KIB = 1024
MIB = 1024 * KIB
OBJECTS = {"1k": KIB, "1m": MIB, "16m": 16 * MIB, "1g": 1024 * MIB}
SERVER_CORE = "0"
CLIENT_CORE = "1"

# The origin: /static/* fresh for an hour, /reval/* max-age=0 with an ETag.
# nginx answers a matching If-None-Match itself with a 304, and ignores the
# query string for files, so /static/1k?anything is the same 1 KiB file.
NGINX_ORIGIN = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/origin.pid;
error_log {tmp}/origin.error.log warn;
events {{ worker_connections 8192; }}
http {{
    default_type application/octet-stream;
    log_format status '$status';
    access_log {tmp}/origin.access.log status;
    client_body_temp_path {tmp}/origin-body;
    proxy_temp_path {tmp}/origin-proxy;
    fastcgi_temp_path {tmp}/origin-fastcgi;
    uwsgi_temp_path {tmp}/origin-uwsgi;
    scgi_temp_path {tmp}/origin-scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {tmp}/www;
        location /static/ {{ expires 1h; }}
        location /reval/ {{ add_header Cache-Control "max-age=0" always; }}
    }}
}}
"""

# nginx as a caching proxy (the other C reference), one worker.
NGINX_CACHE = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx-cache.pid;
error_log {tmp}/nginx-cache.error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/ngxc-body;
    proxy_temp_path {tmp}/ngxc-proxy;
    fastcgi_temp_path {tmp}/ngxc-fastcgi;
    uwsgi_temp_path {tmp}/ngxc-uwsgi;
    scgi_temp_path {tmp}/ngxc-scgi;
    proxy_cache_path {tmp}/ngxc-cache levels=1:2 keys_zone=bench:16m max_size=2g
                     inactive=1h use_temp_path=off;
    keepalive_requests 10000000;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_revalidate on;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""


def find_tool(name: str) -> str | None:
    """PATH first, then the sbin directories a non-root PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    return None


def _count_log(log: Path) -> tuple[int, int]:
    lines = log.read_text().split() if log.exists() else []
    return len(lines), sum(1 for s in lines if s == "304")


@dataclass
class Origin:
    proc: Proc
    kind: str  # "nginx" or "aiohttp"
    log_offset: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proc.port}"

    async def counts(self) -> tuple[int, int]:
        """(requests, 304s) the origin has answered so far."""
        if self.kind == "aiohttp":
            r = await http_get(self.proc.port, "/__stats")
            data = json.loads(r.body_text)
            return int(data["total"]), int(data["304"])
        return await asyncio.to_thread(_count_log, Path(self.proc.info["access_log"]))


@dataclass
class Stack:
    procs: Procs
    tmp: Path
    python: str
    repo: Path
    src: Path  # where edgeproxy is imported from (its working directory)
    servers: dict[str, Proc] = field(default_factory=dict)
    origin: Origin | None = None

    def make_objects(self) -> None:
        www = self.tmp / "www"
        (www / "static").mkdir(parents=True)
        (www / "reval").mkdir()
        for name, size in OBJECTS.items():
            path = www / "static" / name
            with open(path, "wb") as f:
                if size > 16 * MIB:
                    f.truncate(size)  # sparse: a 1 GiB object costs no disk
                else:
                    f.write(bytes(range(256)) * (size // 256))
        shutil.copy(www / "static" / "1k", www / "reval" / "1k")
        # nginx workers run unprivileged: the tree must be world-readable.
        for d in (self.tmp, www, www / "static", www / "reval"):
            d.chmod(0o755)
        for f in [*www.glob("*/*")]:
            f.chmod(0o644)

    async def start_origin(self, prefer_nginx: bool = True) -> Origin:
        port = free_port()
        nginx = find_tool("nginx") if prefer_nginx else None
        if nginx:
            conf = self.tmp / "origin.conf"
            conf.write_text(NGINX_ORIGIN.format(tmp=self.tmp, port=port))
            proc = self.procs.start("origin", [nginx, "-c", str(conf)], CLIENT_CORE, port)
            proc.info["access_log"] = str(self.tmp / "origin.access.log")
            kind = "nginx"
        else:
            argv = [self.python, "-m", "bench_lib.apps", "origin", "--port", str(port)]
            proc = self.procs.start("origin", argv, CLIENT_CORE, port, env=self._env())
            kind = "aiohttp"
        await wait_http(proc)
        self.origin = Origin(proc, kind)
        return self.origin

    def _env(self) -> dict[str, str]:
        scripts = str(self.repo / "scripts")
        return {**os.environ, "PYTHONPATH": scripts, "PYTHONUNBUFFERED": "1"}

    def edgeproxy_argv(self, port: int, cache: str, extra: list[str] | None = None) -> list[str]:
        assert self.origin is not None
        return [
            self.python,
            "-m",
            "edgeproxy",
            "serve",
            "--origin",
            self.origin.url,
            "--listen",
            f"127.0.0.1:{port}",
            "--cache-dir",
            str(self.tmp / cache),
            "--admin-listen",
            f"127.0.0.1:{free_port()}",
            *(extra or []),
        ]

    async def start(self, name: str) -> Proc:
        """Start one contender by name (once) and wait until it answers."""
        if name in self.servers:
            return self.servers[name]
        assert self.origin is not None
        port = free_port()
        cores = SERVER_CORE
        env = self._env()
        if name in ("edgeproxy", "edgeproxy-mem"):
            # One process on its one core, like every reference (the default is
            # a worker per CPU, which would put two workers on core 0).
            # edgeproxy-mem: a second one, fresh, for the memory scenarios.
            cache = "cache-mem" if name == "edgeproxy-mem" else "cache-edge"
            argv = self.edgeproxy_argv(port, cache, ["--workers", "1"])
        elif name.startswith("edgeproxy-") and name.endswith("w"):
            workers = int(name.removeprefix("edgeproxy-").removesuffix("w"))
            argv = self.edgeproxy_argv(port, "cache-workers", ["--workers", str(workers)])
            cores = f"0-{workers - 1}"
        elif name.split("-")[0] in ("bare", "passthrough"):
            kind, _, loop = name.partition("-")
            argv = [self.python, "-m", "bench_lib.apps", kind, "--port", str(port)]
            argv += ["--loop", loop or "asyncio"]
            if kind == "passthrough":
                argv += ["--upstream", self.origin.url]
        elif name == "varnish":
            varnishd = find_tool("varnishd")
            assert varnishd
            argv = [
                varnishd,
                "-F",
                "-j",
                "none",  # no privilege separation: a throwaway instance in a temp dir
                "-n",
                str(self.tmp / "varnish"),
                "-a",
                f"127.0.0.1:{port}",
                "-b",
                f"127.0.0.1:{self.origin.proc.port}",
                "-T",
                f"127.0.0.1:{free_port()}",
                "-s",
                "malloc,512m",
                "-p",
                "thread_pools=1",
            ]
        elif name == "nginx-cache":
            nginx = find_tool("nginx")
            assert nginx
            conf = self.tmp / "nginx-cache.conf"
            conf.write_text(
                NGINX_CACHE.format(tmp=self.tmp, port=port, origin=self.origin.proc.port)
            )
            argv = [nginx, "-c", str(conf)]
        else:
            raise ValueError(f"unknown server {name}")
        cwd = self.src if name.startswith("edgeproxy") else self.repo
        proc = self.procs.start(name, argv, cores, port, env=env, cwd=cwd)
        await wait_http(proc)
        self.servers[name] = proc
        return proc
