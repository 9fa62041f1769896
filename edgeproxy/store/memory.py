"""The hot tier's memory: one process's LRU of primary keys, bounded in bytes.

Per primary key it keeps what `lookup` answered (the variant list, oldest
first, as the disk store lists them) and the bodies of those variants up to
`max_object` bytes, each as the one frozen `Body(size, data=bytes)` every
hit returns (no copy, no allocation). Either may be
missing: a commit leaves the body and no list (the list changed under it),
a variant above `max_object` keeps its list and no body.

It never decides what is valid: store/tiered.py drops a key whenever the
generation records (store/generation.py) say it may have changed, and only
puts in what it read from disk, or committed there, since the last change.
Pure data structure: no I/O, no clock, no locks (used from the event loop).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from edgeproxy.policy.entry import Entry
from edgeproxy.store.base import Body

T = TypeVar("T")

# What the tier charges against max_bytes: what Python really holds, not only
# the bodies' and fields' bytes. Calibrated with tracemalloc through a real
# proxy (tests/e2e/test_hot_tier_memory.py holds the charge to the memory a
# cleared tier gives back): the key's own slot (_Hot, the LRU and hash-index
# entries, the key), each kept body (Body, the bytes object), each listed
# variant (Entry, its memoised parses) and its field lines (multidict items
# and strings), and once a hit built them (`prebuilt`), a variant's head
# templates with their copy of each field line. Charging 512 bytes a variant
# and nothing else let a 64 MiB tier of 1 KiB objects hold ~250 MiB.
KEY_OVERHEAD = 850
BODY_OVERHEAD = 200
ENTRY_OVERHEAD = 300
FIELD_OVERHEAD = 220
BUILT_OVERHEAD = 2050
BUILT_FIELD_OVERHEAD = 90


@dataclass(slots=True)
class _Hot:
    key_hash: int
    entries: list[Entry] | None = field(default=None, init=False)
    bodies: dict[str, Body] = field(default_factory=dict, init=False)
    nbytes: int = field(default=0, init=False)
    meta_bytes: int = field(default=0, init=False)
    built: dict[str, tuple[object, object, Entry]] = field(default_factory=dict, init=False)
    built_bytes: int = field(default=0, init=False)
    # Variants whose listed entry is newer than the disk's copy (a refresh
    # kept in memory only): the response_time of the copy the disk holds.
    unwritten: dict[str, float] | None = field(default=None, init=False)

    def __init__(self, key_hash: int) -> None:
        # Written out: compiled, a dataclass's generated __init__ still runs
        # as plain Python (edgeproxy/frozen.py); one is made per key admitted.
        self.key_hash = key_hash
        self.entries = None
        self.bodies = {}
        self.nbytes = 0
        self.meta_bytes = 0
        self.built = {}
        self.built_bytes = 0
        self.unwritten = None


def metadata_size(key: str, entries: list[Entry]) -> int:
    """What a variant list costs in memory, roughly (charged to max_bytes)."""
    n = len(key)
    for e in entries:
        count, chars = e.field_lines
        n += ENTRY_OVERHEAD + FIELD_OVERHEAD * count + chars
    return n


def built_size(entry: Entry) -> int:
    """What the head templates a hit builds from `entry` cost, roughly."""
    count, chars = entry.field_lines
    return BUILT_OVERHEAD + BUILT_FIELD_OVERHEAD * count + chars


def key_charge(meta_bytes: int, body_sizes: Iterable[int]) -> int:
    """A key's whole charge: its slot, its variants' metadata, its bodies."""
    return KEY_OVERHEAD + meta_bytes + sum(BODY_OVERHEAD + size for size in body_sizes)


class MemoryTier:
    def __init__(self, max_bytes: int, max_object: int) -> None:
        self.max_bytes = max_bytes
        self.max_object = max_object
        self.nbytes = 0
        self.nbodies = 0
        self._keys: OrderedDict[str, _Hot] = OrderedDict()
        self._by_hash: dict[int, set[str]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    # -- reads (the hit path: dict lookups only) ---------------------------

    def entries(self, key: str) -> list[Entry] | None:
        """The key's variant list (a new list), or None: ask the disk."""
        hot = self._keys.get(key)
        if hot is None or hot.entries is None:
            return None
        self._keys.move_to_end(key)
        return list(hot.entries)

    def listed(self, key: str) -> list[Entry] | None:
        """The key's variant list as held (a copy), without touching its recency."""
        hot = self._keys.get(key)
        return None if hot is None or hot.entries is None else list(hot.entries)

    def body(self, key: str, variant: str) -> Body | None:
        hot = self._keys.get(key)
        return None if hot is None else hot.bodies.get(variant)

    def prebuilt(self, entry: Entry, build: Callable[[Entry], T]) -> T:
        """`build(entry)`, kept with the hot copy of this very entry.

        For per-variant work a hit would otherwise redo (header blocks):
        it lives as long as the key's list and goes with it on any change.
        An entry that is not the listed one (say, freshly merged after a
        304) is built every time.
        """
        hot = self._keys.get(entry.key)
        if hot is None or hot.entries is None:
            return build(entry)
        got = hot.built.get(entry.variant)
        # Kept for this very entry: it is still listed (a change of the list
        # clears `built`), so no need to look for it in the list again.
        if got is not None and got[0] is build and got[2] is entry:
            return cast(T, got[1])
        if not any(e is entry for e in hot.entries):
            return build(entry)
        value = build(entry)
        if hot.built.get(entry.variant) is None:
            hot.built_bytes += built_size(entry)  # one build kept a variant
        hot.built[entry.variant] = (build, value, entry)
        self._account(entry.key, hot)
        return value

    # -- writes -------------------------------------------------------------

    def put_entries(
        self,
        key: str,
        key_hash: int,
        entries: list[Entry],
        unwritten: dict[str, float] | None = None,
    ) -> None:
        """Keep the key's variant list; bodies of variants no longer listed go.
        `unwritten`: of these, the entries newer than the disk's copies, as
        `unwritten_of` gave them (None: the disk holds them all as they are)."""
        hot = self._hot(key, key_hash)
        hot.entries = list(entries)
        listed = {e.variant for e in entries}
        for variant in [v for v in hot.bodies if v not in listed]:
            del hot.bodies[variant]
            self.nbodies -= 1
        hot.built.clear()
        hot.built_bytes = 0
        kept = {v: t for v, t in (unwritten or {}).items() if v in listed}
        hot.unwritten = kept or None
        hot.meta_bytes = metadata_size(key, hot.entries)
        self._account(key, hot)

    def held(self, key: str, variant: str) -> tuple[Entry, float] | None:
        """The listed entry of `variant`, and the response_time of the copy
        the disk holds (older than the entry's after `refresh(on_disk=...)`);
        None if the key or that variant is not listed."""
        hot = self._keys.get(key)
        if hot is None or hot.entries is None:
            return None
        for e in hot.entries:
            if e.variant == variant:
                unwritten = hot.unwritten
                on_disk = None if unwritten is None else unwritten.get(variant)
                return e, e.response_time if on_disk is None else on_disk
        return None

    def unwritten_of(self, key: str) -> dict[str, float] | None:
        """A copy of the key's variants newer than the disk's (`held`)."""
        hot = self._keys.get(key)
        return None if hot is None or hot.unwritten is None else dict(hot.unwritten)

    def refresh(self, key: str, entry: Entry, on_disk: float | None = None) -> bool:
        """Replace the listed entry of `entry`'s variant (a 304 freshened it),
        keeping its body; False if the key or that variant is not listed.
        `on_disk`: the disk was not written, and its copy's response_time is
        this (`held`); None: the disk holds `entry` itself."""
        hot = self._keys.get(key)
        if hot is None or hot.entries is None:
            return False
        entries = hot.entries  # our own list: readers get copies (`entries`)
        for i, e in enumerate(entries):
            if e.variant == entry.variant:
                entries[i] = entry
                break
        else:
            return False
        if on_disk is not None:
            if hot.unwritten is None:
                hot.unwritten = {}
            hot.unwritten[entry.variant] = on_disk
        elif hot.unwritten is not None:
            hot.unwritten.pop(entry.variant, None)
        built = hot.built.pop(entry.variant, None)  # built from the old entry
        if built is not None:
            hot.built_bytes -= built_size(built[2])
        hot.meta_bytes = metadata_size(key, entries)
        self._account(key, hot)
        return True

    def put_body(self, key: str, key_hash: int, variant: str, data: bytes) -> Body | None:
        """Keep one variant's body if it is small enough; the kept Body, or None."""
        if len(data) > self.max_object:
            return None
        known = self._keys.get(key)
        listed = None if known is None else known.entries
        if listed is not None and not any(e.variant == variant for e in listed):
            return None  # not a variant of the list we hold
        hot = self._hot(key, key_hash)
        if variant not in hot.bodies:
            self.nbodies += 1
        body = hot.bodies[variant] = Body(len(data), data=data)
        self._account(key, hot)
        return body if key in self._keys else None

    def drop_key(self, key: str) -> None:
        hot = self._keys.pop(key, None)
        if hot is not None:
            self._forget(key, hot)

    def drop_hash(self, key_hash: int) -> None:
        """Every key with this record hash (store/generation.py)."""
        for key in list(self._by_hash.get(key_hash, ())):
            self.drop_key(key)

    def clear(self) -> None:
        self._keys.clear()
        self._by_hash.clear()
        self.nbytes = 0
        self.nbodies = 0

    # -- internals ----------------------------------------------------------

    def _hot(self, key: str, key_hash: int) -> _Hot:
        hot = self._keys.get(key)
        if hot is None:
            hot = self._keys[key] = _Hot(key_hash)
            self._by_hash.setdefault(key_hash, set()).add(key)
        return hot

    def _account(self, key: str, hot: _Hot) -> None:
        """Recharge `hot`, mark it most recent, evict least recent past the bound."""
        size = key_charge(hot.meta_bytes + hot.built_bytes, (b.size for b in hot.bodies.values()))
        self.nbytes += size - hot.nbytes
        hot.nbytes = size
        self._keys.move_to_end(key)
        while self.nbytes > self.max_bytes and self._keys:  # bounded: each turn drops a key
            old, gone = self._keys.popitem(last=False)
            self._forget(old, gone)

    def _forget(self, key: str, hot: _Hot) -> None:
        self.nbytes -= hot.nbytes
        self.nbodies -= len(hot.bodies)
        keys = self._by_hash.get(hot.key_hash)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_hash[hot.key_hash]
