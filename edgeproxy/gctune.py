"""The cyclic garbage collector, set for a long-running proxy.

Measured side by side (two proxies on one core at once, wrk each, CPU per
request of each process, docs/benchmarks.md Run 10):

- CPython's first threshold (700) runs a young collection every 700 net
  allocations, and a request makes hundreds: with 20,000, a miss costs 11%
  less CPU and its p99 fell from 164-202 ms to 70-81 ms; a revalidation 3-6%
  less. 5,000 did as well within 2%. Garbage in cycles still goes, only a
  little later; everything else is freed by its refcount as before.
- The ~56,000 objects made at start (modules, config, the app) live as long
  as the process. Frozen (`gc.freeze`), no full collection walks them: a
  full collection under miss load took 22 ms instead of 92 ms. What of it
  goes later (the first config, after a reload) is still freed by its
  refcount; only a cycle among it would stay, once. Resources must not wait
  for the collector: the store closes its SQLite connections itself
  (DiskStore._close_connection).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLDS = (20, 20)  # collections of the generation below, as CPython counts


def tune_gc() -> None:
    """Freeze what exists now and raise the thresholds: call once the
    proxy is up (in each worker), before it serves."""
    gc.collect()  # what start-up left as garbage goes now, not frozen
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
