"""The purge generation counter: how worker processes' hot tiers learn of writes.

Every worker keeps its own in-memory hot tier (store/memory.py) over the one
disk store they share. A worker that changes the disk (purge, delete, update,
commit, an eviction its commit caused) publishes a *record* here after its
disk transaction committed; every other worker compares the counter it last
saw with the current one on each lookup (one 8-byte memory read) and, when
it moved, drops what the new records name. So a purge is invisible in every
worker's hot tier as soon as `publish` returns, before the admin call does.

The file `<cache dir>/generation` is memory-mapped (MAP_SHARED), an array
of native 64-bit words:

    word 0      the counter: how many records were ever published
    word 1      RING, the layout check
    words 8..   a ring of RING records; record g sits in slot g % RING

A record is one word: the low 24 bits of its own number (a tag) above a
40-bit hash of the primary key it concerns, or hash ALL (0): "anything may
have changed". A reader checks each slot's tag against the record number it
expects: a slot already overwritten by a later lap, or not yet visible to
this CPU, fails the check and reads as ALL. So readers take no lock, a
reader that fell a whole ring behind just clears its tier, and no ordering
between the slot and the counter stores is assumed.

Each word is read and written whole: memoryview's native "Q" items are one
aligned 8-byte load or store (CPython copies them with a fixed-size memcpy),
which is atomic on the 64-bit platforms we run on; nothing reads a word
byte by byte. Writers serialise on flock(2) (other processes) and a thread
lock (the pool threads of this one), so the counter never loses a record.

Hashes compare keys up to their first "#": a URL purge also covers the URL's
`key#extras` keys (cachekey.key_extras), and hashing the part before "#"
keeps them in one bucket. Collisions, like unknown slots, only make a tier
drop more than it had to: never less.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
from collections.abc import Iterable

RING = 4096  # records a reader may lag behind before it must clear everything
HEADER = 8  # words before the ring
WORDS = HEADER + RING
SIZE = WORDS * 8
MAX_BATCH = 64  # more keys than this in one publish become one ALL record

ALL = 0  # the hash meaning "every key"
HASH_BITS = 40
HASH_MASK = (1 << HASH_BITS) - 1
TAG_MASK = (1 << (64 - HASH_BITS)) - 1


def key_hash(key: str) -> int:
    """The record hash of a primary key (of its part before '#'); never ALL."""
    base = key.split("#", 1)[0]
    digest = hashlib.blake2b(base.encode("utf-8", "surrogatepass"), digest_size=5).digest()
    return int.from_bytes(digest, "little") or 1


class Generation:
    """One process's handle on the shared counter and its ring of records.

    `open`, `publish` and `close` block (file I/O, flock): call them off the
    event loop. `current` and `changes` only read memory.
    """

    def __init__(self, path: str, fd: int, mm: mmap.mmap) -> None:
        self.path = path
        self._fd = fd
        self._pid = os.getpid()
        self._mm = mm
        self._raw = memoryview(mm)
        # The file as native words; words[0] is the counter. Readers on a hot
        # path may index it directly (one load); only `publish` writes.
        self.words = self._words = self._raw.cast("Q")
        # Reentrant: `held` keeps it (and the file lock) across publishes.
        self._lock = threading.RLock()
        self._holding = False  # the file lock is held by `held`'s thread

    @classmethod
    def open(cls, path: str) -> Generation:
        """Map `path`, creating it (zeroed: counter 0) if it does not exist."""
        fd = _open_locked(path)
        try:
            mm = mmap.mmap(fd, SIZE)
        except BaseException:
            os.close(fd)
            raise
        gen = cls(path, fd, mm)
        ring = int(gen._words[1])
        if ring != RING:
            gen.close()
            raise OSError(f"{path}: generation file of another layout (ring {ring})")
        return gen

    def current(self) -> int:
        """The counter: the number of the latest published record."""
        return int(self._words[0])

    def changes(self, after: int, upto: int) -> list[tuple[int, int]] | None:
        """(number, hash) of records after..upto; None if any is unknown
        (overwritten by a later lap, or not yet visible): then assume ALL."""
        if upto < after or upto - after >= RING:
            return None
        words = self._words
        out: list[tuple[int, int]] = []
        for g in range(after + 1, upto + 1):
            word = int(words[HEADER + g % RING])
            if word >> HASH_BITS != g & TAG_MASK:
                return None
            out.append((g, word & HASH_MASK))
        return out

    def publish(self, hashes: Iterable[int]) -> int:
        """Append one record per hash (ALL if there are many); returns the
        number of the last one. Call it after the disk change committed."""
        batch = list(dict.fromkeys(hashes))
        if len(batch) > MAX_BATCH or ALL in batch:
            batch = [ALL]
        if not batch:
            return self.current()
        with self._lock:
            if self._holding:
                return self._append(batch)
            fd = self._lock_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                return self._append(batch)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def held(self) -> Held:
        """A context in which this thread's publishes take the file lock once
        for all (a store's batch of commits publishes one record each)."""
        return Held(self)

    def _append(self, batch: list[int]) -> int:
        """Write the records; the caller holds both locks."""
        words = self._words
        g = int(words[0])
        for h in batch:
            g += 1
            words[HEADER + g % RING] = (g & TAG_MASK) << HASH_BITS | (h & HASH_MASK)
        words[0] = g  # readers look at the slots only up to here
        return g

    def _lock_fd(self) -> int:
        # A forked child shares the parent's open file, and flock would not
        # exclude the two: it takes a lock of its own.
        if self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        self._words.release()
        self._raw.release()
        self._mm.close()
        os.close(self._fd)


class Held:
    """`Generation.held`: the thread lock and the file lock, taken once. If
    the file lock can't be taken (an OSError), each publish inside tries on
    its own and reports it, as outside."""

    __slots__ = ("_fd", "_gen")

    def __init__(self, gen: Generation) -> None:
        self._gen = gen
        self._fd = -1

    def __enter__(self) -> None:
        gen = self._gen
        gen._lock.acquire()
        try:
            fd = gen._lock_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            return
        except BaseException:
            gen._lock.release()
            raise
        self._fd = fd
        gen._holding = True

    def __exit__(self, *exc: object) -> None:
        gen = self._gen
        try:
            fd, self._fd = self._fd, -1
            if fd >= 0:
                gen._holding = False
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            gen._lock.release()


def _open_locked(path: str) -> int:
    """Open (creating) the file and size it under flock, so racing workers
    agree: the first one zeroes it and writes the layout word."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_size == 0:
                os.pwrite(fd, struct.pack("=QQ", 0, RING), 0)  # native, as mapped
                os.ftruncate(fd, SIZE)
            # Allocate every page now (also those of a file left sparse): a
            # store into a hole of the mapping on a full disk is SIGBUS, a
            # crash; here it is an OSError the caller survives.
            os.posix_fallocate(fd, 0, SIZE)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    except BaseException:
        os.close(fd)
        raise
    return fd
