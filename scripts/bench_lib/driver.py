"""The benchmark of the "Performance" issue: edgeproxy side by side with references.

Each throughput scenario runs its servers in rounds A B C A B C (one wrk run
each), and compares edgeproxy with its reference by the median of the
per-round ratios. See docs/benchmarks.md for what each scenario means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_lib import wrk
from bench_lib.profile import summarize_profile
from bench_lib.servers import (
    Proc,
    Procs,
    Reply,
    capture,
    core_busy_seconds,
    free_port,
    http_get,
    parse_head,
    wait_http,
)
from bench_lib.stack import CLIENT_CORE, MIB, OBJECTS, SERVER_CORE, Origin, Stack, find_tool
from bench_lib.versus import DEFAULT_KEYS, REFERENCES, versus

REPO = Path(__file__).resolve().parents[2]
RSS_LIMIT_16M = 150 * MIB  # the bound for a 16 MiB miss to 50 clients
REVAL_KEYS = 1000  # URLs the revalidate scenario cycles through: >> connections
CLIENT_BOUND = 0.85  # a server below this share of its core was not the bottleneck
DISTURBED = 0.10  # share of the server core taken by other processes (or steal): a note
FLAT_GROWTH = 32 * MIB  # "flat": RSS grows less than this while 1 GiB streams
LABELS = {
    "edgeproxy": "edgeproxy",
    "bare": "bare aiohttp app (asyncio)",
    "bare-uvloop": "bare aiohttp app (uvloop)",
    "passthrough": "aiohttp pass-through (asyncio)",
    "passthrough-uvloop": "aiohttp pass-through (uvloop)",
    "varnish": "Varnish",
    "nginx-cache": "nginx proxy_cache",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    contenders: tuple[str, ...]  # [0] is the one being judged
    reference: str | None  # the contender the target ratio is against
    target: float | None
    metric: str = "rps"  # "rps": requests/s; "rpc": requests per CPU-second of the server
    lua: str | None = None
    wrk_cores: str | None = CLIENT_CORE
    wrk_threads: int = 1


@dataclass
class Run:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int
    bad_status: int
    cpu_s: float
    seconds: float
    origin_reqs: int
    origin_304: int
    core_other_s: float = 0.0  # server core time taken by other processes or steal

    @property
    def rpc(self) -> float:
        return self.requests / self.cpu_s if self.cpu_s > 0 else 0.0

    def value(self, metric: str) -> float:
        return self.rpc if metric == "rpc" else self.rps


@dataclass
class Outcome:
    scenario: Scenario
    runs: dict[str, list[Run]] = field(default_factory=dict)
    peak_kib: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def median(self, name: str, attr: str) -> float:
        runs = self.runs.get(name, [])
        if not runs:
            return 0.0
        if attr == "value":
            return statistics.median(r.value(self.scenario.metric) for r in runs)
        return statistics.median(float(getattr(r, attr)) for r in runs)

    def ratio(self, name: str, ref: str, metric: str | None = None) -> float | None:
        """Median of the per-round ratios: each round's runs sat side by side."""
        ratios = self.ratios(name, ref, metric)
        return statistics.median(ratios) if ratios else None

    def ratios(self, name: str, ref: str, metric: str | None = None) -> list[float]:
        """The per-round ratios (their spread shows how noisy the machine was)."""
        m = metric or self.scenario.metric
        pairs = zip(self.runs.get(name, []), self.runs.get(ref, []), strict=False)
        return [a.value(m) / b.value(m) for a, b in pairs if b.value(m) > 0]


@dataclass
class MemResult:
    name: str
    peak_kib: int
    base_kib: int
    ok: bool
    limit: str
    detail: str


# -- scenarios ------------------------------------------------------------------


def plan(
    proxy_loop: str, uvloop_ok: bool, varnish: bool, nginx: bool, workers_flag: bool
) -> tuple[list[Scenario], list[str]]:
    """The scenarios this machine can run, and notes on what it can't."""
    notes: list[str] = []
    other = "uvloop" if proxy_loop == "asyncio" else "asyncio"
    bare = "bare" if proxy_loop == "asyncio" else "bare-uvloop"
    passthrough = "passthrough" if proxy_loop == "asyncio" else "passthrough-uvloop"
    extra_bare: tuple[str, ...] = ()
    extra_pass: tuple[str, ...] = ()
    if uvloop_ok:
        extra_bare = ("bare" if other == "asyncio" else "bare-uvloop",)
        extra_pass = ("passthrough" if other == "asyncio" else "passthrough-uvloop",)
    else:
        notes.append(
            "uvloop is not installed in the venv: references run on asyncio only "
            "(install: .venv/bin/pip install uvloop, or `pip install -e '.[speed]'`)"
        )
    c_refs = tuple(n for n, ok in (("varnish", varnish), ("nginx-cache", nginx)) if ok)
    c_ref = c_refs[0] if c_refs else None
    if not varnish:
        notes.append(
            "Varnish not found: hit-1m is judged against nginx proxy_cache "
            "(install: apt-get install -y varnish)"
            if nginx
            else "neither Varnish nor nginx: hit-1m has no C reference "
            "(install: apt-get install -y varnish nginx)"
        )
    out = [
        Scenario("hit-1k", "/static/1k", ("edgeproxy", bare, *extra_bare, *c_refs), bare, 0.9),
        Scenario("client-304", "/static/1k", ("edgeproxy", bare, *extra_bare), bare, 0.9),
        Scenario("hit-1m", "/static/1m", ("edgeproxy", *c_refs), c_ref, 0.9 if c_ref else None),
        Scenario(
            "revalidate",
            "/reval/1k",
            ("edgeproxy", passthrough, *extra_pass),
            passthrough,
            1.0,
            lua="cycle.lua",
        ),
        Scenario(
            "miss",
            "/static/1k",
            ("edgeproxy", passthrough, *extra_pass),
            passthrough,
            0.85,
            lua="unique.lua",
        ),
    ]
    if workers_flag:
        n = os.cpu_count() or 2
        out.append(
            Scenario(
                "scale",
                "/static/1k",
                (f"edgeproxy-{n}w", "edgeproxy"),
                "edgeproxy",
                0.85,
                metric="rpc",
                wrk_cores=None,  # wrk shares every core: judge requests per CPU-second
                wrk_threads=n,
            )
        )
    return out, notes


def _tokens(cache_status: str) -> set[str]:
    return {t.strip().split("=")[0] for t in cache_status.split(";")} | {
        t.strip() for t in cache_status.split(";")
    }


async def prepare(sc: Scenario, name: str, port: int) -> tuple[dict[str, str], str]:
    """Prime one server for a scenario: (wrk headers, "" or what is wrong)."""
    edge = name.startswith("edgeproxy")
    size = OBJECTS[sc.path.rsplit("/", 1)[1]]

    def cs(r: Reply) -> set[str]:
        return _tokens(r.headers.get("cache-status", ""))

    def body_ok(r: Reply) -> str:
        if r.status != 200 or r.body_bytes != size:
            return f"expected 200 with {size} bytes, got {r.status} with {r.body_bytes}"
        return ""

    if sc.name in ("hit-1k", "hit-1m", "scale"):
        await http_get(port, sc.path)  # a miss that stores it
        r = await http_get(port, sc.path)
        problem = body_ok(r)
        if not problem and edge and "hit" not in cs(r):
            problem = f"second GET not a hit: Cache-Status {r.headers.get('cache-status')}"
        if not problem and name == "nginx-cache" and r.headers.get("x-cache-status") != "HIT":
            problem = f"nginx: X-Cache-Status {r.headers.get('x-cache-status')}"
        if not problem and name == "varnish" and len(r.headers.get("x-varnish", "").split()) < 2:
            problem = f"varnish: not a hit (X-Varnish {r.headers.get('x-varnish')})"
        return {}, problem
    if sc.name == "client-304":
        r = await http_get(port, sc.path)
        etag = r.headers.get("etag")
        if not etag:
            return {}, "no ETag to send"
        headers = {"If-None-Match": etag}
        r = await http_get(port, sc.path, headers)
        problem = "" if r.status == 304 else f"If-None-Match answered {r.status}, not 304"
        if not problem and edge and "hit" not in cs(r):
            problem = f"304 not from the cache: Cache-Status {r.headers.get('cache-status')}"
        return headers, problem
    if sc.name == "revalidate":
        # Store every URL cycle.lua asks for; then one must revalidate with a 304.
        if edge:
            await _prime([f"{sc.path}?k={k}" for k in range(REVAL_KEYS)], port)
        await http_get(port, f"{sc.path}?k=0")
        r = await http_get(port, f"{sc.path}?k=0")
        problem = body_ok(r)
        if not problem and edge and not {"fwd=stale", "fwd-status=304"} <= cs(r):
            problem = f"not revalidated with a 304: Cache-Status {r.headers.get('cache-status')}"
        return {}, problem
    if sc.name == "miss":
        r = await http_get(port, f"{sc.path}?bench=probe-{uuid.uuid4().hex}")
        problem = body_ok(r)
        if not problem and edge and not {"fwd=uri-miss", "stored"} <= cs(r):
            problem = f"miss not stored: Cache-Status {r.headers.get('cache-status')}"
        return {}, problem
    return {}, f"no preparation for {sc.name}"


async def _prime(paths: list[str], port: int, concurrency: int = 25) -> None:
    """GET every path once, `concurrency` at a time (bounded: one pass)."""
    queue = list(reversed(paths))

    async def worker() -> None:
        while queue:
            await http_get(port, queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure(
    sc: Scenario,
    proc: Proc,
    origin: Origin,
    headers: dict[str, str],
    seconds: float,
    connections: int,
) -> Run:
    tag = uuid.uuid4().hex[:12]
    core0 = core_busy_seconds(int(SERVER_CORE))
    cpu0 = proc.cpu_seconds()
    o0 = await origin.counts()
    res = await wrk.run(
        f"http://127.0.0.1:{proc.port}{sc.path}",
        seconds,
        connections=connections,
        threads=sc.wrk_threads,
        cores=sc.wrk_cores,
        headers=headers,
        lua=sc.lua,
        env={"BENCH_PATH": sc.path, "BENCH_TAG": tag, "BENCH_KEYS": str(REVAL_KEYS)},
    )
    cpu = proc.cpu_seconds() - cpu0
    core = core_busy_seconds(int(SERVER_CORE)) - core0
    o1 = await origin.counts()
    return Run(
        rps=res.rps,
        requests=res.requests,
        p50_ms=res.p50_ms,
        p99_ms=res.p99_ms,
        errors=res.errors,
        bad_status=res.non_2xx_3xx,
        cpu_s=cpu,
        seconds=float(max(1, round(seconds))),
        origin_reqs=o1[0] - o0[0],
        origin_304=o1[1] - o0[1],
        core_other_s=max(0.0, core - cpu) if sc.wrk_cores == CLIENT_CORE else 0.0,
    )


async def run_scenario(stack: Stack, sc: Scenario, opts: argparse.Namespace) -> Outcome:
    try:
        return await _run_scenario(stack, sc, opts)
    except (OSError, TimeoutError, RuntimeError, ValueError, asyncio.IncompleteReadError) as e:
        dead = [p for p in stack.procs.procs if not p.alive()]
        why = "".join(
            f"\n{p.name} exited ({p.popen.returncode}); its log ends:\n{p.tail()}" for p in dead
        )
        raise RuntimeError(f"{sc.name}: {type(e).__name__}: {e}{why}") from e


async def _run_scenario(stack: Stack, sc: Scenario, opts: argparse.Namespace) -> Outcome:
    assert stack.origin is not None
    out = Outcome(sc)
    procs = {n: await stack.start(n) for n in sc.contenders}
    headers: dict[str, dict[str, str]] = {}
    for n, p in procs.items():
        headers[n], problem = await prepare(sc, n, p.port)
        if problem:
            out.problems[n] = problem
            print(f"  ! {sc.name} {n}: {problem}", flush=True)
    for p in procs.values():
        p.reset_peak()
    for n, p in procs.items():  # warm-up, discarded
        await measure(sc, p, stack.origin, headers[n], opts.warmup, opts.connections)
    for r in range(opts.rounds):
        for n, p in procs.items():
            run = await measure(sc, p, stack.origin, headers[n], opts.duration, opts.connections)
            out.runs.setdefault(n, []).append(run)
            flag = f"  errors={run.errors} non-2xx/3xx={run.bad_status}" if _bad(run) else ""
            print(
                f"  {sc.name:<11} round {r + 1}  {n:<20} {run.rps:>10,.0f} req/s  "
                f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  "
                f"cpu {run.cpu_s / run.seconds:4.0%}{flag}",
                flush=True,
            )
    for n, p in procs.items():
        out.peak_kib[n] = p.peak_kib()
    return out


def _bad(run: Run) -> bool:
    return run.errors > 0 or run.bad_status > 0


# -- memory ---------------------------------------------------------------------


async def _sample_rss(proc: Proc, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], proc.rss_kib())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


def _status_params(cache_status: str) -> str:
    """Cache-Status without the cache name and ttl: what kind of answer it was."""
    params = [p.strip() for p in cache_status.split(";")[1:]]
    return "; ".join(p for p in params if not p.startswith("ttl="))


async def memory_16m(proc: Proc, origin: Origin, clients: int) -> MemResult:
    """One uncached 16 MiB URL, asked by `clients` clients at once."""
    path = f"/static/16m?bench=mem-{uuid.uuid4().hex}"
    base = proc.rss_kib()
    proc.reset_peak()
    peak, stop = [base], asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(proc, peak, stop))
    o0 = await origin.counts()
    try:
        replies = await asyncio.gather(
            *(http_get(proc.port, path, seconds=120) for _ in range(clients))
        )
    finally:
        stop.set()
        await sampler
    o1 = await origin.counts()
    top = max(peak[0], proc.peak_kib())
    complete = sum(1 for r in replies if r.status == 200 and r.body_bytes == 16 * MIB)
    statuses = Counter(_status_params(r.headers.get("cache-status", "?")) for r in replies)
    after = await http_get(proc.port, path)
    stored = "hit" in _tokens(after.headers.get("cache-status", ""))
    detail = (
        f"RSS before {base / 1024:.0f} MiB, peak {top / 1024:.0f} MiB; "
        f"{complete}/{clients} complete; origin requests {o1[0] - o0[0]}; "
        f"Cache-Status {dict(statuses)}; stored afterwards: {'yes' if stored else 'no'}"
    )
    ok = top * 1024 < RSS_LIMIT_16M and complete == clients
    return MemResult("mem-16m-x50", top, base, ok, "< 150 MiB", detail)


async def memory_1g(proc: Proc) -> MemResult:
    """A 1 GiB object (passed through: above max_object_size) read by one client,
    with a 1.5 s stall after the first 64 MiB: RSS must not follow the body."""
    base = proc.rss_kib()
    proc.reset_peak()
    peak, stop = [base], asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(proc, peak, stop))
    total = 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(
            f"GET /static/1g?bench={uuid.uuid4().hex} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{proc.port}\r\nConnection: close\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status, _ = parse_head(head)

        async def read(limit: int) -> None:
            nonlocal total
            while total < limit and (chunk := await reader.read(1 << 20)):
                total += len(chunk)

        await asyncio.wait_for(read(64 * MIB), 60)
        await asyncio.sleep(1.5)  # a stalled client: the proxy must stop reading upstream
        stalled = proc.rss_kib()
        await asyncio.wait_for(read(OBJECTS["1g"] + 1), 120)
        writer.close()
    finally:
        stop.set()
        await sampler
    top = max(peak[0], proc.peak_kib())
    growth = top - base
    ok = status == 200 and total == OBJECTS["1g"] and growth * 1024 < FLAT_GROWTH
    detail = (
        f"status {status}, {total / MIB:.0f} MiB read; RSS before {base / 1024:.0f} MiB, "
        f"after a 1.5 s stall at 64 MiB {stalled / 1024:.0f} MiB, "
        f"peak {top / 1024:.0f} MiB (+{growth / 1024:.0f} MiB)"
    )
    return MemResult("mem-1g-flat", top, base, ok, "growth < 32 MiB", detail)


# -- profile --------------------------------------------------------------------


async def profile(stack: Stack, sc: Scenario, opts: argparse.Namespace) -> int:
    """Run edgeproxy under py-spy (it can spawn, not always attach) through one scenario."""
    pyspy = find_tool("py-spy") or str(Path(stack.python).parent / "py-spy")
    if not os.access(pyspy, os.X_OK):
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    assert stack.origin is not None
    port = free_port()
    out = stack.tmp / "profile.raw"
    # py-spy on the client core, the proxy alone on the server core.
    argv = [pyspy, "record", "-r", str(opts.rate), "-f", "raw", "--nolineno", "--threads"]
    if opts.native:  # C frames too: the compiled modules' functions by name
        argv.append("--native")
    argv += ["-o", str(out), "--", "taskset", "-c", SERVER_CORE]
    # One process: py-spy follows the process it spawned, not a supervisor's workers.
    argv += stack.edgeproxy_argv(port, "cache-profile", ["--workers", "1"])
    proc = stack.procs.start(
        "edgeproxy-pyspy", argv, CLIENT_CORE, port, env=stack._env(), cwd=stack.src
    )
    await wait_http(proc)
    headers, problem = await prepare(sc, "edgeproxy", port)
    if problem:
        print(f"  ! {problem}")
    target = [p for p in proc.pids() if p != proc.pid]
    run = await measure(sc, proc, stack.origin, headers, opts.duration, opts.connections)
    print(
        f"{sc.name} under py-spy ({opts.rate} Hz): {run.rps:,.0f} req/s, "
        f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms"
    )
    for pid in target:  # stop the proxy, not py-spy, so py-spy writes its file
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        proc.popen.wait(30)
    except subprocess.TimeoutExpired:
        print("py-spy did not finish", file=sys.stderr)
        return 1
    if not await asyncio.to_thread(out.exists):
        print(f"py-spy wrote nothing:\n{proc.tail()}", file=sys.stderr)
        return 1
    text = await asyncio.to_thread(out.read_text)
    per_request_us = run.cpu_s / run.requests * 1e6 if run.requests else 0.0
    if opts.keep_profile:
        dest = Path(opts.keep_profile)
        await asyncio.to_thread(shutil.copyfile, out, dest)
        print(f"raw collapsed stacks written to {dest}")
    print(summarize_profile(text.splitlines(), opts.top, per_request_us))
    return 0


# -- report ---------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        padded = (str(c).ljust(w) for c, w in zip(cells, widths, strict=False))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def _num(v: float) -> str:
    return f"{v:,.0f}"


def summary_rows(outcomes: list[Outcome], mems: list[MemResult]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        sc = o.scenario
        subject = sc.contenders[0]
        unit = " req/cpu-s" if sc.metric == "rpc" else ""
        ref = sc.reference
        ratio = o.ratio(subject, ref) if ref else None
        spread = o.ratios(subject, ref) if ref else []
        cpu_ratio = o.ratio(subject, ref, "rpc") if ref else None
        if o.problems.get(subject) or (ref and o.problems.get(ref)):
            met = "CHECK"
        elif ratio is None or sc.target is None:
            met = "n/a"
        else:
            met = "yes" if ratio >= sc.target else "NO"
        if any(_bad(r) for r in o.runs.get(subject, [])):
            met += " (errors)"
        rows.append(
            [
                sc.name,
                _num(o.median(subject, "value")) + unit,
                LABELS.get(ref, ref) if ref else "-",
                _num(o.median(ref, "value")) + unit if ref else "-",
                f"{ratio:.2f}x" if ratio is not None else "-",
                f"{min(spread):.2f}-{max(spread):.2f}x" if spread else "-",
                f"{cpu_ratio:.2f}x" if cpu_ratio is not None else "-",
                f">= {sc.target:.2f}x" if sc.target is not None else "-",
                met,
                f"{o.median(subject, 'p50_ms'):.2f} ms",
                f"{o.median(subject, 'p99_ms'):.2f} ms",
                _mib(o.peak_kib.get(subject, 0)),
            ]
        )
    for m in mems:
        met = "yes" if m.ok else "NO"
        blank = ["-"] * 6  # no throughput, reference or ratios for memory
        rows.append([m.name, *blank, m.limit, met, "-", "-", _mib(m.peak_kib)])
    return rows


def detail_rows(outcomes: list[Outcome]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        for n in o.scenario.contenders:
            runs = o.runs.get(n, [])
            if not runs:
                continue
            reqs = sum(r.requests for r in runs) or 1
            rows.append(
                [
                    o.scenario.name,
                    LABELS.get(n, n),
                    _num(o.median(n, "rps")),
                    " ".join(f"{r.rps / 1000:.1f}k" for r in runs),
                    f"{o.median(n, 'p50_ms'):.2f} ms",
                    f"{o.median(n, 'p99_ms'):.2f} ms",
                    f"{statistics.median(r.cpu_s / r.seconds for r in runs):.0%}",
                    f"{statistics.median(r.core_other_s / r.seconds for r in runs):.0%}",
                    _num(statistics.median(r.rpc for r in runs)),
                    f"{sum(r.origin_reqs for r in runs) / reqs:.2f}",
                    f"{sum(r.origin_304 for r in runs) / reqs:.2f}",
                    str(sum(r.errors + r.bad_status for r in runs)),
                    _mib(o.peak_kib.get(n, 0)),
                ]
            )
    return rows


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "-"


def machine_lines(stack: Stack, proxy_loop: str) -> list[str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(argv: list[str], cwd: Path | None = None) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=cwd)
        except (OSError, subprocess.TimeoutExpired):
            return "-"
        text = (p.stdout + p.stderr).strip().splitlines()
        return text[0] if text else "-"

    pyver = version(
        [
            stack.python,
            "-c",
            "import sys, aiohttp; print(sys.version.split()[0], 'aiohttp', aiohttp.__version__)",
        ]
    )
    lines = [
        f"machine: {os.cpu_count()} cores, {model or platform.machine()}, "
        f"Linux {platform.release()}",
        f"python {pyver}; {version(['wrk', '--version'])}",
        f"origin: {stack.origin.kind if stack.origin else '-'} on core {CLIENT_CORE}; "
        f"servers under test on core {SERVER_CORE}; wrk on core {CLIENT_CORE}",
        f"edgeproxy event loop: {proxy_loop}"
        + (
            " (uvloop not loaded: the proxy does not select it yet; judged against "
            "the asyncio references, uvloop references shown for comparison)"
            if proxy_loop == "asyncio"
            else ""
        ),
    ]
    where = version([stack.python, "-c", "import edgeproxy; print(edgeproxy.__file__)"], stack.src)
    rev = version(["git", "-C", str(stack.src), "rev-parse", "--short", "HEAD"])
    dirty = version(["git", "-C", str(stack.src), "status", "--porcelain", "--", "edgeproxy"])
    lines.append(
        f"edgeproxy from {Path(where).parent}"
        + (f" (git {rev}{', edgeproxy/ modified' if dirty != '-' else ''})" if rev != "-" else "")
    )
    lines.append(f"load average before: {load_average()} (other work here skews results)")
    if nginx := find_tool("nginx"):
        lines.append(f"nginx: {version([nginx, '-v'])}")
    if varnishd := find_tool("varnishd"):
        lines.append(f"varnish: {version([varnishd, '-V'])}")
    return lines


# -- main -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    p.add_argument("--rounds", type=int, default=3, help="rounds per scenario (default 3)")
    p.add_argument("--duration", type=float, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--warmup", type=float, default=1, help="seconds of warm-up per server")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("--quick", action="store_true", help="--rounds 3 --duration 2")
    p.add_argument("--only", help="comma-separated scenarios (hit-1k,client-304,hit-1m,...)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory scenarios")
    p.add_argument("--origin", choices=["nginx", "aiohttp"], default="nginx")
    p.add_argument(
        "--profile",
        metavar="SCENARIO",
        help="instead: run edgeproxy under py-spy through one scenario and summarise",
    )
    p.add_argument(
        "--versus",
        metavar="DIR",
        help="instead: this tree (or --src) against the tree in DIR, both at once on one "
        "core, CPU per request (hit-1k, client-304, revalidate, miss; --only to choose); "
        "DIR 'passthrough' or 'bare': against that reference (uvloop) instead",
    )
    p.add_argument(
        "--versus-keys",
        type=int,
        default=DEFAULT_KEYS,
        help=f"URLs --versus's revalidate cycles through (default {DEFAULT_KEYS})",
    )
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument(
        "--native",
        action="store_true",
        help="--profile: py-spy --native (the compiled modules' C functions by name)",
    )
    p.add_argument("--top", type=int, default=15, help="rows per profile table")
    p.add_argument("--keep-profile", metavar="FILE", help="save py-spy's collapsed stacks")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    p.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"))
    p.add_argument(
        "--src",
        metavar="DIR",
        help="run edgeproxy from this source tree (e.g. a `git archive HEAD` export) "
        "instead of the work tree",
    )
    return p


async def build_kind(python: str, tree: Path) -> str:
    """Whether `tree` runs compiled (a current mypyc build, edgeproxy/compiled.py)."""
    if not (tree / "edgeproxy" / "compiled.py").exists():
        return "plain sources (no mypyc build in that tree)"
    code, _ = await capture([python, "edgeproxy/compiled.py", "--current"], tree)
    return "compiled (mypyc)" if code == 0 else "plain sources (not built: docs/benchmarks.md)"


async def amain(opts: argparse.Namespace, tmp: Path, procs: Procs) -> int:
    src: Path = opts.src
    stack = Stack(procs, tmp, opts.python, REPO, src)
    stack.make_objects()
    origin = await stack.start_origin(prefer_nginx=opts.origin == "nginx")
    _, helptext = await capture([opts.python, "-m", "edgeproxy", "serve", "--help"], src)
    workers_flag = "--workers" in helptext
    uvloop_ok = (await capture([opts.python, "-c", "import uvloop"]))[0] == 0
    for label, tree in (("edgeproxy", src), ("versus", opts.versus)):
        if isinstance(tree, Path):
            print(f"{label} from {tree}: {await build_kind(opts.python, tree)}", flush=True)
    if opts.versus:
        return await versus(stack, opts)
    if opts.profile:
        scs, _ = plan("asyncio", False, False, False, False)
        chosen = [s for s in scs if s.name == opts.profile]
        if not chosen:
            print(f"--profile: one of {', '.join(s.name for s in scs)}", file=sys.stderr)
            return 2
        return await profile(stack, chosen[0], opts)

    edge = await stack.start("edgeproxy")
    await http_get(edge.port, "/static/1k")
    proxy_loop = "uvloop" if edge.loaded("uvloop") else "asyncio"
    scs, notes = plan(
        proxy_loop,
        uvloop_ok,
        bool(find_tool("varnishd")),
        bool(find_tool("nginx")),
        workers_flag,
    )
    if not workers_flag:
        notes.append(
            "scale: skipped: `edgeproxy serve --help` has no --workers option yet "
            "(the scenario runs when it does: N workers on N cores vs one, per CPU-second)"
        )
    if opts.only:
        wanted = {s.strip() for s in opts.only.split(",")}
        scs = [s for s in scs if s.name in wanted]
    runs = sum(len(s.contenders) for s in scs)
    estimate = runs * (opts.rounds * opts.duration + opts.warmup + 1) + (
        0 if opts.no_memory else 20
    )
    print("\n".join(machine_lines(stack, proxy_loop)))
    print(
        f"about {estimate / 60:.1f} minutes: {len(scs)} scenarios, {runs} servers x "
        f"{opts.rounds} rounds x {opts.duration:g} s\n",
        flush=True,
    )

    outcomes = []
    for sc in scs:
        outcomes.append(await run_scenario(stack, sc, opts))
    mems: list[MemResult] = []
    if not opts.no_memory and (not opts.only or "memory" in opts.only):
        # Judged on a proxy of their own: what streaming costs, not how full
        # the scenarios above left the hot tier (up to `cache.memory_size`,
        # 64 MiB by default). The scenario proxy's figure is printed too.
        fresh = await stack.start("edgeproxy-mem")
        for fn in (memory_16m(fresh, origin, 50), memory_1g(fresh)):
            m = await fn
            print(f"  {m.name}: {m.detail}", flush=True)
            mems.append(m)
        if scs:
            m = await memory_16m(edge, origin, 50)
            notes.append(
                f"mem-16m-x50 on the proxy the scenarios ran on (its hot tier as they "
                f"left it, up to cache.memory_size): {m.detail}"
            )

    print("\nTargets (edgeproxy vs its reference; ratio = median of per-round ratios)\n")
    print(
        table(
            [
                "scenario",
                "edgeproxy req/s",
                "reference",
                "ref req/s",
                "ratio",
                "rounds",
                "ratio/cpu-s",
                "target",
                "met?",
                "p50",
                "p99",
                "peak RSS",
            ],
            summary_rows(outcomes, mems),
        )
    )
    print("\nEvery server (medians of the rounds; origin/req = origin requests per request)\n")
    print(
        table(
            [
                "scenario",
                "server",
                "req/s",
                "rounds",
                "p50",
                "p99",
                "cpu",
                "core0 other",
                "req/cpu-s",
                "origin/req",
                "304/req",
                "errors",
                "peak RSS",
            ],
            detail_rows(outcomes),
        )
    )
    problems = [f"{o.scenario.name} {n}: {p}" for o in outcomes for n, p in o.problems.items()]
    for o in outcomes:
        for n, runs in o.runs.items():
            busy = statistics.median(r.cpu_s / r.seconds for r in runs)
            other = statistics.median(r.core_other_s / r.seconds for r in runs)
            if busy < CLIENT_BOUND and other <= DISTURBED and o.scenario.wrk_cores:
                notes.append(
                    f"{o.scenario.name} {n}: used {busy:.0%} of its core: the client (one wrk "
                    f"thread on core {CLIENT_CORE}) or the origin was the limit, so its req/s "
                    "is a lower bound; compare req/cpu-s"
                )
    disturbed = [
        f"{o.scenario.name} {n} {statistics.median(r.core_other_s / r.seconds for r in runs):.0%}"
        for o in outcomes
        for n, runs in o.runs.items()
        if statistics.median(r.core_other_s / r.seconds for r in runs) > DISTURBED
    ]
    if disturbed:
        notes.append(
            f"other processes (or hypervisor steal) used core {SERVER_CORE} during some runs "
            f"(core0 other > "
            f"{DISTURBED:.0%}): {', '.join(disturbed)}; req/s there is low, "
            "req/cpu-s less affected"
        )
    notes.append(f"load average after: {load_average()}")
    if notes or problems or mems:
        print("\nNotes")
        for line in [*notes, *problems, *(f"{m.name}: {m.detail}" for m in mems)]:
            print(f"- {line}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    opts = _parser().parse_args(argv)
    if opts.quick:
        opts.rounds, opts.duration = 3, 2
    opts.src = Path(opts.src).resolve() if opts.src else REPO
    if not (opts.src / "edgeproxy" / "__main__.py").exists():
        print(f"--src {opts.src}: no edgeproxy package there", file=sys.stderr)
        return 2
    if opts.versus and opts.versus not in REFERENCES:
        opts.versus = Path(opts.versus).resolve()
        if not (opts.versus / "edgeproxy" / "__main__.py").exists():
            print(f"--versus {opts.versus}: no edgeproxy package there", file=sys.stderr)
            return 2
    if opts.rounds < 1 or opts.duration < 1:
        print("--rounds and --duration must be at least 1", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {int(CLIENT_CORE)})  # the driver stays off the server core
    tmp = Path(tempfile.mkdtemp(prefix="edgeproxy-bench-"))
    procs = Procs(tmp)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        return asyncio.run(amain(opts, tmp, procs))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every server", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if opts.keep:
            print(f"server logs and configs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
