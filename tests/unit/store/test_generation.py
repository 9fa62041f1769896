"""The shared generation counter and its ring of records (store/generation.py).

Synchronous tests: Generation's blocking calls are the pool's business in
the store; here they are driven directly, from threads and processes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeproxy.store.generation import (
    ALL,
    HASH_MASK,
    HEADER,
    MAX_BATCH,
    RING,
    SIZE,
    Generation,
    key_hash,
)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "generation")


@pytest.fixture
def gen(path: str) -> Iterator[Generation]:
    g = Generation.open(path)
    yield g
    g.close()


def test_a_new_file_starts_at_zero_with_its_layout(gen: Generation, path: str) -> None:
    assert gen.current() == 0
    assert os.path.getsize(path) == SIZE
    assert gen.changes(0, 0) == []


def test_reopening_keeps_the_counter(path: str) -> None:
    first = Generation.open(path)
    first.publish([key_hash("http://a/")])
    first.close()
    again = Generation.open(path)
    try:
        assert again.current() == 1
    finally:
        again.close()


def test_a_file_of_another_layout_is_refused(path: str) -> None:
    with open(path, "wb") as f:
        f.write((0).to_bytes(8, sys.byteorder) + (RING + 1).to_bytes(8, sys.byteorder))
        f.truncate(SIZE + 8 * 8)
    with pytest.raises(OSError, match="another layout"):
        Generation.open(path)


def test_publish_appends_records_readers_see(gen: Generation, path: str) -> None:
    a, b = key_hash("http://a/"), key_hash("http://b/")
    assert gen.publish([a]) == 1
    assert gen.publish([b, a]) == 3
    assert gen.changes(0, 3) == [(1, a), (2, b), (3, a)]
    assert gen.changes(1, 3) == [(2, b), (3, a)]
    other = Generation.open(path)  # another worker's mapping of the same file
    try:
        assert other.current() == 3
        assert other.changes(0, 3) == gen.changes(0, 3)
        assert other.publish([b]) == 4
        assert gen.current() == 4
    finally:
        other.close()


@pytest.mark.parametrize(
    ("hashes", "records"),
    [
        ([], []),
        ([5, 5, 6], [5, 6]),  # one record per distinct key
        ([5, ALL], [ALL]),
        (list(range(1, MAX_BATCH + 1)), list(range(1, MAX_BATCH + 1))),
        (list(range(1, MAX_BATCH + 2)), [ALL]),  # too many: "everything" instead
    ],
    ids=["nothing", "duplicates", "with-all", "max-batch", "past-max-batch"],
)
def test_publish_batches(gen: Generation, hashes: list[int], records: list[int]) -> None:
    last = gen.publish(hashes)
    assert last == gen.current() == len(records)
    changes = gen.changes(0, last)
    assert changes is not None
    assert [h for _, h in changes] == records


def test_a_reader_a_whole_ring_behind_learns_nothing_but_that(gen: Generation) -> None:
    h = key_hash("http://a/")
    for _ in range(RING + 1):
        gen.publish([h])
    now = gen.current()
    assert gen.changes(0, now) is None  # record 1's slot holds record RING + 1
    assert gen.changes(now - 10, now) == [(g, h) for g in range(now - 9, now + 1)]


def test_a_slot_not_yet_visible_reads_as_unknown(gen: Generation) -> None:
    gen.publish([key_hash("http://a/")])
    # The counter moved but the slot still holds what it held a lap ago
    # (as a CPU that reordered the stores could show it): not trusted.
    gen._words[0] = 2
    assert gen.changes(0, 2) is None
    assert gen.changes(0, 1) is not None


def test_a_torn_or_backward_range_is_unknown(gen: Generation) -> None:
    gen.publish([1, 2, 3])
    assert gen.changes(3, 1) is None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("http://a.example/p", "http://a.example/p", True),
        ("http://a.example/p", "http://a.example/p#lang=fr", True),  # URL purges take extras
        ("http://a.example/p#x", "http://a.example/p#y", True),
        ("http://a.example/p", "http://a.example/q", False),
        ("http://a.example/p", "https://a.example/p", False),
    ],
)
def test_key_hash_groups_a_url_with_its_extras(a: str, b: str, same: bool) -> None:
    assert (key_hash(a) == key_hash(b)) == same
    assert key_hash(a) != ALL
    assert 0 < key_hash(a) <= HASH_MASK


def test_key_hash_takes_any_text() -> None:
    assert key_hash("http://a/\udcff") != ALL  # a lone surrogate (from a raw target)


def test_threads_never_lose_a_record(gen: Generation) -> None:
    per_thread = 300
    threads = [
        threading.Thread(target=lambda i=i: [gen.publish([i + 1]) for _ in range(per_thread)])
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert gen.current() == 4 * per_thread
    changes = gen.changes(gen.current() - 100, gen.current())
    assert changes is not None and {h for _, h in changes} <= {1, 2, 3, 4}


def test_held_takes_the_file_lock_once_for_its_publishes(
    gen: Generation, flocks: list[int]
) -> None:
    with gen.held():
        assert gen.publish([5]) == 1
        assert gen.publish([6, 7]) == 3
    assert flocks == [fcntl.LOCK_EX, fcntl.LOCK_UN]
    assert gen.changes(0, 3) == [(1, 5), (2, 6), (3, 7)]
    assert gen.publish([8]) == 4  # outside: its own lock again
    assert flocks == [fcntl.LOCK_EX, fcntl.LOCK_UN] * 2


def test_a_hold_keeps_other_threads_publishes_until_it_ends(gen: Generation) -> None:
    theirs: list[int] = []
    other = threading.Thread(target=lambda: theirs.append(gen.publish([9])))
    with gen.held():
        other.start()
        other.join(timeout=0.2)  # it waits for the hold, never gets in
        assert theirs == []
        assert gen.publish([8]) == 1
    other.join(timeout=10)
    assert theirs == [2]
    assert gen.changes(0, 2) == [(1, 8), (2, 9)]


def test_a_hold_whose_file_lock_fails_lets_each_publish_report(
    gen: Generation, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with gen.held(), pytest.raises(OSError):
        gen.publish([5])
    monkeypatch.undo()
    assert gen.publish([6]) == 1  # nothing left held


CHILD = """
import sys
from edgeproxy.store.generation import Generation
g = Generation.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # all start together, so their publishes interleave
for _ in range(int(sys.argv[2])):
    g.publish([int(sys.argv[3])])
g.close()
"""


def test_processes_never_lose_a_record(gen: Generation, path: str) -> None:
    # flock serialises the workers' read-increment-write of the counter.
    n = 20_000
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, path, str(n), str(h)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for h in (7, 9)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        child.communicate(timeout=60)
        assert child.returncode == 0
    assert gen.current() == 2 * n
    words = gen._words
    assert all(int(words[HEADER + g % RING]) & HASH_MASK in (7, 9) for g in range(RING))
