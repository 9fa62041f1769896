"""`scripts/bench --versus DIR`: this tree against another, side by side.

Alternating solo runs cannot see a 10% change on a machine whose speed
drifts by 2x within minutes (docs/benchmarks.md, Run 10). Here both trees
run at once instead: two fresh edgeproxy processes on the server core, one
wrk each on the client core, and each proxy's CPU per request (utime+stime
of all its threads over the run, divided by the requests its wrk counted).
Both see the same machine at the same moment, and CPU per request does not
depend on how the core was shared between them. An A/A run agrees within
about 1%.

Each proxy gets about half a core, so a rate-dependent feature sees half the
rate: the revalidate scenario cycles through `--versus-keys` URLs (400 by
default, so that each key is revalidated about as often as in the full
bench's 1,000 at twice the rate). p99s are of two proxies sharing a core.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench_lib import wrk
from bench_lib.servers import Proc, free_port, wait_http
from bench_lib.stack import SERVER_CORE, Stack

SCENARIOS = ("hit-1k", "client-304", "revalidate", "miss")
# `--versus passthrough` / `--versus bare`: A is that reference app (uvloop),
# the one the full bench's ratio for the scenario is taken against.
REFERENCES = ("passthrough", "bare")
DEFAULT_KEYS = 400


@dataclass(frozen=True)
class Side:
    """One proxy's share of a round."""

    requests: int
    cpu_s: float
    p99_ms: float
    threads: dict[str, float]  # CPU seconds by thread name over the run

    @property
    def us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6 if self.requests else float("nan")

    def split(self) -> str:
        """CPU per request by thread name: where a request's CPU went."""
        if not self.requests:
            return ""
        parts = sorted(self.threads.items(), key=lambda kv: -kv[1])
        return " ".join(f"{name} {s / self.requests * 1e6:.0f}" for name, s in parts if s > 0)


@dataclass(frozen=True)
class Round:
    a: Side
    b: Side

    @property
    def ratio(self) -> float:
        """B's CPU per request over A's: below 1, B is cheaper."""
        return self.b.us_per_request / self.a.us_per_request


def summary_line(name: str, rounds: list[Round]) -> str:
    """One scenario's row: medians, and the range of the per-round ratios."""
    ratios = [r.ratio for r in rounds]
    a_us = statistics.median(r.a.us_per_request for r in rounds)
    b_us = statistics.median(r.b.us_per_request for r in rounds)
    a_p99 = statistics.median(r.a.p99_ms for r in rounds)
    b_p99 = statistics.median(r.b.p99_ms for r in rounds)
    return (
        f"| {name:<10} | {a_us:8.0f} | {b_us:8.0f} | {statistics.median(ratios):5.3f} "
        f"| {min(ratios):.3f}-{max(ratios):.3f} | {a_p99:8.1f} | {b_p99:8.1f} |"
    )


HEADER = (
    "| scenario   | A us/req | B us/req | B/A   | rounds      | A p99 ms | B p99 ms |\n"
    "|------------|----------|----------|-------|-------------|----------|----------|"
)


async def _start(stack: Stack, label: str, tree: Path | str, n: int) -> Proc:
    port = free_port()
    if isinstance(tree, str):  # a reference app
        assert stack.origin is not None
        argv = [stack.python, "-m", "bench_lib.apps", tree, "--port", str(port)]
        argv += ["--loop", "uvloop", "--upstream", stack.origin.url]
        cwd = stack.repo
    else:
        argv = stack.edgeproxy_argv(port, f"cache-versus-{label}-{n}", ["--workers", "1"])
        cwd = tree
    proc = stack.procs.start(f"{label}-{n}", argv, SERVER_CORE, port, env=stack._env(), cwd=cwd)
    await wait_http(proc)
    return proc


async def _load(
    proc: Proc,
    path: str,
    lua: str | None,
    headers: dict[str, str],
    seconds: float,
    opts: argparse.Namespace,
) -> Side:
    cpu0 = proc.cpu_seconds()
    threads0 = proc.thread_cpu_seconds()
    res = await wrk.run(
        f"http://127.0.0.1:{proc.port}{path}",
        seconds,
        connections=opts.connections,
        headers=headers,
        lua=lua,
        env={
            "BENCH_PATH": path,
            "BENCH_TAG": uuid.uuid4().hex[:12],
            "BENCH_KEYS": str(opts.versus_keys),
        },
    )
    cpu = proc.cpu_seconds() - cpu0
    threads = {name: s - threads0.get(name, 0.0) for name, s in proc.thread_cpu_seconds().items()}
    return Side(res.requests, cpu, res.p99_ms, threads)


async def versus(stack: Stack, opts: argparse.Namespace) -> int:
    """Every round: both trees fresh, primed, warmed and measured at once."""
    from bench_lib.driver import plan, prepare  # the scenarios' paths and priming

    scs = {s.name: s for s in plan("uvloop", False, False, False, False)[0]}
    wanted = [s.strip() for s in opts.only.split(",")] if opts.only else list(SCENARIOS)
    unknown = [w for w in wanted if w not in SCENARIOS]
    if unknown:
        raise ValueError(f"--versus runs {', '.join(SCENARIOS)}; not {', '.join(unknown)}")
    trees: dict[str, Path | str] = {"A": opts.versus, "B": stack.src}  # resolved by main()
    print(f"A: {trees['A']}\nB: {trees['B']}\n", flush=True)
    results: dict[str, list[Round]] = {}
    n = 0
    for name in wanted:
        sc = scs[name]
        results[name] = []
        for i in range(opts.rounds):
            n += 1
            procs = {k: await _start(stack, k, tree, n) for k, tree in trees.items()}
            try:
                headers = {}
                for k, proc in procs.items():
                    kind = trees[k] if isinstance(trees[k], str) else "edgeproxy"
                    headers[k], problem = await prepare(sc, str(kind), proc.port)
                    if problem:
                        raise RuntimeError(f"{name}, tree {k}: {problem}")
                await asyncio.gather(
                    *(
                        _load(p, sc.path, sc.lua, headers[k], opts.warmup, opts)
                        for k, p in procs.items()
                    )
                )
                a, b = await asyncio.gather(
                    *(
                        _load(p, sc.path, sc.lua, headers[k], opts.duration, opts)
                        for k, p in procs.items()
                    )
                )
            finally:
                for proc in procs.values():
                    stack.procs.stop(proc)
            r = Round(a, b)
            results[name].append(r)
            print(
                f"  {name:<10} round {i + 1}  A {a.us_per_request:6.0f} us/req  "
                f"B {b.us_per_request:6.0f} us/req  B/A {r.ratio:.3f}",
                flush=True,
            )
            print(f"    by thread, us/req: A {a.split()}; B {b.split()}", flush=True)
    print("\nCPU per request, both trees at once on one core (medians of the rounds)\n")
    print(HEADER)
    for name, rounds in results.items():
        print(summary_line(name, rounds))
    return 0
