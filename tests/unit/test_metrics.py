"""metrics.py: label mapping (bounded label values), per-app registries, and
multiprocess aggregation across processes (each its own pid's files)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.http.cache_status import CacheStatus, Fwd
from edgeproxy.metrics import (
    METHODS,
    MULTIPROC_ENV,
    Metrics,
    byte_source,
    mark_process_dead,
    method_label,
    outcome,
    purge_kind,
    status_label,
)
from edgeproxy.purge import PurgeAll, PurgePrefix, PurgeTags, PurgeURL, Target


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def value(
    m: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


# -- label mapping -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "label"),
    [
        # Registered methods (RFC 9110 section 9.3; PATCH, RFC 5789) keep their name.
        ("GET", "GET"),
        ("HEAD", "HEAD"),
        ("POST", "POST"),
        ("PUT", "PUT"),
        ("DELETE", "DELETE"),
        ("OPTIONS", "OPTIONS"),
        ("TRACE", "TRACE"),
        ("PATCH", "PATCH"),
        ("PURGE", "PURGE"),
        # Methods are case-sensitive (RFC 9110 section 9.1): "get" is another method.
        ("get", "other"),
        ("BREW", "other"),
        ("PROPFIND", "other"),
        ("", "other"),
    ],
)
def test_method_label(method: str, label: str) -> None:
    assert method_label(method) == label


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (200, "200"),
        (304, "304"),
        (100, "100"),
        (599, "599"),
        (None, "error"),  # no response: connect failure, timeout
        # Outside 1xx-5xx (RFC 9110 section 15): no new series per odd number.
        (99, "other"),
        (600, "other"),
        (0, "other"),
        (-1, "other"),
    ],
)
def test_status_label(status: int | None, label: str) -> None:
    assert status_label(status) == label


@pytest.mark.parametrize(
    ("from_store", "relayed", "source"),
    [
        (True, False, "cache"),
        (True, True, "cache"),
        (False, True, "origin"),
        (False, False, "edge"),
    ],
)
def test_byte_source(from_store: bool, relayed: bool, source: str) -> None:
    assert byte_source(from_store, relayed) == source


@pytest.mark.parametrize(
    ("cs", "status", "from_store", "expected"),
    [
        (None, None, False, "error"),  # an exception before any head: aiohttp's 500
        (None, 404, False, "none"),  # no route
        (CacheStatus(hit=True, ttl=5), 200, True, "hit"),
        (CacheStatus(hit=True, ttl=5), 304, True, "client-304"),  # RFC 9111 section 4.3.2
        (CacheStatus(fwd=Fwd.STALE, fwd_status=304, ttl=5), 200, True, "revalidated"),
        (CacheStatus(fwd=Fwd.BYPASS, fwd_status=200), 200, False, "bypass"),
        (CacheStatus(fwd=Fwd.URI_MISS, fwd_status=200, collapsed=True), 200, True, "collapsed"),
        (CacheStatus(fwd=Fwd.URI_MISS, fwd_status=200, stored=True), 200, False, "miss"),
        (CacheStatus(fwd=Fwd.METHOD, fwd_status=201), 201, False, "pass"),
    ],
)
def test_outcome_is_the_access_log_word(
    cs: CacheStatus | None, status: int | None, from_store: bool, expected: str
) -> None:
    assert outcome(cs, status, from_store) == expected


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        (PurgeURL("http://a.example/x"), "url"),
        (PurgePrefix("http://a.example/"), "prefix"),
        (PurgeTags(("t1", "t2")), "tag"),
        (PurgeAll(), "all"),
        (PurgeAll("a.example"), "all"),
    ],
)
def test_purge_kind(target: Target, kind: str) -> None:
    assert purge_kind(target) == kind


@given(st.text())
def test_method_label_is_bounded(method: str) -> None:
    assert method_label(method) in METHODS | {"other"}


@given(st.one_of(st.none(), st.integers()))
def test_status_label_is_bounded(status: int | None) -> None:
    label = status_label(status)
    assert label in {"error", "other"} or (label.isdigit() and 100 <= int(label) <= 599)


@given(st.text(), st.text(), st.integers(min_value=0, max_value=1 << 40))
def test_served_never_raises_and_counts_hostile_methods_as_other(
    method: str, route: str, nbytes: int
) -> None:
    m = Metrics()
    m.served(route, method, "miss", "origin", nbytes)
    got = samples(m.exposition(None))
    label = method if method in METHODS else "other"
    assert value(got, "edgeproxy_requests_total", route=route, method=label, cache="miss") == 1
    assert value(got, "edgeproxy_response_bytes_total", source="origin") == nbytes


async def test_served_counts_reach_the_counters_once_per_loop_turn() -> None:
    """On the loop, `served` counts in a dict and the counters take the sums
    when the turn ends (or at `flush`, which /metrics calls first)."""
    m = Metrics()
    hit = {"route": "site", "method": "GET", "cache": "hit"}
    for _ in range(5):
        m.served("site", "GET", "hit", "cache", 10)
    assert value(samples(m.exposition(None)), "edgeproxy_requests_total", **hit) == 0
    await asyncio.sleep(0)  # the turn ends
    got = samples(m.exposition(None))
    assert value(got, "edgeproxy_requests_total", **hit) == 5
    assert value(got, "edgeproxy_response_bytes_total", source="cache") == 50
    m.served("site", "GET", "hit", "cache", 0)
    m.flush()
    assert value(samples(m.exposition(None)), "edgeproxy_requests_total", **hit) == 6


async def test_origin_responses_reach_the_metrics_once_per_loop_turn() -> None:
    m = Metrics()
    for status in (200, 304, None):
        m.origin_response("default", status, 0.01)
    ok = {"origin": "default", "status": "200"}
    assert value(samples(m.exposition(None)), "edgeproxy_origin_requests_total", **ok) == 0
    await asyncio.sleep(0)  # the turn ends
    got = samples(m.exposition(None))
    assert value(got, "edgeproxy_origin_requests_total", **ok) == 1
    assert value(got, "edgeproxy_origin_requests_total", origin="default", status="error") == 1
    assert value(got, "edgeproxy_origin_duration_seconds_count", origin="default") == 3


# -- one process: a registry per app ----------------------------------------------


def test_each_metrics_has_its_own_registry() -> None:
    # The global registry would refuse the second set of names (Duplicated timeseries).
    a, b = Metrics(), Metrics()
    for _ in range(3):
        a.served("site", "GET", "hit", "cache", 10)
    b.served("site", "GET", "miss", "origin", 7)
    b.origin_response("default", 200, 0.02)
    b.origin_response("default", None, 1.5)
    got_a, got_b = samples(a.exposition(None)), samples(b.exposition(None))
    hit = {"route": "site", "method": "GET", "cache": "hit"}
    assert value(got_a, "edgeproxy_requests_total", **hit) == 3
    assert value(got_b, "edgeproxy_requests_total", **hit) == 0
    assert value(got_a, "edgeproxy_response_bytes_total", source="cache") == 30
    assert value(got_b, "edgeproxy_origin_requests_total", origin="default", status="200") == 1
    assert value(got_b, "edgeproxy_origin_requests_total", origin="default", status="error") == 1
    assert value(got_b, "edgeproxy_origin_duration_seconds_count", origin="default") == 2
    assert (
        value(got_b, "edgeproxy_origin_duration_seconds_bucket", origin="default", le="0.025") == 1
    )
    assert value(got_a, "edgeproxy_origin_duration_seconds_count", origin="default") == 0


def test_store_gauges_come_from_the_stats_given() -> None:
    m = Metrics()
    got = samples(m.exposition({"entries": 12, "bytes": 4096}))
    assert value(got, "edgeproxy_cache_entries") == 12
    assert value(got, "edgeproxy_cache_bytes") == 4096
    assert not any(name.startswith("edgeproxy_cache_") for name, _ in samples(m.exposition(None)))


def test_evictions_purges_and_reloads() -> None:
    m = Metrics()
    m.evicted(["k1", "k2"])
    m.purged(PurgeURL("http://a.example/x"), 3)
    m.purged(PurgeTags(("t",)), 0)
    m.reloaded(True)
    m.reloaded(False)
    got = samples(m.exposition(None))
    assert value(got, "edgeproxy_evictions_total") == 2
    assert value(got, "edgeproxy_purges_total", kind="url") == 1
    assert value(got, "edgeproxy_purges_total", kind="tag") == 1
    assert value(got, "edgeproxy_purged_entries_total") == 3
    assert value(got, "edgeproxy_reloads_total", result="ok") == 1
    assert value(got, "edgeproxy_reloads_total", result="error") == 1
    assert value(got, "edgeproxy_workers") == 1


def test_one_process_without_the_variable_is_not_multiprocess(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Set after the library chose its value class: this process is not a worker.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    assert Metrics.for_process().multiprocess_dir is None
    monkeypatch.delenv(MULTIPROC_ENV)
    assert Metrics.for_process().multiprocess_dir is None


# -- several processes: one directory, added up ----------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from edgeproxy.metrics import Metrics
    m = Metrics.for_process()
    assert m.multiprocess_dir is not None
    for _ in range(int(sys.argv[1])):
        m.served("site", "GET", "hit", "cache", 100)
    m.origin_response("default", 200, 0.01)
    m.evicted(["k"])
    """
)


def run_worker(directory: Path, requests: int) -> None:
    # The variable set before the library is imported: multiprocess mode from the start.
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    subprocess.run([sys.executable, "-c", WORKER, str(requests)], env=env, check=True, timeout=60)


def test_processes_add_up_and_a_dead_ones_counters_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_worker(tmp_path, 3)
    run_worker(tmp_path, 4)
    pids = sorted({p.stem.rsplit("_", 1)[1] for p in tmp_path.glob("*.db")})
    assert len(pids) == 2  # one set of files per process
    reader = Metrics(multiprocess_dir=str(tmp_path))
    got = samples(reader.exposition({"entries": 1, "bytes": 2}))
    hit = {"route": "site", "method": "GET", "cache": "hit"}
    assert value(got, "edgeproxy_requests_total", **hit) == 7
    assert value(got, "edgeproxy_response_bytes_total", source="cache") == 700
    assert value(got, "edgeproxy_origin_requests_total", origin="default", status="200") == 2
    assert value(got, "edgeproxy_origin_duration_seconds_count", origin="default") == 2
    assert value(got, "edgeproxy_evictions_total") == 2
    assert value(got, "edgeproxy_workers") == 2  # livesum: both still count as live
    assert value(got, "edgeproxy_cache_entries") == 1  # from the store, not summed
    # The supervisor marks one dead: its live gauge goes, its counters stay.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    mark_process_dead(int(pids[0]))
    got = samples(reader.exposition(None))
    assert value(got, "edgeproxy_workers") == 1
    assert value(got, "edgeproxy_requests_total", **hit) == 7
    assert value(got, "edgeproxy_evictions_total") == 2
