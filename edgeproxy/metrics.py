"""Prometheus metrics: what the edge counts, and `GET /metrics` (admin.py) renders.

One `Metrics` per proxy app (EdgeState.metrics), recorded from the places
that already know the answer: proxy.handle's finally block (one request,
its cache outcome from accesslog.cache_outcome, the body bytes and where
they came from), proxy._send_upstream (each origin attempt), EdgeState.purge,
the Reloader and the disk store's eviction hook. Label values are bounded:
methods outside `METHODS` are "other", statuses are numbers from 100 to 599
(else "other"; "error" when no response came), route and origin names come
from the config.

Two modes, chosen per process:
- one process (`edgeproxy serve --workers 1`, tests): each Metrics has its
  own CollectorRegistry, never prometheus_client's global one, so tests that
  build many apps in one process don't collide.
- workers: prometheus_client's multiprocess mode. The supervisor
  (workers.py) makes a fresh, empty directory (`fresh_multiprocess_dir`) and
  names it in PROMETHEUS_MULTIPROC_DIR before forking; each worker, right
  after its fork, switches the library to its mmap-backed values
  (`enable_multiprocess`: the library picks its value class from that
  variable once, at import, long before the supervisor runs). A worker
  writes its own files in that directory; a scrape on any worker adds up
  every file with MultiProcessCollector. A dead worker's counter and
  histogram files are KEPT: counters must never go down, and its requests
  did happen, so the totals still add up after a restart (the restarted
  worker writes new files under its new pid). Only its live gauges go
  (`mark_process_dead`, called by the supervisor as it reaps it): that is
  `edgeproxy_workers`, the number of live workers.

The cache gauges (entries, bytes) are read from the store at scrape time by
the answering process: the cache is one directory shared by every worker, so
one process's view is the whole truth; summing per-worker copies would not be.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeproxy.accesslog import cache_outcome
from edgeproxy.http.cache_status import CacheStatus
from edgeproxy.purge import PurgeAll, PurgePrefix, PurgeTags, PurgeURL, Target
from edgeproxy.store.base import StoreHealth

if TYPE_CHECKING:
    from edgeproxy.store.disk import DiskStore

log = logging.getLogger("edgeproxy.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Registered methods (RFC 9110 section 9.3, PATCH from RFC 5789) and PURGE;
# any other token a client sends is "other", so it can't mint series.
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH", "PURGE"}
)
NO_ROUTE = ""  # requests no route took (refused, 404 without a route, PURGE)
NO_RESPONSE = "error"  # an origin attempt that got no response (connect, timeout)
# Seconds until the origin's response head; up to the longest read timeouts.
ORIGIN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def status_label(status: int | None) -> str:
    """An HTTP status as a number (RFC 9110 section 15: three digits, 1xx-5xx)."""
    if status is None:
        return NO_RESPONSE
    return str(status) if 100 <= status <= 599 else "other"


def outcome(cs: CacheStatus | None, status: int | None, from_store: bool) -> str:
    """The cache outcome of one request, as the access log names it; no
    response at all (an exception before any head) is "error", as there."""
    if status is None:
        return "error"
    return cache_outcome(cs, status, from_store)


def byte_source(from_store: bool, relayed: bool) -> str:
    """Where a response body came from: the store (hits, revalidated,
    collapsed, stale), the origin (relayed as it arrives), or the edge's own
    text (errors, 404s, refusals)."""
    if from_store:
        return "cache"
    return "origin" if relayed else "edge"


def purge_kind(target: Target) -> str:
    match target:
        case PurgeURL():
            return "url"
        case PurgePrefix():
            return "prefix"
        case PurgeTags():
            return "tag"
        case PurgeAll():
            return "all"


class Metrics:
    """This process's metrics; `multiprocess_dir` set: the worker mode (module doc)."""

    content_type = CONTENT_TYPE_LATEST  # of `exposition`: text format, version 1.0.0

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        # Multiprocess values live in the directory's files, not in a registry.
        reg = None if multiprocess_dir is not None else self.registry
        self.requests = Counter(
            "edgeproxy_requests",
            "Client requests by route, method and cache outcome.",
            ("route", "method", "cache"),
            registry=reg,
        )
        self.origin_requests = Counter(
            "edgeproxy_origin_requests",
            "Requests sent to origin servers (each attempt), by origin and response status.",
            ("origin", "status"),
            registry=reg,
        )
        self.origin_duration = Histogram(
            "edgeproxy_origin_duration_seconds",
            "Seconds from sending a request to an origin until its response head (or failure).",
            ("origin",),
            buckets=ORIGIN_BUCKETS,
            registry=reg,
        )
        self.response_bytes = Counter(
            "edgeproxy_response_bytes",
            "Response body bytes sent to clients, by source: cache, origin or edge.",
            ("source",),
            registry=reg,
        )
        self.evictions = Counter(
            "edgeproxy_evictions",
            "Stored responses evicted by the cache's size limit.",
            registry=reg,
        )
        self.purges = Counter(
            "edgeproxy_purges", "Purges applied (not dry runs), by kind.", ("kind",), registry=reg
        )
        self.purged_entries = Counter(
            "edgeproxy_purged_entries",
            "Stored responses removed or marked by purges.",
            registry=reg,
        )
        self.reloads = Counter(
            "edgeproxy_reloads",
            "Config reloads by result (ok, error); each worker process reloads itself.",
            ("result",),
            registry=reg,
        )
        self.workers = Gauge(
            "edgeproxy_workers",
            "Live worker processes.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.workers.set(1)
        # The labelled children, resolved once: the hit path is a dict lookup
        # and two increments. Keys are label values, so they stay bounded.
        self._requests: dict[tuple[str, str, str], Counter] = {}
        self._origins: dict[tuple[str, str], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._bytes = {s: self.response_bytes.labels(s) for s in ("cache", "origin", "edge")}
        self._purges = {k: self.purges.labels(k) for k in ("url", "prefix", "tag", "all")}
        self._reloads = {True: self.reloads.labels("ok"), False: self.reloads.labels("error")}
        # `served` counts, not yet in the counters (flushed once per loop turn).
        self._pending: dict[tuple[str, str, str], int] = {}
        self._pending_bytes: dict[str, int] = {}
        self._pending_origin: list[tuple[str, int | None, float]] = []
        self._flush_due = False

    @classmethod
    def for_process(cls) -> Metrics:
        """Multiprocess mode when this process writes its values to the
        directory in PROMETHEUS_MULTIPROC_DIR (a worker, see `enable_multiprocess`;
        or the variable was set before the library was imported)."""
        directory = os.environ.get(MULTIPROC_ENV)
        multi = bool(directory) and getattr(values.ValueClass, "_multiprocess", False)
        return cls(directory if multi else None)

    # -- recording (on the event loop, except `evicted`) ---------------------

    def served(self, route: str | None, method: str, cache: str, source: str, nbytes: int) -> None:
        """One client request, answered: counted here, added to the
        prometheus counters once per loop turn (`flush`; a counter's inc
        takes a lock and, in a worker, writes its file: ~2 us a request)."""
        m = method if method in METHODS else "other"
        key = (route or NO_ROUTE, m, cache)
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1
        if nbytes:
            self._pending_bytes[source] = self._pending_bytes.get(source, 0) + nbytes
        self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a script, a test): at once
                self.flush()

    def flush(self) -> None:
        """Add what `served` counted to the counters (before any exposition)."""
        self._flush_due = False
        pending, self._pending = self._pending, {}
        for key, n in pending.items():
            child = self._requests.get(key)
            if child is None:
                child = self._requests[key] = self.requests.labels(*key)
            child.inc(n)
        pending_bytes, self._pending_bytes = self._pending_bytes, {}
        for source, n in pending_bytes.items():
            self._bytes[source].inc(n)
        origin, self._pending_origin = self._pending_origin, []
        if origin:
            self._origin_responses(origin)

    def origin_response(self, origin: str, status: int | None, seconds: float) -> None:
        """One origin attempt: its status (None: no response) and how long it
        took; recorded at the loop turn's `flush`, as `served` is."""
        self._pending_origin.append((origin, status, seconds))
        self._flush_soon()

    def _origin_responses(self, attempts: list[tuple[str, int | None, float]]) -> None:
        """One inc per (origin, status) for the turn; the histogram takes
        each duration (prometheus has no batch observe)."""
        counts: dict[tuple[str, str], int] = {}
        for origin, status, seconds in attempts:
            key = (origin, status_label(status))
            counts[key] = counts.get(key, 0) + 1
            hist = self._durations.get(origin)
            if hist is None:
                hist = self._durations[origin] = self.origin_duration.labels(origin)
            hist.observe(seconds)
        for key, n in counts.items():
            child = self._origins.get(key)
            if child is None:
                child = self._origins[key] = self.origin_requests.labels(*key)
            child.inc(n)

    def purged(self, target: Target, count: int) -> None:
        self._purges[purge_kind(target)].inc()
        if count:
            self.purged_entries.inc(count)

    def reloaded(self, ok: bool) -> None:
        self._reloads[ok].inc()

    def evicted(self, keys: list[str]) -> None:
        """DiskStore.on_evict: on the store's pool thread (the values lock)."""
        self.evictions.inc(len(keys))

    def watch_evictions(self, disk: DiskStore) -> None:
        """Count the disk store's evictions, keeping any hook already there
        (the hot tier's: it must still hear of every eviction)."""
        inner = disk.on_evict

        def hook(keys: list[str]) -> None:
            if inner is not None:
                inner(keys)
            self.evicted(keys)

        disk.on_evict = hook

    # -- exposition ------------------------------------------------------------

    def exposition(
        self, store: Mapping[str, int] | None, health: StoreHealth | None = None
    ) -> bytes:
        """The text format, with the cache gauges from `store` (its stats(),
        None when they could not be read: then they are left out) and the
        answering process's store health (issue #8: a degraded store shows).

        Blocking in multiprocess mode (it reads every worker's files): call
        it off the event loop, after `flush` on it.
        """
        sources: list[Collector] = []
        if self.multiprocess_dir is not None:
            # Untyped in prometheus_client 0.26: it reads every worker's .db files.
            collector = multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
                None, path=self.multiprocess_dir
            )
            sources.append(collector)
        else:
            sources.append(self.registry)
        extra = [*store_gauges(store), *health_gauges(health)]
        return generate_latest(_Scrape(sources, extra))


def store_gauges(stats: Mapping[str, int] | None) -> Iterator[Metric]:
    if stats is None:
        return
    yield GaugeMetricFamily(
        "edgeproxy_cache_entries", "Stored responses (variants) in the cache.", stats["entries"]
    )
    yield GaugeMetricFamily(
        "edgeproxy_cache_bytes", "Bytes the cache directory holds.", stats["bytes"]
    )


def health_gauges(health: StoreHealth | None) -> Iterator[Metric]:
    """The store's write state, as the process answering the scrape sees it
    (each worker finds a disk fault on its own next write)."""
    if health is None:
        return
    yield GaugeMetricFamily(
        "edgeproxy_store_degraded",
        "1 while the cache store can't write (disk full or unwritable): responses pass through.",
        1 if health.state == "degraded" else 0,
    )
    yield GaugeMetricFamily(
        "edgeproxy_store_write_failures",
        "Writes this process's store failed on a disk fault since it started.",
        health.write_failures,
    )
    yield GaugeMetricFamily(
        "edgeproxy_store_pending_purges",
        "Purges or invalidations waiting for the disk; no hits are served meanwhile.",
        health.pending,
    )


class _Scrape(Collector):
    """One scrape: the process's (or every worker's) metrics, then the store gauges."""

    def __init__(self, sources: Iterable[Collector], extra: list[Metric]) -> None:
        self._sources = sources
        self._extra = extra

    def collect(self) -> Iterable[Metric]:
        for source in self._sources:
            yield from source.collect()
        yield from self._extra


# -- the process model (workers.py) ------------------------------------------


def fresh_multiprocess_dir() -> str:
    """A new empty directory for this supervisor's workers, named in the
    environment they inherit. New per start, so no earlier run's counts leak in."""
    directory = tempfile.mkdtemp(prefix="edgeproxy-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory


def enable_multiprocess() -> None:
    """In a freshly forked worker: write values to the directory's files.

    prometheus_client picks its value class from PROMETHEUS_MULTIPROC_DIR at
    import; the supervisor imported it before making the directory, so the
    worker makes the same choice now, before any metric exists. Only in a
    process that is nothing but a worker: it is process-wide.
    """
    if os.environ.get(MULTIPROC_ENV) and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def mark_process_dead(pid: int) -> None:
    """A worker exited: drop its live gauges; its counters stay (module doc)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
