"""Child processes pinned to cores, their memory and CPU from /proc, and a tiny HTTP client.

Every child runs in its own session (process group) with a parent-death
signal, so a crashed driver leaves nothing behind; `Procs.stop_all` stops
the groups on any normal or interrupted exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the driver dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


_taken: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now (bind port 0, read it back)."""
    for _ in range(50):  # bounded: the kernel hands out a new one each time
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _taken:
            _taken.add(port)
            return port
    raise RuntimeError("no free loopback port")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """pid and all its descendants (nginx and varnish workers, proxy workers)."""
    kids = _children()
    out, todo = [], [pid]
    while todo and len(out) < 1000:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _status_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    return _cpu_ticks_at(Path(f"/proc/{pid}/stat"))


def _cpu_ticks_at(stat: Path) -> int:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def core_busy_seconds(core: int) -> float:
    """CPU seconds core `core` has run processes (anyone's) or lost to the hypervisor.

    /proc/stat: user nice system idle iowait irq softirq steal. Interrupt
    time is left out: on loopback it is mostly the benchmark's own packets.
    """
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:9]]
                # ksoftirqd runs the softirqs that overflow: the benchmark's packets too.
                irq_thread = _cpu_ticks(_ksoftirqd(core)) if _ksoftirqd(core) else 0
                return (v[0] + v[1] + v[2] + v[7] - irq_thread) / CLK_TCK
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


_ksoftirqd_pids: dict[int, int] = {}


def _ksoftirqd(core: int) -> int:
    if core not in _ksoftirqd_pids:
        _ksoftirqd_pids[core] = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{entry}/comm").read_text().strip() == f"ksoftirqd/{core}":
                        _ksoftirqd_pids[core] = int(entry)
                        break
    return _ksoftirqd_pids[core]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    info: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def pids(self) -> list[int]:
        return tree(self.pid)

    def rss_kib(self) -> int:
        return sum(_status_kib(p, "VmRSS") for p in self.pids())

    def peak_kib(self) -> int:
        """Sum of each process's VmHWM (peak resident set) in the tree."""
        return sum(_status_kib(p, "VmHWM") for p in self.pids())

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux clear_refs 5); False if not allowed."""
        ok = True
        for p in self.pids():
            try:
                Path(f"/proc/{p}/clear_refs").write_text("5")
            except OSError:
                ok = False
        return ok

    def cpu_seconds(self) -> float:
        return sum(_cpu_ticks(p) for p in self.pids()) / CLK_TCK

    def thread_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds of the processes' main threads ("main": the event
        loop's) and of their other threads ("threads": the store's pool,
        uvloop's resolver...), summed over the tree. Python does not name
        its threads for the kernel, so they are told apart by id."""
        out: dict[str, float] = {}
        for p in self.pids():
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{p}/task").iterdir():
                    with contextlib.suppress(OSError):
                        name = "main" if task.name == str(p) else "threads"
                        ticks = _cpu_ticks_at(task / "stat")
                        out[name] = out.get(name, 0.0) + ticks / CLK_TCK
        return out

    def loaded(self, needle: str) -> bool:
        """Whether a shared object whose path contains `needle` is mapped (uvloop?)."""
        for p in self.pids():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{p}/maps").read_text():
                    return True
        return False

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Procs:
    """Starts children pinned with taskset and stops every one of them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cores: str,
        port: int = 0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                ["taskset", "-c", cores, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env=env,
                cwd=cwd,
            )
        proc = Proc(name, popen, log, port)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 5.0) -> None:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout)
        # Workers left behind by a master that died first (same process group).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


# -- a minimal HTTP/1.1 client over asyncio streams (stdlib only) ---------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names, repeated fields joined with ", "
    body_bytes: int
    body: bytes = b""  # the first KEEP bytes

    @property
    def body_text(self) -> str:
        return self.body.decode(errors="replace")


KEEP = 65536


async def http_get(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    seconds: float = 30.0,
) -> Reply:
    """One GET on a fresh connection (Connection: close), body read and counted."""

    async def go() -> Reply:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status, fields = parse_head(head)
            n, kept = 0, bytearray()
            while chunk := await reader.read(1 << 18):  # until the server closes
                n += len(chunk)
                if len(kept) < KEEP:
                    kept += chunk[: KEEP - len(kept)]
            return Reply(status, fields, n, bytes(kept))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.wait_for(go(), seconds)


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    text = head.decode("latin-1").split("\r\n")
    status = int(text[0].split()[1])
    fields: dict[str, str] = {}
    for line in text[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            fields[key] = f"{fields[key]}, {value.strip()}" if key in fields else value.strip()
    return status, fields


async def capture(argv: Sequence[str], cwd: Path | None = None) -> tuple[int, str]:
    """Run a short command: (exit status, stdout and stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(errors="replace")


async def wait_http(proc: Proc, path: str = "/__ready", seconds: float = 20.0) -> None:
    """Until the server answers anything on `path`; fail with its log if it died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            await http_get(proc.port, path, seconds=2.0)
            return
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer on port {proc.port}:\n{proc.tail()}")
