"""The store's worker threads: a lean `run_in_executor` for the hot path.

Every miss and revalidation makes two or three store calls, each a hop to a
pool thread and back. `loop.run_in_executor` pays for generality there: a
concurrent.futures.Future (a Condition, its lock, callbacks), then an asyncio
future chained to it both ways. Measured (docs/benchmarks.md, run 4) that
machinery was about a tenth of the event loop's CPU on a miss. Here a job is
one tuple on a SimpleQueue, and its outcome one `call_soon_threadsafe`.

Jobs queued by `gathered` for one function, one right after another, run
as one call of it with all their items: the quick lane's lookups, one
SELECT for the keys that waited together rather than a statement and a
read transaction each.

A job always runs once queued, even if its awaiter is cancelled meanwhile
(its outcome is then dropped). So the callers' rule is simple: a queued write
is a write that happens; nothing depends on a cancelled job being skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# (fn, args, loop, future, gathered): gathered, fn takes a list of items
# (args is one item's) and returns one result for each.
_Job = tuple[
    Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]", bool
]
GATHER_MAX = 256  # items in one gathered call


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: deliver a job's outcome, unless its awaiter gave up."""
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def _settle_all(
    futs: list[asyncio.Future[Any]], results: list[Any], error: BaseException | None
) -> None:
    """On the loop: a gathered call's outcome, one result (or its error) each."""
    for i, fut in enumerate(futs):
        if error is not None:
            _settle(fut, None, error)
        else:
            _settle(fut, results[i], None)


class StorePool:
    """`threads` worker threads, started on first use, joined by `shutdown`."""

    def __init__(self, threads: int, name: str) -> None:
        self._size = max(1, threads)
        self._name = name
        # Run by each thread as `shutdown` ends it: per-thread cleanup (the
        # store's SQLite connections, one per thread).
        self.on_exit: Callable[[], object] | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self.submitted = 0  # jobs queued so far (a commit's hops, in tests)

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(*args)`; the future resolves on the calling loop."""
        fut: asyncio.Future[T] = self._queue(fn, args, False)
        return fut

    def gathered(self, fn: Callable[[list[Any]], list[T]], item: Any) -> asyncio.Future[T]:
        """Queue `item` for `fn`: with the items of the `gathered` jobs for
        `fn` queued right behind it (up to GATHER_MAX), it runs as one
        `fn(items)`, which returns a result for each; an error fails them all."""
        fut: asyncio.Future[T] = self._queue(fn, (item,), True)
        return fut

    def _queue(
        self, fn: Callable[..., Any], args: tuple[Any, ...], gather: bool
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name}: cannot run jobs after shutdown")
            if not self._threads:
                for i in range(self._size):
                    # Daemon: a store nobody closed must not keep the process
                    # alive at exit (an unfinished write is then a crash, which
                    # the store survives: tests/e2e/test_kill9.py).
                    t = threading.Thread(target=self._work, name=f"{self._name}_{i}", daemon=True)
                    t.start()
                    self._threads.append(t)
            self._jobs.put((fn, args, loop, fut, gather))
            self.submitted += 1
        return fut

    def _work(self) -> None:
        jobs = self._jobs
        held: list[_Job | None] = []  # taken from the queue while gathering, next to run
        while True:  # bounded by shutdown: one None per thread ends it
            job = held.pop() if held else jobs.get()
            if job is None:
                on_exit = self.on_exit
                if on_exit is not None:
                    on_exit()
                return
            if job[4]:
                self._run_gathered(job, held)
                continue
            fn, args, loop, fut, _ = job
            del job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as e:  # delivered to the awaiter, like an executor does
                error = e
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits
                loop.call_soon_threadsafe(_settle, fut, result, error)
            del fn, args, loop, fut, result, error

    def _run_gathered(self, first: _Job, held: list[_Job | None]) -> None:
        """`first` and the gathered jobs for its function queued right behind
        it, in one call; the first other job met is `held`, to run next."""
        fn, _, loop, _, _ = first
        group = [first]
        while len(group) < GATHER_MAX:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and job[4] and job[2] is loop and job[0] == fn:
                group.append(job)
            else:
                held.append(job)
                break
        results: list[Any] = []
        error: BaseException | None = None
        try:
            results = fn([job[1][0] for job in group])
            if len(results) != len(group):
                raise RuntimeError(f"{fn!r}: {len(results)} results for {len(group)} items")
        except BaseException as e:  # delivered to every awaiter
            error = e
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits
            loop.call_soon_threadsafe(_settle_all, [job[3] for job in group], results, error)

    def shutdown(self) -> None:
        """Let queued jobs finish, then join the threads (blocking: off the loop)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            for _ in threads:
                self._jobs.put(None)
        for t in threads:
            t.join()
