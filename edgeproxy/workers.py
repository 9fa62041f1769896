"""The process model: one supervisor, N forked worker processes (`--workers N`).

Each worker runs the whole edge (server.serve) and opens its own public and
admin listeners with SO_REUSEPORT, so the kernel spreads connections over
the workers; they share the cache directory (diskcache is multi-process
safe; a purge lands on the shared disk store and each hot tier sees it
through the store's shared generation log). The supervisor binds nothing
and holds no event loop: it forks before any loop exists, then waits for
signals with sigtimedwait (which also says who sent one).

- A worker that dies is restarted, after a backoff that doubles while
  workers keep dying young (capped). A worker that fails to start
  (EXIT_SETUP: a port taken, a token file missing) stops the whole edge:
  restarting would fail the same way.
- SIGTERM/SIGINT: forwarded to every worker, which stops accepting, lets
  in-flight requests finish within `drain_timeout` and exits 0; the
  supervisor waits for them (bounded: drain_timeout + a grace), kills any
  straggler, and exits 0.
- SIGHUP: forwarded to every worker, each reloads its config.
- `POST /reload` lands on one worker; that worker reloads and sends SIGUSR1
  to the supervisor, which sends SIGHUP to every OTHER worker (the sender
  is known from siginfo, so it does not reload twice). Two POSTs on two
  workers at the same instant may coalesce into one SIGUSR1 (standard
  signals don't queue): each of those two has reloaded itself anyway.
- File edits: each worker polls the file itself.

With one worker there is no supervisor: server.run serves in-process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from edgeproxy import accesslog, metrics

log = logging.getLogger("edgeproxy.workers")

EXIT_SETUP = 3  # a worker could not start; don't restart it
RELOAD_OTHERS = signal.SIGUSR1  # worker -> supervisor: "I reloaded; reload the rest"
STOP_GRACE = 5.0  # seconds past drain_timeout before a worker is killed
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, RELOAD_OTHERS}
_BACKOFF_MIN, _BACKOFF_MAX, _YOUNG = 0.1, 5.0, 10.0


class SetupError(Exception):
    """A process-model setting that can't work (reported before forking)."""


@dataclass
class _Worker:
    index: int
    pid: int | None = None
    started: float = 0.0
    restart_at: float | None = None  # set while dead and waiting for its restart
    backoff: float = _BACKOFF_MIN


class Supervisor:
    """Forks `count` workers running `target(index) -> exit code`; see the module doc."""

    def __init__(self, count: int, target: Callable[[int], int], drain_timeout: float) -> None:
        self.count = count
        self.target = target
        self.drain_timeout = drain_timeout
        self.workers = [_Worker(i) for i in range(count)]
        self._failed = False

    def run(self) -> int:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        # The workers' Prometheus files (metrics.py): fresh for this run, gone after it.
        env_before = os.environ.get(metrics.MULTIPROC_ENV)
        metrics_dir = metrics.fresh_multiprocess_dir()
        try:
            for w in self.workers:
                self._spawn(w)
            while not self._failed:
                info = signal.sigtimedwait(_SIGNALS, self._wait_for())
                if info is None or info.si_signo == signal.SIGCHLD:
                    pass  # reaped below: SIGCHLDs coalesce, so every wakeup reaps
                elif info.si_signo in (signal.SIGTERM, signal.SIGINT):
                    log.info("supervisor: %s, stopping workers", signal.Signals(info.si_signo).name)
                    break
                elif info.si_signo == signal.SIGHUP:
                    self._signal_all(signal.SIGHUP)
                elif info.si_signo == RELOAD_OTHERS:
                    self._signal_all(signal.SIGHUP, but=info.si_pid)
                self._reap()
                self._restart_due()
            self._stop()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            shutil.rmtree(metrics_dir, ignore_errors=True)
            if env_before is None:
                os.environ.pop(metrics.MULTIPROC_ENV, None)
            else:
                os.environ[metrics.MULTIPROC_ENV] = env_before
        return 1 if self._failed else 0

    def _wait_for(self) -> float:
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        wait = min(due) - time.monotonic() if due else 1.0
        return min(max(wait, 0.01), 1.0)

    def _spawn(self, w: _Worker) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: no return from here
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                metrics.enable_multiprocess()  # before any metric exists in this process
                code = self.target(w.index)
            except BaseException:  # the child must never return into the parent's code
                traceback.print_exc()
            finally:
                accesslog.flush()  # os._exit runs no atexit hooks
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        w.pid, w.started, w.restart_at = pid, time.monotonic(), None
        log.info("worker %d pid %d", w.index, pid)

    def _signal_all(self, sig: signal.Signals, but: int | None = None) -> None:
        for w in self.workers:
            if w.pid is not None and w.pid != but:
                with contextlib.suppress(ProcessLookupError):  # died: reaped next wakeup
                    os.kill(w.pid, sig)

    def _reap(self) -> list[_Worker]:
        """Collect exited workers; schedule their restarts unless stopping."""
        gone: list[_Worker] = []
        for w in self.workers:
            if w.pid is None:
                continue
            try:
                pid, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = w.pid, 0
            if pid == 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            log.warning("worker %d pid %d exited (%s)", w.index, w.pid, _describe(code))
            metrics.mark_process_dead(w.pid)  # its live gauges go; its counters stay
            w.pid = None
            gone.append(w)
            if code == EXIT_SETUP:
                log.error("worker %d could not start: stopping", w.index)
                self._failed = True
                continue
            young = time.monotonic() - w.started < _YOUNG
            w.backoff = min(w.backoff * 2, _BACKOFF_MAX) if young else _BACKOFF_MIN
            w.restart_at = time.monotonic() + (w.backoff if young else 0.0)
        return gone

    def _restart_due(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.pid is None and w.restart_at is not None and w.restart_at <= now:
                log.info("restarting worker %d", w.index)
                self._spawn(w)

    def _stop(self) -> None:
        self._signal_all(signal.SIGTERM)
        for w in self.workers:
            w.restart_at = None
        deadline = time.monotonic() + self.drain_timeout + STOP_GRACE
        while any(w.pid is not None for w in self.workers):
            left = deadline - time.monotonic()
            if left <= 0:
                for w in self.workers:
                    if w.pid is not None:
                        log.error("worker %d pid %d did not stop: killing it", w.index, w.pid)
                        os.kill(w.pid, signal.SIGKILL)
                        os.waitpid(w.pid, 0)
                        w.pid = None
                break
            signal.sigtimedwait(_SIGNALS, min(left, 0.5))  # other signals: already stopping
            for w in self._reap():
                w.restart_at = None
        log.info("supervisor: all workers stopped")


def _describe(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
