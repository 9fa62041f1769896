"""Many edges, one cache: purges shared through a Redis Stream (design.md "Scale-out").

Every purge an edge's admin API accepts is applied locally first, then
appended to the stream `<ns>:purges` by a Lua script that also numbers it
from the counter `<ns>:seq`: that number is the purge's `sequence`,
contiguous, so a gap in what an edge read is visible. Every edge reads the
whole stream (XREAD BLOCK, no consumer groups) and applies each purge to its
own store with the purge's ORIGINAL `issued_at`: the store's ban semantics
(purge.py) then kill a fill that raced the purge even when the purge
arrives late. An edge skips the messages its own process published (already
applied).

Position: the last applied stream id and sequence live in
`<cache dir>/cluster-position.json` (written atomically, off the loop), with
the Redis "epoch" (a random token `<ns>:epoch` set once per Redis dataset).
On (re)connecting an edge compares them with the stream:

- behind by more than the stream keeps (its first entry's sequence is past
  ours + 1), or by more than MAX_REPLAY purges: empty the cache (one purge-all
  issued now) and read on from the end; replaying would be incomplete or slow;
- a different epoch (Redis lost its data) seen by a process that was not
  connected to the old one: same, it cannot know what it missed; a process
  that was connected until Redis went away only warns and reads the new
  stream from its start;
- else replay what it missed. At start-up this happens before the listeners
  open (server.serve), so a returning edge never serves a purged entry
  while Redis answers.

Liveness: each edge writes `{last_seq, last_id, at}` into the hash
`<ns>:edges` every `heartbeat` seconds and right after applying a batch,
`at` being the Redis server's clock (no cross-edge clock skew). `GET
/cluster` lists it; a purge's `"wait": true` polls it until every live edge
has applied the purge's sequence, bounded by `wait_timeout`.

Redis unavailable: purges still apply locally and are queued (bounded; an
overflowing queue collapses into one purge-all covering everything queued),
then flushed in order on reconnect. Serving never awaits Redis; `/healthz`
reports the degraded state.

The shared tier (store/shared.py) wraps the edge's store when
`cluster.shared_tier` is on. Not done: a shared fill lock across edges (N
edges missing the same new object at the same instant each go to the
origin; the shared tier serves the ones that come after the first fill).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from edgeproxy.config import ClusterConfig, Config
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.purge import Purge, PurgeAll, PurgePrefix, PurgeTags, PurgeURL, Target
from edgeproxy.state import EdgeState
from edgeproxy.store.base import Store, StoreError
from edgeproxy.store.shared import SharedTier, SharedTierStore

log = logging.getLogger("edgeproxy.cluster")

FORMAT = "1"
POSITION_FILE = "cluster-position.json"
BATCH = 200  # stream entries per XREAD
MAX_REPLAY = 10_000  # further behind than this: empty the cache instead of replaying
BLOCK_MS = 1000  # XREAD BLOCK; also bounds how late a heartbeat is
PUBLISH_TIMEOUT = 2.0  # an admin purge never waits longer on Redis
STARTUP_TIMEOUT = 10.0  # catching up before serving; past it, serve and go on in the background
FORGET_EDGE = 3600.0  # /cluster drops edges silent this long
WAIT_POLL = 0.02  # seconds between /cluster reads while a purge waits


# -- messages (pure) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    purge: Purge
    seq: int
    node: str  # the publishing process (its own messages are skipped)
    edge: str  # the publishing edge's id, for logs


def encode(purge: Purge, node: str, edge: str) -> dict[str, str]:
    """A purge as stream fields (the script adds `seq`). Dry runs are never sent."""
    kind, value = _target_fields(purge.target)
    return {
        "v": FORMAT,
        "kind": kind,
        "value": value,
        "soft": "1" if purge.soft else "0",
        "issued_at": repr(purge.issued_at),
        "node": node,
        "edge": edge,
    }


def _target_fields(target: Target) -> tuple[str, str]:
    match target:
        case PurgeURL(url=url):
            return "url", url
        case PurgePrefix(prefix=prefix):
            return "prefix", prefix
        case PurgeTags(tags=tags):
            return "tags", json.dumps(list(tags))
        case PurgeAll(host=host):
            return "all", host or ""


def decode(fields: Mapping[Any, Any]) -> Message | None:
    """Stream fields -> Message; None for anything malformed (never raises)."""
    try:
        f = {_text(k): _text(v) for k, v in fields.items()}
        if f.get("v") != FORMAT:
            return None
        kind, value = f["kind"], f["value"]
        target: Target
        if kind == "url":
            target = PurgeURL(value)
        elif kind == "prefix":
            target = PurgePrefix(value)
        elif kind == "tags":
            tags = json.loads(value)
            if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
                return None
            target = PurgeTags(tuple(tags))
        elif kind == "all":
            target = PurgeAll(value or None)
        else:
            return None
        if f["soft"] not in ("0", "1"):
            return None
        issued_at = float(f["issued_at"])
        seq = int(f["seq"])
        if not math.isfinite(issued_at) or seq < 1:
            return None
        purge = Purge(target, soft=f["soft"] == "1", issued_at=issued_at)
        return Message(purge, seq, f["node"], f["edge"])
    except (KeyError, ValueError, TypeError, RecursionError):
        return None


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, str):
        return v
    raise TypeError(type(v).__name__)


def collapse(queued: list[Purge]) -> Purge:
    """One purge covering all of `queued` (an overflowing queue): everything,
    banned as of the latest; hard unless every one was soft."""
    return Purge(
        PurgeAll(),
        soft=all(p.soft for p in queued),
        issued_at=max(p.issued_at for p in queued),
    )


class PurgeQueue:
    """Purges waiting for Redis, in order; bounded by collapsing, never by dropping."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._items: collections.deque[Purge] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, purge: Purge) -> None:
        if len(self._items) >= self.limit:
            log.warning(
                "purge queue full (%d while Redis is unreachable): collapsed into one purge-all",
                len(self._items),
            )
            merged = collapse([*self._items, purge])
            self._items.clear()
            self._items.append(merged)
            return
        self._items.append(purge)

    def peek(self) -> Purge | None:
        return self._items[0] if self._items else None

    def pop(self) -> None:
        self._items.popleft()


@dataclass(frozen=True, slots=True)
class Position:
    """Where an edge is in the stream (what the position file keeps)."""

    epoch: str | None = None
    last_id: str = "0-0"
    last_seq: int = 0


def behind_verdict(
    saved: Position, epoch: str, first_seq: int | None, head_seq: int, live_on_epoch: bool
) -> str | None:
    """Why the cache must be emptied on (re)connecting, or None to replay.

    `first_seq`: the sequence of the stream's oldest entry (None: empty or
    no stream); `head_seq`: the counter; `live_on_epoch`: this process was
    connected to `saved.epoch` (so it read up to the moment Redis went away).
    """
    if saved.epoch is None:
        return None  # a new edge joins at the end: nothing it stored was purged
    if saved.epoch != epoch:
        if live_on_epoch:
            return None
        return "Redis lost its data (new epoch) while this edge was away"
    if first_seq is not None and first_seq > saved.last_seq + 1:
        return (
            f"the stream no longer holds purges {saved.last_seq + 1}..{first_seq - 1} "
            f"(trimmed to its max length while this edge was away)"
        )
    if head_seq - saved.last_seq > MAX_REPLAY:
        return f"{head_seq - saved.last_seq} purges behind (more than {MAX_REPLAY} to replay)"
    return None


def read_position(path: str, namespace: str) -> Position:
    """The saved position (blocking: call off the loop); a fresh one if none or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict) or d.get("namespace") != namespace:
            return Position()
        epoch, last_id, last_seq = d["epoch"], d["last_id"], d["last_seq"]
        if not (isinstance(epoch, str) and isinstance(last_id, str) and type(last_seq) is int):
            raise ValueError("wrong types")
        return Position(epoch, last_id, last_seq)
    except FileNotFoundError:
        return Position()
    except (OSError, ValueError, KeyError) as e:
        log.warning("cluster position %s unreadable (%s): starting as a new edge", path, e)
        return Position()


def write_position(path: str, namespace: str, pos: Position) -> None:
    """Atomically (temp file + rename); blocking: call off the loop."""
    tmp = f"{path}.{os.getpid()}.tmp"
    data = {
        "namespace": namespace,
        "epoch": pos.epoch,
        "last_id": pos.last_id,
        "last_seq": pos.last_seq,
    }
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


# -- Redis scripts --------------------------------------------------------------

# KEYS: stream, counter. ARGV: max length, then field/value pairs.
PUBLISH_LUA = """
local n = redis.call('INCR', KEYS[2])
local args = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'seq', tostring(n)}
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call(unpack(args))
return {n, id}
"""

# KEYS: edges hash. ARGV: edge id, then its JSON state with "at" left to Redis's clock.
HEARTBEAT_LUA = """
local t = redis.call('TIME')
local state = cjson.decode(ARGV[2])
state['at'] = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(state))
return state['at']
"""


@dataclass
class EdgeInfo:
    id: str
    last_seq: int
    last_id: str
    at: float  # Redis time of its last heartbeat
    age: float  # seconds since, by Redis's clock
    live: bool
    stopped: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "last_applied": self.last_seq,
            "last_applied_id": self.last_id,
            "last_heartbeat": self.at,
            "age": round(self.age, 3),
            "live": self.live,
            "stopped": self.stopped,
        }


@dataclass
class WaitResult:
    sequence: int
    complete: bool
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


class PurgeBus:
    """Publishes this edge's purges and applies everyone's (module docstring)."""

    def __init__(
        self,
        settings: ClusterConfig,
        client: redis.Redis,
        apply: Callable[[Purge], Awaitable[int]],
        clock: Callable[[], float],
        cache_dir: str,
        edge_id: str,
    ) -> None:
        self.settings = settings
        self.edge_id = edge_id
        self.node = uuid.uuid4().hex
        self._redis = client
        # EdgeState.purge: the store, and in-flight fills stop taking waiters.
        self._apply_purge = apply
        self._clock = clock
        ns = settings.namespace
        self.stream, self.counter = f"{ns}:purges", f"{ns}:seq"
        self.epoch_key, self.edges_key = f"{ns}:epoch", f"{ns}:edges"
        self._position_path = os.path.join(cache_dir, POSITION_FILE)
        self._publish = client.register_script(PUBLISH_LUA)
        self._beat = client.register_script(HEARTBEAT_LUA)
        self.position = Position()
        self.queue = PurgeQueue(settings.queue_max)
        self.connected = False
        self.last_error: str | None = None
        self.applied = 0  # purges from other edges applied by this process
        self.wiped = 0  # caches emptied for falling behind
        self._live_epoch: str | None = None  # the epoch this process read while connected
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._last_beat = -math.inf
        self._loop_time = asyncio.get_running_loop().time

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load the position, catch up if Redis answers (bounded), then run."""
        loop = asyncio.get_running_loop()
        self.position = await loop.run_in_executor(
            None, read_position, self._position_path, self.settings.namespace
        )
        try:
            await asyncio.wait_for(self._connect_and_catch_up(), STARTUP_TIMEOUT)
        except (RedisError, OSError, TimeoutError, StoreError) as e:
            self._down(e)
            log.warning(
                "cluster: Redis %s not usable at start (%s): serving; purges missed while "
                "this edge was away are applied when it answers",
                _safe_url(self.settings.redis_url),
                self.last_error,
            )
        self._task = loop.create_task(self._run(), name="cluster purge bus")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.connected:
            # Not live any more: a purge's "wait" stops counting this edge.
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._heartbeat(stopped=True), 1.0)

    # -- publishing --------------------------------------------------------------

    async def publish(self, purge: Purge) -> int | None:
        """Append an (already applied) purge to the stream: its sequence, or
        None when Redis is unreachable and it was queued. Never raises, and
        never waits on Redis more than PUBLISH_TIMEOUT."""
        if purge.dry_run:
            return None
        if not self.connected or len(self.queue):
            self.queue.append(purge)  # behind the queued ones: order kept
            return None
        try:
            return await asyncio.wait_for(self._xadd(purge), PUBLISH_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as e:
            # It may have been added anyway: sending it twice is harmless.
            self._down(e)
            self.queue.append(purge)
            return None

    async def _xadd(self, purge: Purge) -> int:
        fields = encode(purge, self.node, self.edge_id)
        args: list[str | int] = [self.settings.stream_max_len]
        for k, v in fields.items():
            args += [k, v]
        seq, _ = await self._publish(keys=[self.stream, self.counter], args=args)
        return int(seq)

    async def _flush(self) -> None:
        async with self._flush_lock:
            for _ in range(len(self.queue)):  # bounded: what is queued now
                purge = self.queue.peek()
                if purge is None:
                    return
                seq = await self._xadd(purge)
                self.queue.pop()
                log.info("cluster: queued purge %s sent as %d", purge.target, seq)

    # -- consuming ---------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.05
        while True:  # until cancelled
            try:
                if not self.connected:
                    await self._connect_and_catch_up()
                    log.info("cluster: Redis reachable again; at purge %d", self.position.last_seq)
                await self._flush()
                got = await self._read(BLOCK_MS)
                if got:
                    await self._apply(got)
                    await self._heartbeat()
                elif self._loop_time() - self._last_beat >= self.settings.heartbeat:
                    await self._heartbeat()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError, StoreError) as e:
                if not isinstance(e, StoreError):
                    self._down(e)
                else:
                    log.error("cluster: applying a purge failed (retrying): %s", e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def _connect_and_catch_up(self) -> None:
        client = self._redis
        await client.set(self.epoch_key, uuid.uuid4().hex, nx=True)
        raw = await client.get(self.epoch_key)
        if raw is None:
            raise RedisError("epoch key vanished")
        epoch = _text(raw)
        head_seq = int(await client.get(self.counter) or 0)
        first_seq: int | None = None
        last_id = "0-0"
        try:
            info = await client.xinfo_stream(self.stream)
        except ResponseError:  # no stream yet
            info = None
        if info is not None:
            last_id = _text(info["last-generated-id"])
            first = info.get("first-entry")
            if first:
                message = decode(first[1])
                first_seq = message.seq if message is not None else None
        saved = self.position
        why = behind_verdict(saved, epoch, first_seq, head_seq, self._live_epoch == saved.epoch)
        if why is not None:
            await self._empty_cache(why)
            await self._save(Position(epoch, last_id, head_seq))
        elif saved.epoch is None:
            log.info("cluster: edge %s joins the purge stream at %d", self.edge_id, head_seq)
            await self._save(Position(epoch, last_id, head_seq))
        elif saved.epoch != epoch:
            log.warning(
                "cluster: Redis lost its data while this edge was connected; purges not "
                "yet read from it are lost; reading the new stream from its start"
            )
            await self._save(Position(epoch, "0-0", 0))
        self._live_epoch = epoch
        self.connected = True
        self.last_error = None
        # Replay what was missed (bounded by MAX_REPLAY via behind_verdict).
        for _ in range(MAX_REPLAY // BATCH + 2):
            got = await self._read(None)
            if not got:
                break
            await self._apply(got)
        await self._heartbeat()

    async def _empty_cache(self, why: str) -> None:
        log.warning("cluster: emptying the cache: %s", why)
        count = await self._apply_purge(Purge(PurgeAll(), issued_at=self._clock()))
        self.wiped += 1
        log.warning("cluster: emptied the cache (%d entries)", count)

    async def _read(self, block: int | None) -> list[tuple[Any, Any]]:
        """The next entries after our position (RESP2 and RESP3 replies alike)."""
        got: Any = await self._redis.xread(
            {self.stream: self.position.last_id}, count=BATCH, block=block
        )
        if not got:
            return []
        streams = list(got.values()) if isinstance(got, dict) else [s[1] for s in got]
        entries: list[tuple[Any, Any]] = []
        for stream in streams:
            # RESP3 nests one more list level per stream.
            for item in stream[0] if stream and isinstance(stream[0], list) else stream:
                entries.append((item[0], item[1]))
        return entries

    async def _apply(self, entries: list[tuple[Any, Any]]) -> None:
        pos = self.position
        try:
            for raw_id, fields in entries:
                entry_id = _text(raw_id)
                message = decode(fields) if fields else None
                if message is None:
                    log.warning("cluster: skipping malformed stream entry %s", entry_id)
                    pos = Position(pos.epoch, entry_id, pos.last_seq)
                    continue
                if message.node != self.node:
                    count = await self._apply_purge(message.purge)
                    self.applied += 1
                    log.info(
                        "cluster: applied purge %d %s%s from %s: %d entries",
                        message.seq,
                        message.purge.target,
                        " soft" if message.purge.soft else "",
                        message.edge,
                        count,
                    )
                pos = Position(pos.epoch, entry_id, max(pos.last_seq, message.seq))
        finally:
            if pos != self.position:
                await self._save(pos)

    async def _save(self, pos: Position) -> None:
        self.position = pos
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                None, write_position, self._position_path, self.settings.namespace, pos
            )
        except OSError as e:
            log.error("cluster: saving the position to %s failed: %s", self._position_path, e)

    async def _heartbeat(self, *, stopped: bool = False) -> None:
        state = {
            "last_seq": self.position.last_seq,
            "last_id": self.position.last_id,
            "queued": len(self.queue),
            "stopped": stopped,
        }
        await self._beat(keys=[self.edges_key], args=[self.edge_id, json.dumps(state)])
        self._last_beat = self._loop_time()

    def _down(self, e: BaseException) -> None:
        message = str(e) or type(e).__name__
        if self.connected or self.last_error is None:
            log.warning("cluster: Redis unreachable: %s", message)
        self.connected = False
        self.last_error = message

    # -- reading the cluster's state ---------------------------------------------

    async def edges(self) -> tuple[float, list[EdgeInfo]]:
        """Redis's time and every edge's last heartbeat (forgetting long-silent ones)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.hgetall(self.edges_key)
            (secs, usecs), raw = await pipe.execute()
        now = secs + usecs / 1e6
        ttl = self.settings.edge_ttl
        out: list[EdgeInfo] = []
        forget: list[Any] = []
        for name, value in raw.items():
            try:
                d = json.loads(value)
                at = float(d["at"])
                info = EdgeInfo(
                    id=_text(name),
                    last_seq=int(d["last_seq"]),
                    last_id=str(d["last_id"]),
                    at=at,
                    age=max(0.0, now - at),
                    live=not d.get("stopped") and now - at <= ttl,
                    stopped=bool(d.get("stopped")),
                )
            except (ValueError, KeyError, TypeError):
                forget.append(name)
                continue
            if info.age > FORGET_EDGE:
                forget.append(name)
            else:
                out.append(info)
        if forget:
            await self._redis.hdel(self.edges_key, *forget)
        out.sort(key=lambda e: e.id)
        return now, out

    async def head(self) -> int:
        return int(await self._redis.get(self.counter) or 0)

    async def wait_applied(self, seq: int, within: float) -> WaitResult:
        """Poll until every live edge has applied `seq`, at most `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        result = WaitResult(seq, False)
        for _ in range(int(within / WAIT_POLL) + 2):  # bounded by the deadline too
            _, edges = await self.edges()
            live = [e for e in edges if e.live]
            result = WaitResult(
                seq,
                all(e.last_seq >= seq for e in live),
                [e.id for e in live if e.last_seq >= seq],
                [e.id for e in live if e.last_seq < seq],
            )
            if result.complete or loop.time() >= deadline:
                return result
            await asyncio.sleep(WAIT_POLL)
        return result

    def status(self) -> dict[str, Any]:
        return {
            "edge": self.edge_id,
            "connected": self.connected,
            "last_applied": self.position.last_seq,
            "last_applied_id": self.position.last_id,
            "queued": len(self.queue),
            "last_error": self.last_error,
            "applied": self.applied,
            "cache_emptied": self.wiped,
        }


def _safe_url(url: str | None) -> str:
    """The Redis URL without its password, for logs."""
    if url is None:
        return "(none)"
    scheme, sep, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{host}"


def default_edge_id(config: Config) -> str:
    return f"{socket.gethostname()}:{config.listen.port}"


# No CLIENT SETINFO: redis-py would read its own version from package metadata
# (files) on the event loop for every new connection. `driver_info` replaced
# lib_name/lib_version (deprecated) in newer redis-py releases.
_NO_DRIVER_INFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(redis.Redis.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def make_client(settings: ClusterConfig) -> redis.Redis:
    assert settings.redis_url is not None
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=1.0,
        # Longer than XREAD's BLOCK, which holds a connection that long.
        socket_timeout=BLOCK_MS / 1000 + 2.0,
        retry=Retry(NoBackoff(), 0),  # the bus retries itself, without stalling a caller
        **_NO_DRIVER_INFO,
    )


class Cluster:
    """The bus and, optionally, the shared tier of one edge (server.serve owns it)."""

    def __init__(self, edge: EdgeState, bus: PurgeBus, client: redis.Redis) -> None:
        self.edge = edge
        self.bus = bus
        self._redis = client
        self.shared: SharedTierStore | None = None
        self._inner: Store | None = None

    @classmethod
    async def start(cls, config: Config, edge: EdgeState) -> Cluster:
        """Install the shared tier (if on), then catch up on purges: call before
        the listeners open. Redis being down makes it degraded, never fails it."""
        settings = config.cluster
        client = make_client(settings)
        edge_id = settings.edge_id or default_edge_id(config)
        cluster = cls(
            edge,
            PurgeBus(settings, client, edge.purge, edge.clock, config.cache.directory, edge_id),
            client,
        )
        if settings.shared_tier:
            tier = SharedTier(client, settings.namespace, settings.shared_timeout)
            cluster._inner = edge.store
            cluster.shared = SharedTierStore(
                edge.store,
                tier,
                max_object=settings.shared_max_object,
                clock=edge.clock,
                policy_for=lambda entry: _policy_for(edge, entry.route),
            )
            edge.store = cluster.shared
        await cluster.bus.start()
        log.info(
            "cluster: edge %s on %s (shared tier %s)",
            edge_id,
            _safe_url(settings.redis_url),
            "on" if settings.shared_tier else "off",
        )
        return cluster

    async def stop(self) -> None:
        """Stop consuming and writing to Redis (before the proxy's own cleanup)."""
        await self.bus.stop()
        if self.shared is not None:
            await self.shared.stop_writes()

    async def close(self) -> None:
        """After the proxy's cleanup: the Redis connections go."""
        if self._inner is not None:
            self.edge.store = self._inner
        await self._redis.aclose()

    def status(self) -> dict[str, Any]:
        out = self.bus.status()
        if self.shared is not None:
            out["shared_tier"] = self.shared.shared_stats()
        return out


def _policy_for(edge: EdgeState, route: str) -> CachePolicy:
    snap = edge.snapshot
    for r in snap.config.routes:
        if r.name == route:
            return r.policy
    return snap.policy
