"""gctune: the proxy's collector settings (measured in docs/benchmarks.md Run 10)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from edgeproxy.gctune import OLDER_THRESHOLDS, YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_tune_gc_freezes_what_exists_and_raises_the_thresholds(restored_gc: None) -> None:
    kept = [object() for _ in range(10)]  # noqa: F841 (alive across the freeze)
    assert gc.get_freeze_count() == 0
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


def test_cycles_made_after_are_still_collected(restored_gc: None) -> None:
    tune_gc()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: no refcount frees it
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
