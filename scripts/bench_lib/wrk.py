"""Running wrk and reading its report."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

LUA_DIR = Path(__file__).parent / "lua"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class WrkResult:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors: connect, read, write, timeout
    non_2xx_3xx: int
    raw: str


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(out: str) -> WrkResult:
    def grab(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, out, re.MULTILINE)

    rps = grab(r"^Requests/sec:\s+([\d.]+)")
    total = grab(r"^\s*(\d+) requests in ")
    p50 = grab(r"^\s+50%\s+(\S+)")
    p99 = grab(r"^\s+99%\s+(\S+)")
    if not (rps and total and p50 and p99):
        raise ValueError(f"could not read wrk's report:\n{out}")
    errors = 0
    if sock := grab(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
        errors = sum(int(g) for g in sock.groups())
    bad = grab(r"Non-2xx or 3xx responses: (\d+)")
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        errors=errors,
        non_2xx_3xx=int(bad.group(1)) if bad else 0,
        raw=out,
    )


async def run(
    url: str,
    duration: float,
    connections: int = 50,
    threads: int = 1,
    cores: str | None = "1",
    headers: dict[str, str] | None = None,
    lua: str | None = None,
    env: dict[str, str] | None = None,
) -> WrkResult:
    """One wrk run, bounded: killed if it overruns its duration by 30 s."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    argv += ["--latency", "--timeout", "5s"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if lua:
        argv += ["-s", str(LUA_DIR / lua)]
    argv.append(url)
    if cores is not None:
        argv = ["taskset", "-c", cores, *argv]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), duration + 30)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}:\n{text}")
    return parse(text)
