"""Origin pools (edgeproxy/pool.py): picking, passive ejection, active checks, retries."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.pool import (
    Pool,
    PoolSettings,
    ServerState,
    Strategy,
    is_server_failure,
    should_retry,
)

A, B, C = "http://a:80", "http://b:80", "http://c:80"
PASSIVE = PoolSettings(fail_threshold=3, ejection_timeout=30)
ACTIVE = PoolSettings(health_path="/health", interval=5, timeout=2, rise=2, fail_threshold=3)
LEAST = PoolSettings(strategy=Strategy.LEAST_CONNECTIONS)

# -- health transitions, one row per transition -----------------------------

# Events on server A: (kind, time). kind: "fail" (record_failure), "ok"
# (record_success), "check+" / "check-" (record_check passed / failed).
Event = tuple[str, float]
# (id, settings, events, time of the look, expected (up, probation, failures,
#  passes, down_since))
Row = tuple[str, PoolSettings, list[Event], float, tuple[bool, bool, int, int, float | None]]
FFF: list[Event] = [("fail", 0), ("fail", 0), ("fail", 0)]  # ejects at t=0
UP0 = (True, False, 0, 0, None)
# fmt: off
TRANSITIONS: list[Row] = [
    ("starts-up", PASSIVE, [], 0, UP0),
    ("failure-counts", PASSIVE, [("fail", 0)], 0, (True, False, 1, 0, None)),
    ("below-threshold-stays-up", PASSIVE, FFF[:2], 0, (True, False, 2, 0, None)),
    ("threshold-ejects", PASSIVE, FFF, 0, (False, False, 3, 0, 0)),
    ("threshold-one", PoolSettings(fail_threshold=1), [("fail", 7)], 7,
     (False, False, 1, 0, 7)),
    ("success-resets-count", PASSIVE, [("fail", 0), ("fail", 0), ("ok", 1), ("fail", 2)], 2,
     (True, False, 1, 0, None)),
    ("consecutive-only", PASSIVE, [("fail", 0), ("ok", 0)] * 5, 0, UP0),
    # A failed check counts like a failed request; a passing one resets.
    ("failed-check-counts", PASSIVE, [("fail", 0), ("check-", 0), ("fail", 0)], 0,
     (False, False, 3, 0, 0)),
    ("passing-check-resets", PASSIVE, [("fail", 0), ("fail", 0), ("check+", 0)], 0, UP0),
    # While DOWN, results of requests started before the ejection are ignored.
    ("down-ignores-success", PASSIVE, [*FFF, ("ok", 1)], 1, (False, False, 3, 0, 0)),
    ("down-ignores-failure", PASSIVE, [*FFF, ("fail", 10)], 10, (False, False, 3, 0, 0)),
    # Checks off: ejection_timeout, then probation.
    ("before-timeout", PASSIVE, FFF, 29.9, (False, False, 3, 0, 0)),
    ("timeout-restores-on-probation", PASSIVE, FFF, 30, (True, True, 0, 0, None)),
    ("probation-failure-re-ejects", PASSIVE, [*FFF, ("fail", 30)], 30,
     (False, False, 1, 0, 30)),
    ("re-ejected-waits-again", PASSIVE, [*FFF, ("fail", 30)], 59.9, (False, False, 1, 0, 30)),
    ("re-ejected-returns", PASSIVE, [*FFF, ("fail", 30)], 60, (True, True, 0, 0, None)),
    ("probation-success-clears", PASSIVE, [*FFF, ("ok", 31)], 31, UP0),
    ("probation-passing-check-clears", PASSIVE, [*FFF, ("check+", 31)], 31, UP0),
    ("after-probation-full-threshold", PASSIVE, [*FFF, ("ok", 31), ("fail", 32)], 32,
     (True, False, 1, 0, None)),
    ("ejection-timeout-zero", PoolSettings(ejection_timeout=0), FFF, 0,
     (True, True, 0, 0, None)),
    # Checks on: only rise passing checks bring it back, never the clock.
    ("active-eject-by-checks", ACTIVE, [("check-", 0)] * 3, 0, (False, False, 3, 0, 0)),
    ("active-no-timeout", ACTIVE, FFF, 10_000, (False, False, 3, 0, 0)),
    ("active-rise-minus-one", ACTIVE, [*FFF, ("check+", 5)], 5, (False, False, 3, 1, 0)),
    ("active-rise-restores", ACTIVE, [*FFF, ("check+", 5), ("check+", 10)], 10, UP0),
    ("active-failed-check-resets-rise", ACTIVE,
     [*FFF, ("check+", 5), ("check-", 10), ("check+", 15)], 15, (False, False, 3, 1, 0)),
    ("active-success-while-down-ignored", ACTIVE, [*FFF, ("ok", 1), ("ok", 2)], 2,
     (False, False, 3, 0, 0)),
    ("active-rise-one", PoolSettings(health_path="/h", rise=1), [*FFF, ("check+", 1)], 1, UP0),
    ("active-restored-needs-full-threshold", ACTIVE,
     [*FFF, ("check+", 5), ("check+", 10), ("fail", 11)], 11, (True, False, 1, 0, None)),
]
# fmt: on


def apply(pool: Pool, server: str, event: Event) -> None:
    kind, t = event
    if kind == "fail":
        pool.record_failure(server, t)
    elif kind == "ok":
        pool.record_success(server, t)
    else:
        pool.record_check(server, kind == "check+", t)


@pytest.mark.parametrize(
    ("settings", "events", "at", "expected"), [pytest.param(*r[1:], id=r[0]) for r in TRANSITIONS]
)
def test_transitions(
    settings: PoolSettings,
    events: list[Event],
    at: float,
    expected: tuple[bool, bool, int, int, float | None],
) -> None:
    pool = Pool([A, B], settings)
    for e in events:
        apply(pool, A, e)
    s = pool.state(A, at)
    assert (s.up, s.probation, s.failures, s.passes, s.down_since) == expected
    assert pool.is_up(A, at) is expected[0]
    assert pool.state(B, at).up  # the other server is untouched
    assert (pool.pick(at, exclude=[B]) == A) is expected[0]


# -- picking -------------------------------------------------------------------


def picks(pool: Pool, n: int, now: float = 0, exclude: tuple[str, ...] = ()) -> list[str | None]:
    return [pool.pick(now, exclude) for _ in range(n)]


def test_round_robin_rotates_in_order() -> None:
    assert picks(Pool([A, B, C]), 7) == [A, B, C, A, B, C, A]


def test_round_robin_skips_down_servers() -> None:
    pool = Pool([A, B, C], PASSIVE)
    for _ in range(3):
        pool.record_failure(B, 0)
    assert picks(pool, 4) == [A, C, A, C]
    assert picks(pool, 3, now=30) == [A, B, C]  # B back on probation


def test_exclude_is_for_the_one_retry() -> None:
    pool = Pool([A, B, C])
    first = pool.pick(0)
    assert first == A
    assert pool.pick(0, exclude={first}) == B
    assert pool.pick(0, exclude=(A, B, C)) is None
    assert not pool.all_down(0)  # excluded is not down


def test_single_server_retry_has_nowhere_to_go() -> None:
    pool = Pool([A])
    assert pool.pick(0) == A
    assert pool.pick(0, exclude=[A]) is None


def test_all_down() -> None:
    """Every server down: the shell skips the origin (stale-if-error, else 502/503)."""
    pool = Pool([A, B], PASSIVE)
    for server in (A, B):
        assert not pool.all_down(0)
        for _ in range(3):
            pool.record_failure(server, 0)
    assert pool.all_down(0)
    assert pool.pick(0) is None
    assert not pool.all_down(30)  # the ejection timeout ended


def test_least_connections_picks_the_least_busy() -> None:
    pool = Pool([A, B, C], LEAST)
    for server, n in ((A, 2), (B, 0), (C, 1)):
        for _ in range(n):
            pool.acquire(server)
    assert pool.pick(0) == B
    pool.acquire(B)
    pool.acquire(B)
    assert pool.pick(0) == C
    pool.release(A)
    pool.release(A)
    assert pool.pick(0) == A
    assert pool.pick(0, exclude=[A]) == C


def test_least_connections_ties_rotate() -> None:
    assert picks(Pool([A, B, C], LEAST), 6) == [A, B, C, A, B, C]


def test_inflight_counting() -> None:
    pool = Pool([A, B], LEAST)
    pool.acquire(A)
    pool.acquire(A)
    assert pool.state(A, 0).inflight == 2
    pool.release(A)
    assert pool.state(A, 0).inflight == 1
    pool.release(A)
    with pytest.raises(ValueError, match="release without acquire"):
        pool.release(A)


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.acquire("http://x:1"),
        lambda p: p.release("http://x:1"),
        lambda p: p.record_failure("http://x:1", 0),
        lambda p: p.record_success("http://x:1", 0),
        lambda p: p.record_check("http://x:1", True, 0),
        lambda p: p.is_up("http://x:1", 0),
        lambda p: p.state("http://x:1", 0),
    ],
)
def test_unknown_server_is_a_shell_bug(call: Any) -> None:
    with pytest.raises(KeyError):
        call(Pool([A]))


@pytest.mark.parametrize("servers", [[], [A, A]], ids=["empty", "duplicate"])
def test_pool_needs_distinct_servers(servers: list[str]) -> None:
    with pytest.raises(ValueError):
        Pool(servers)


# -- active check schedule -----------------------------------------------------


def test_checks_off_schedule_nothing() -> None:
    pool = Pool([A, B])
    assert pool.due_checks(0) == []
    assert pool.next_check_at() is None


def test_check_schedule() -> None:
    pool = Pool([A, B], ACTIVE)
    assert pool.next_check_at() == float("-inf")
    assert pool.due_checks(100) == [A, B]  # all due at once
    assert pool.due_checks(100) == []  # scheduled, not due twice
    assert pool.next_check_at() == 105
    pool.record_check(A, False, 101)  # results don't move the schedule
    assert pool.due_checks(104.9) == []
    assert pool.due_checks(105) == [A, B]
    assert pool.next_check_at() == 110


def test_check_schedule_includes_down_servers() -> None:
    """Checks are what bring a DOWN server back, so they keep running."""
    pool = Pool([A, B], ACTIVE)
    for _ in range(3):
        pool.record_failure(A, 0)
    assert pool.due_checks(0) == [A, B]


def test_check_schedule_late_loop() -> None:
    """A shell that wakes late checks once, not once per missed interval."""
    pool = Pool([A], ACTIVE)
    assert pool.due_checks(0) == [A]
    assert pool.due_checks(100) == [A]
    assert pool.due_checks(100) == []
    assert pool.next_check_at() == 105


# -- settings ---------------------------------------------------------------------


def test_default_settings() -> None:
    s = PoolSettings()
    assert s.strategy is Strategy.ROUND_ROBIN and not s.active_checks
    assert (s.interval, s.timeout, s.rise, s.fail_threshold, s.ejection_timeout) == (
        5.0, 2.0, 2, 3, 30.0
    )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"health_path": "health"}, "health_path must start with /"),
        ({"interval": 0}, "interval must be > 0"),
        ({"interval": float("nan")}, "interval must be > 0"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"timeout": 6, "interval": 5}, "at most interval"),
        ({"rise": 0}, "rise must be >= 1"),
        ({"fail_threshold": 0}, "fail_threshold must be >= 1"),
        ({"ejection_timeout": -1}, "ejection_timeout must be >= 0"),
    ],
)
def test_settings_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PoolSettings(**changes)


def test_strategy_from_config_text() -> None:
    assert Strategy("least_connections") is Strategy.LEAST_CONNECTIONS
    assert Strategy("round_robin") is Strategy.ROUND_ROBIN


# -- retry and failure classification ----------------------------------------------

# (id, method, connected, attempts made, retry?)
# fmt: off
RETRY: list[tuple[str, str, bool, int, bool]] = [
    ("get-connect-failed", "GET", False, 1, True),
    ("head-connect-failed", "HEAD", False, 1, True),
    ("get-once-only", "GET", False, 2, False),
    # Once connected, request bytes may have reached the server.
    ("get-after-connect", "GET", True, 1, False),
    ("post-never", "POST", False, 1, False),
    ("patch-never", "PATCH", False, 1, False),
    # RFC 9110 section 9.2.2 calls these idempotent; the issue retries GET/HEAD only.
    ("9.2.2-put-not-retried", "PUT", False, 1, False),
    ("9.2.2-delete-not-retried", "DELETE", False, 1, False),
    ("9.2.2-options-not-retried", "OPTIONS", False, 1, False),
    # RFC 9110 section 9.1: method names are case-sensitive.
    ("9.1-lowercase-get", "get", False, 1, False),
]
# fmt: on


@pytest.mark.parametrize(
    ("method", "connected", "attempts", "retry"), [pytest.param(*r[1:], id=r[0]) for r in RETRY]
)
def test_should_retry(method: str, connected: bool, attempts: int, retry: bool) -> None:
    assert should_retry(method, connected=connected, attempts=attempts) is retry


def test_should_retry_defaults() -> None:
    """The bare call asks about the first try failing to connect."""
    assert should_retry("GET") and not should_retry("POST")


@pytest.mark.parametrize(
    ("status", "failure"),
    [(None, True), (502, True), (503, True), (504, True), (500, False), (501, False),
     (404, False), (429, False), (200, False), (304, False)],
)  # fmt: skip
def test_is_server_failure(status: int | None, failure: bool) -> None:
    assert is_server_failure(status) is failure


# -- properties ----------------------------------------------------------------------

SERVERS = ["s0", "s1", "s2", "s3"]
OPS = st.lists(
    st.tuples(
        st.sampled_from(["pick", "acquire", "release", "fail", "ok", "check+", "check-", "tick"]),
        st.integers(0, len(SERVERS) - 1),
        st.sets(st.sampled_from(SERVERS), max_size=3),
    ),
    max_size=60,
)
SETTINGS = st.sampled_from(
    [PoolSettings(fail_threshold=2, ejection_timeout=10),
     PoolSettings(strategy=Strategy.LEAST_CONNECTIONS, fail_threshold=1, ejection_timeout=5),
     PoolSettings(health_path="/h", rise=2, fail_threshold=2, interval=3, timeout=1),
     PoolSettings(health_path="/h", strategy=Strategy.LEAST_CONNECTIONS, rise=1,
                  fail_threshold=3, interval=3, timeout=1)]
)  # fmt: skip


def _view(pool: Pool, now: float) -> dict[str, ServerState]:
    return {s: pool.state(s, now) for s in pool.servers}


@given(settings=SETTINGS, ops=OPS, n=st.integers(1, len(SERVERS)))
def test_pick_invariants(settings: PoolSettings, ops: list[Any], n: int) -> None:
    """pick never returns a DOWN or excluded server; least-connections picks a minimum;
    all_down holds exactly when nothing can be picked."""
    pool = Pool(SERVERS[:n], settings)
    now = 0.0
    for op, i, exclude in ops:
        server = SERVERS[i % n]
        if op == "pick":
            before = _view(pool, now)
            got = pool.pick(now, exclude)
            eligible = [s for s, v in before.items() if v.up and s not in exclude]
            if got is None:
                assert not eligible
            else:
                assert got in eligible
                if settings.strategy is Strategy.LEAST_CONNECTIONS:
                    assert before[got].inflight == min(before[s].inflight for s in eligible)
        elif op == "acquire":
            pool.acquire(server)
        elif op == "release":
            if pool.state(server, now).inflight:
                pool.release(server)
        elif op == "tick":
            now += 4
        elif op == "fail":
            pool.record_failure(server, now)
        elif op == "ok":
            pool.record_success(server, now)
        else:
            pool.record_check(server, op == "check+", now)
        view = _view(pool, now)
        assert pool.all_down(now) is (pool.pick(now) is None)
        assert pool.all_down(now) is not any(v.up for v in view.values())
        for v in view.values():
            assert v.inflight >= 0
            assert v.up is (v.down_since is None)
            assert not (v.probation and settings.active_checks)
            assert v.failures < settings.fail_threshold or not v.up


@given(
    n=st.integers(1, 6),
    rounds=st.integers(1, 5),
    strategy=st.sampled_from(list(Strategy)),
    down=st.sets(st.integers(0, 5)),
)
def test_rotation_is_fair(n: int, rounds: int, strategy: Strategy, down: set[int]) -> None:
    """Over rounds * (servers up) picks, each UP server is picked exactly `rounds` times
    (round robin, and least connections when nothing is in flight)."""
    servers = [f"s{i}" for i in range(n)]
    pool = Pool(servers, PoolSettings(strategy=strategy, fail_threshold=1))
    for i in down:
        if i < n:
            pool.record_failure(servers[i], 0)
    up = [s for s in servers if pool.is_up(s, 0)]
    got = Counter(pool.pick(0) for _ in range(rounds * len(up)))
    assert got == dict.fromkeys(up, rounds)
