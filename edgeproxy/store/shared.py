"""SharedTierStore: a shared Redis tier (an origin shield) behind an edge's own store.

A Store wrapper (as store/tiered.py is): everything goes to the edge's own
store (`inner`), plus:

- `lookup` that finds nothing locally asks Redis, within `timeout` (past
  it, or on any Redis error, a miss: fail open). What Redis has is copied
  into the local store through a normal writer and commit, so the local
  store's bans decide: a shared copy fetched before a purge this edge has
  applied is refused (`Banned`), dropped from Redis too, and is a miss.
- `commit` also writes the body and metadata to Redis, in the background
  (serving never awaits Redis), if the body is at most `max_object` bytes,
  with a PEXPIRE of the entry's freshness plus retention
  (policy.stale.keep_until: the stale-while-revalidate / stale-if-error
  windows and grace). Soft-purged entries are not shared.
- `purge`, `delete` and `delete_variant` remove from Redis as well. A soft
  purge removes the shared copies (the shared tier keeps no stale entries);
  the local store marks its own copies as usual.

Redis layout under `<ns>:sh:` (one Lua script per operation, so each is
atomic): `v:<sha1(member)>` a hash {meta, body} with the expiry; `i` a
sorted set (all scores 0) of members `<key>\\0<vary id>`, read by lex range
for a key's variants and for prefix, URL and host purges; `t:<tag>` a set
of members per surrogate tag, for tag purges. Index members whose hash
expired are dropped as lookups and purges meet them; tag sets expire with
their longest-lived member. Not Redis Cluster compatible (scripts touch
keys they compute).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from edgeproxy import jsontext
from edgeproxy.policy.entry import CorruptEntry, Entry, entry_from_dict
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.policy.stale import keep_until
from edgeproxy.purge import Purge, PurgeAll, PurgePrefix, PurgeTags, PurgeURL, host_prefixes
from edgeproxy.store.base import Banned, Body, BodyWriter, CopyingWriter, Store, StoreError

log = logging.getLogger("edgeproxy.store")

MAX_TTL = 30 * 86400.0  # seconds; Redis keeps nothing longer
MAX_PENDING = 64  # background writes in flight; past this a write is skipped
MAX_VARIANTS = 32  # per key read back from Redis (as DiskStore keeps)
PURGE_BATCH = 500  # index members per purge script call
PURGE_TIMEOUT = 5.0  # a shared purge's budget; the local one already happened

# KEYS: index. ARGV: lo, hi, vkey prefix, limit. Returns meta, body, meta, body...
LOOKUP_LUA = """
local out = {}
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
for _, m in ipairs(members) do
  local v = redis.call('HMGET', ARGV[3] .. redis.sha1hex(m), 'meta', 'body')
  if v[1] then
    out[#out + 1] = v[1]
    out[#out + 1] = v[2]
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
return out
"""

# KEYS: index, variant hash, tag sets. ARGV: member, meta, body, ttl ms.
WRITE_LUA = """
redis.call('HSET', KEYS[2], 'meta', ARGV[2], 'body', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[1], 0, ARGV[1])
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[1])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[4])
  end
end
return 1
"""

# KEYS: index. ARGV: lo, hi, vkey prefix, batch. Removes one batch of the range.
PURGE_RANGE_LUA = """
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
for _, m in ipairs(members) do
  redis.call('DEL', ARGV[3] .. redis.sha1hex(m))
  redis.call('ZREM', KEYS[1], m)
end
return #members
"""

# KEYS: index, tag set. ARGV: vkey prefix, batch. Removes one batch of the tag's members.
PURGE_TAG_LUA = """
local members = redis.call('SPOP', KEYS[2], tonumber(ARGV[2]))
for _, m in ipairs(members) do
  redis.call('DEL', ARGV[1] .. redis.sha1hex(m))
  redis.call('ZREM', KEYS[1], m)
end
return #members
"""


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def vary_id(entry: Entry) -> str:
    """What a new response replaces (RFC 9111 section 4.1): same Vary names and values."""
    ident = jsontext.dumps_exact([list(entry.vary), list(entry.secondary)])
    return hashlib.sha1(_b(ident)).hexdigest()


def member(key: str, vid: str) -> bytes:
    return _b(key) + b"\x00" + vid.encode("ascii")


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """ZRANGEBYLEX bounds of the members starting with `prefix`: UTF-8 and
    the NUL separator never hold 0xFF, so `prefix + 0xFF` is above them all."""
    return b"[" + prefix, b"(" + prefix + b"\xff"


def purge_ranges(purge: Purge) -> list[tuple[bytes, bytes]]:
    """The index ranges a non-tag purge covers (purge.matches, on members)."""
    match purge.target:
        case PurgeURL(url=url):
            return [prefix_range(_b(url) + b"\x00"), prefix_range(_b(url + "#"))]
        case PurgePrefix(prefix=prefix):
            return [prefix_range(_b(prefix))]
        case PurgeAll(host=None):
            return [(b"-", b"+")]
        case PurgeAll(host=str(host)):
            return [prefix_range(_b(p)) for p in host_prefixes(host)]
        case _:
            return []


def shared_ttl(entry: Entry, policy: CachePolicy, now: float) -> float:
    """Seconds Redis keeps `entry`: until it is worth nothing (freshness plus
    retention, policy.stale.keep_until), capped at MAX_TTL; <= 0: don't share."""
    left = keep_until(entry, policy) - now
    if math.isnan(left):
        return 0.0
    return min(left, MAX_TTL)


class SharedTier:
    """The Redis side: scripts and key names; every call may raise RedisError."""

    def __init__(self, client: redis.Redis, namespace: str, timeout: float) -> None:
        self.redis = client
        self.timeout = timeout
        self.base = f"{namespace}:sh:"
        self.index = self.base + "i"
        self.vprefix = self.base + "v:"
        self._lookup = client.register_script(LOOKUP_LUA)
        self._write = client.register_script(WRITE_LUA)
        self._purge_range = client.register_script(PURGE_RANGE_LUA)
        self._purge_tag = client.register_script(PURGE_TAG_LUA)

    def vkey(self, m: bytes) -> str:
        return self.vprefix + hashlib.sha1(m).hexdigest()

    def tag_key(self, tag: str) -> str:
        return self.base + "t:" + tag

    async def variants(self, key: str) -> list[tuple[bytes, bytes]]:
        lo, hi = prefix_range(_b(key) + b"\x00")
        flat = await self._lookup(keys=[self.index], args=[lo, hi, self.vprefix, MAX_VARIANTS])
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]

    async def write(self, entry: Entry, body: bytes, ttl: float) -> None:
        m = member(entry.key, vary_id(entry))
        meta = jsontext.dumps(entry.to_dict())
        keys = [self.index, self.vkey(m), *(self.tag_key(t) for t in dict.fromkeys(entry.tags))]
        await self._write(keys=keys, args=[m, meta, body, max(1, int(ttl * 1000))])

    async def remove_range(self, lo: bytes, hi: bytes) -> int:
        total = 0
        while True:  # bounded: each call removes what it returns from the range
            n = int(
                await self._purge_range(keys=[self.index], args=[lo, hi, self.vprefix, PURGE_BATCH])
            )
            total += n
            if n < PURGE_BATCH:
                return total

    async def remove_tag(self, tag: str) -> int:
        total = 0
        while True:  # bounded: SPOP empties the set
            n = int(
                await self._purge_tag(
                    keys=[self.index, self.tag_key(tag)], args=[self.vprefix, PURGE_BATCH]
                )
            )
            total += n
            if n < PURGE_BATCH:
                return total

    async def purge(self, purge: Purge) -> int:
        total = 0
        if isinstance(purge.target, PurgeTags):
            for tag in dict.fromkeys(purge.target.tags):
                total += await self.remove_tag(tag)
            return total
        for lo, hi in purge_ranges(purge):
            total += await self.remove_range(lo, hi)
        if isinstance(purge.target, PurgeAll) and purge.target.host is None:
            # Tag sets name only members that are gone now.
            async for k in self.redis.scan_iter(match=self.base + "t:*", count=500):
                await self.redis.delete(k)
        return total


class SharedTierStore:
    """The Store protocol over `inner`, with a Redis tier behind it (module docstring)."""

    def __init__(
        self,
        inner: Store,
        tier: SharedTier,
        *,
        max_object: int,
        clock: Callable[[], float],
        policy_for: Callable[[Entry], CachePolicy],
    ) -> None:
        self.inner = inner
        self.tier = tier
        self.max_object = max_object
        self._clock = clock
        self._policy_for = policy_for
        self._tasks: set[asyncio.Task[None]] = set()
        self._writing = True
        self.counters: dict[str, int] = dict.fromkeys(
            ("shared_hits", "shared_misses", "shared_errors", "shared_writes", "shared_skipped"), 0
        )

    # -- reads ------------------------------------------------------------------

    async def lookup(self, key: str) -> list[Entry]:
        found = await self.inner.lookup(key)
        if found:
            return found
        try:
            shared = await asyncio.wait_for(self.tier.variants(key), self.tier.timeout)
        except (RedisError, OSError, TimeoutError) as e:
            self.counters["shared_errors"] += 1
            log.debug("shared tier lookup of %s failed (a miss): %s", key, e)
            return []
        copied: list[Entry] = []
        for meta, body in shared:
            entry = await self._copy_in(key, meta, body)
            if entry is not None:
                copied.append(entry)
        self.counters["shared_hits" if copied else "shared_misses"] += 1
        return copied

    async def _copy_in(self, key: str, meta: bytes, body: bytes) -> Entry | None:
        """A shared variant into the local store; None if unreadable or banned here."""
        try:
            entry = entry_from_dict(jsontext.loads(meta))
        except (ValueError, RecursionError, CorruptEntry) as e:
            log.warning("shared tier: unreadable entry for %s dropped: %s", key, e)
            self._spawn(self._forget(key, None), "shared tier drop")
            return None
        if entry.key != key or len(body) != entry.body_size or entry.soft_purged:
            self._spawn(self._forget(key, entry), "shared tier drop")
            return None
        writer = self.inner.open_writer(key)
        try:
            await writer.write(body)
            return await writer.commit(entry.with_changes(variant=""))
        except Banned:
            # Fetched before a purge this edge applied: dead everywhere.
            self._spawn(self._forget(key, entry), "shared tier drop")
            return None
        except StoreError as e:
            log.warning("shared tier: keeping %s locally failed: %s", key, e)
            await writer.abort()
            return None

    async def _forget(self, key: str, entry: Entry | None) -> None:
        if entry is None:
            lo, hi = prefix_range(_b(key) + b"\x00")
        else:
            m = member(key, vary_id(entry))
            lo, hi = b"[" + m, b"[" + m
        await self.tier.remove_range(lo, hi)

    async def open_body(self, entry: Entry) -> Body | None:
        return await self.inner.open_body(entry)

    def read_body(self, body: Body, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        return self.inner.read_body(body, chunk_size)

    async def entries(
        self, prefix: str = "", tag: str | None = None, limit: int = 100
    ) -> list[Entry]:
        return await self.inner.entries(prefix, tag, limit)

    async def stats(self) -> dict[str, int]:
        return {**await self.inner.stats(), **self.counters}

    def shared_stats(self) -> dict[str, int]:
        return dict(self.counters)

    # -- writes ---------------------------------------------------------------

    def open_writer(self, key: str) -> SharedWriter:
        return SharedWriter(self, self.inner.open_writer(key))

    def _share(self, entry: Entry, body: bytes) -> None:
        if entry.soft_purged:
            return
        ttl = shared_ttl(entry, self._policy_for(entry), self._clock())
        if ttl <= 0:
            return
        self._spawn(self._write(entry, body, ttl), "shared tier write")

    async def _write(self, entry: Entry, body: bytes, ttl: float) -> None:
        await self.tier.write(entry, body, ttl)
        self.counters["shared_writes"] += 1

    async def update(self, entry: Entry) -> bool:
        return await self.inner.update(entry)

    async def delete(self, key: str) -> int:
        count = await self.inner.delete(key)
        # RFC 9111 section 4.4 invalidation: no edge should hit the old copy.
        self._spawn(self._remove(Purge(PurgeURL(key))), "shared tier delete")
        return count

    async def delete_variant(self, entry: Entry) -> None:
        await self.inner.delete_variant(entry)
        self._spawn(self._forget(entry.key, entry), "shared tier delete")

    async def purge(self, purge: Purge) -> int:
        count = await self.inner.purge(purge)
        if not purge.dry_run:
            # Awaited (bounded): once the purge answers, the shared tier is clean
            # too, unless Redis is down (the local bans still refuse old copies).
            try:
                await asyncio.wait_for(self.tier.purge(purge), PURGE_TIMEOUT)
            except (RedisError, OSError, TimeoutError) as e:
                self.counters["shared_errors"] += 1
                log.warning("shared tier: purge %s not applied there: %s", purge.target, e)
        return count

    async def _remove(self, purge: Purge) -> None:
        await self.tier.purge(purge)

    def _spawn(self, coro: Any, what: str) -> None:
        if not self._writing or len(self._tasks) >= MAX_PENDING:
            coro.close()
            self.counters["shared_skipped"] += 1
            return
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            self.counters["shared_errors"] += 1
            log.warning("%s failed: %s", task.get_name(), e)

    async def drain(self) -> None:
        """Wait for the background Redis writes now in flight (tests, shutdown)."""
        while self._tasks:
            pending = list(self._tasks)
            await asyncio.gather(*pending, return_exceptions=True)
            self._tasks.difference_update(pending)

    async def stop_writes(self) -> None:
        self._writing = False
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()

    async def close(self) -> None:
        await self.stop_writes()
        await self.inner.close()


class SharedWriter(CopyingWriter):
    """The local writer, plus a copy of the body while it fits `max_object`."""

    def __init__(self, store: SharedTierStore, inner: BodyWriter) -> None:
        super().__init__(inner, store.max_object)
        self._store = store

    async def commit(self, entry: Entry) -> Entry:
        chunks = self._copy.take()
        stored = await self._inner.commit(entry)  # Banned / StoreError: nothing shared
        if chunks is not None:
            self._store._share(stored, b"".join(chunks))
        return stored
