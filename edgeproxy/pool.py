"""Origin pools: which server of an origin gets the next request. Pure state machine.

The shell feeds events and `now`; nothing here reads a clock, sleeps or opens
a socket, so every transition is a table row in tests/unit/test_pool.py.

Each server is UP or DOWN ("ejected"). Transitions:

    UP       -- fail_threshold consecutive failures -->  DOWN
                (failed requests, record_failure, and failed active checks,
                record_check(ok=False), count alike; any success resets)
    DOWN     -- rise consecutive passing checks     -->  UP        [checks on]
    DOWN     -- ejection_timeout elapsed            -->  UP, on probation
                                                                   [checks off]
    probation -- one failure --> DOWN again;  one success --> plain UP

With active checks on (a health path is set), only checks bring a server
back: they test it without risking a client request. With them off, the
timeout lets the next request probe it; probation re-ejects it at once if
that probe fails, so a dead server costs one request per timeout, not
fail_threshold. While DOWN, request results (of requests started before the
ejection) are ignored. The timeout is evaluated lazily by every method that
takes `now`.

What the shell feeds (see `is_server_failure`): a request that got no
response (connect error, timeout, reset) or a gateway failure (502, 503, 504)
is a failure; any other response is a success. A 500 is the application's
answer for one URL and says little about the server.

Retry (`should_retry`): RFC 9110 section 9.2.2 makes PUT, DELETE and OPTIONS
idempotent too, but only GET and HEAD are retried, once, on another server
(`pick(now, exclude=tried)`), and only when the connection failed, so that
no byte of the request can have reached a server.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

RETRY_METHODS: frozenset[str] = frozenset({"GET", "HEAD"})
MAX_ATTEMPTS = 2  # the first try and one retry
# Gateway failures: the server (or what is behind it) is unwell (RFC 9110 15.6).
FAILURE_STATUSES: frozenset[int] = frozenset({502, 503, 504})


class Strategy(enum.Enum):
    ROUND_ROBIN = "round_robin"
    LEAST_CONNECTIONS = "least_connections"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """One origin's balancing and health settings. Raises ValueError when inconsistent."""

    strategy: Strategy = Strategy.ROUND_ROBIN
    health_path: str | None = None  # None: active checks off
    interval: float = 5.0  # seconds between checks of one server
    timeout: float = 2.0  # a check taking longer failed; at most `interval`
    rise: int = 2  # consecutive passing checks to bring a server back
    fail_threshold: int = 3  # consecutive failures to eject
    ejection_timeout: float = 30.0  # checks off: DOWN this long, then probation

    def __post_init__(self) -> None:
        problems = []
        if self.health_path is not None and not self.health_path.startswith("/"):
            problems.append("health_path must start with /")
        if not self.interval > 0:
            problems.append("interval must be > 0")
        if not 0 < self.timeout <= self.interval:
            problems.append("timeout must be > 0 and at most interval")
        if self.rise < 1:
            problems.append("rise must be >= 1")
        if self.fail_threshold < 1:
            problems.append("fail_threshold must be >= 1")
        if not self.ejection_timeout >= 0:
            problems.append("ejection_timeout must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def active_checks(self) -> bool:
        return self.health_path is not None


@dataclass(frozen=True, slots=True)
class ServerState:
    """A read-only view of one server, for tests, logs and the admin API."""

    server: str
    up: bool
    probation: bool
    failures: int  # consecutive, counted while UP
    passes: int  # consecutive passing checks, counted while DOWN
    down_since: float | None
    inflight: int
    next_check: float  # -inf: due at once


@dataclass(slots=True)
class _Server:
    name: str
    up: bool = True
    probation: bool = False
    failures: int = 0
    passes: int = 0
    down_since: float | None = None
    inflight: int = 0
    next_check: float = -math.inf


def should_retry(method: str, *, connected: bool = False, attempts: int = 1) -> bool:
    """Retry on another server? GET/HEAD (case-sensitive, RFC 9110 section 9.1),
    only when the connection failed (`connected` False), once (`attempts` made so far)."""
    return method in RETRY_METHODS and not connected and attempts < MAX_ATTEMPTS


def is_server_failure(status: int | None) -> bool:
    """Does this outcome count against the server? None: no response at all."""
    return status is None or status in FAILURE_STATUSES


class Pool:
    """The servers of one origin. Unknown server names raise KeyError (a shell bug)."""

    def __init__(self, servers: Sequence[str], settings: PoolSettings | None = None) -> None:
        if not servers:
            raise ValueError("a pool needs at least one server")
        if len(set(servers)) != len(servers):
            raise ValueError("duplicate server in pool")
        self.settings = settings if settings is not None else PoolSettings()
        self._order = tuple(servers)
        self._state = {s: _Server(s) for s in servers}
        self._cursor = 0  # rotation start: round robin, and least-connections ties

    @property
    def servers(self) -> tuple[str, ...]:
        return self._order

    def adopt(self, old: Pool) -> None:
        """Take over the health of servers that `old` also had (a config reload).

        In-flight counts stay with `old`: requests release the pool they
        acquired from, so this one starts counting from zero.
        """
        for name, s in old._state.items():
            if name in self._state:
                self._state[name] = _Server(
                    name, s.up, s.probation, s.failures, s.passes, s.down_since, 0, s.next_check
                )

    # -- choosing ---------------------------------------------------------------

    def pick(self, now: float, exclude: Collection[str] = ()) -> str | None:
        """An UP server not in `exclude`, or None when there is none."""
        self._expire(now)
        n = len(self._order)
        if n == 1:  # most origins: no rotation to work out
            only = self._order[0]
            return only if self._state[only].up and only not in exclude else None
        rotation = [(self._cursor + k) % n for k in range(n)]
        eligible = [
            i for i in rotation if self._state[self._order[i]].up and self._order[i] not in exclude
        ]
        if not eligible:
            return None
        if self.settings.strategy is Strategy.LEAST_CONNECTIONS:
            # min() keeps the first minimum: ties go round robin.
            chosen = min(eligible, key=lambda i: self._state[self._order[i]].inflight)
        else:
            chosen = eligible[0]
        self._cursor = (chosen + 1) % n
        return self._order[chosen]

    def acquire(self, server: str) -> None:
        """A request to `server` started (least-connections counts these)."""
        self._state[server].inflight += 1

    def release(self, server: str) -> None:
        """It ended: response fully read, or failed."""
        s = self._state[server]
        if s.inflight == 0:
            raise ValueError(f"release without acquire: {server}")
        s.inflight -= 1

    # -- health -----------------------------------------------------------------

    def record_failure(self, server: str, now: float) -> None:
        """A request to `server` failed (`is_server_failure`)."""
        self._expire(now)
        s = self._state[server]
        if s.up:
            self._fail(s, now)

    def record_success(self, server: str, now: float) -> None:
        self._expire(now)
        s = self._state[server]
        if s.up:
            s.failures = 0
            s.probation = False

    def record_check(self, server: str, ok: bool, now: float) -> None:
        """An active health check of `server` passed (`ok`) or failed."""
        self._expire(now)
        s = self._state[server]
        if s.up:
            if ok:
                s.failures = 0
                s.probation = False
            else:
                self._fail(s, now)
        elif ok:
            s.passes += 1
            if s.passes >= self.settings.rise:
                self._restore(s, probation=False)
        else:
            s.passes = 0

    def due_checks(self, now: float) -> list[str]:
        """Servers whose check is due; each is scheduled `interval` later.

        The shell runs them (GET health_path, `timeout`), reports each with
        record_check, and sleeps until `next_check_at()`.
        """
        if not self.settings.active_checks:
            return []
        due = [name for name in self._order if self._state[name].next_check <= now]
        for name in due:
            self._state[name].next_check = now + self.settings.interval
        return due

    def next_check_at(self) -> float | None:
        """When the next check falls due; None with active checks off."""
        if not self.settings.active_checks:
            return None
        return min(s.next_check for s in self._state.values())

    def is_up(self, server: str, now: float) -> bool:
        self._expire(now)
        return self._state[server].up

    def all_down(self, now: float) -> bool:
        """Every server is DOWN: skip the origin; stale-if-error or 502/503 it is."""
        self._expire(now)
        return not any(s.up for s in self._state.values())

    def state(self, server: str, now: float) -> ServerState:
        self._expire(now)
        s = self._state[server]
        return ServerState(
            s.name, s.up, s.probation, s.failures, s.passes, s.down_since, s.inflight, s.next_check
        )

    # -- transitions ------------------------------------------------------------

    def _fail(self, s: _Server, now: float) -> None:
        s.failures += 1
        if s.probation or s.failures >= self.settings.fail_threshold:
            s.up = False
            s.probation = False
            s.passes = 0
            s.down_since = now

    def _restore(self, s: _Server, *, probation: bool) -> None:
        s.up = True
        s.probation = probation
        s.failures = 0
        s.passes = 0
        s.down_since = None

    def _expire(self, now: float) -> None:
        """Checks off: an ejection ends after ejection_timeout, on probation."""
        if self.settings.active_checks:
            return
        timeout = self.settings.ejection_timeout
        for s in self._state.values():
            if not s.up and s.down_since is not None and now >= s.down_since + timeout:
                self._restore(s, probation=True)
