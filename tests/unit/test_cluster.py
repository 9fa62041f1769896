"""The pure parts of the cluster: stream messages, the outage queue, when a
returning edge must empty its cache, the position file, the `cluster:`
config section, the purge API's `"wait"` flag and the shared tier's ranges."""

from __future__ import annotations

import contextlib
import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.admin import parse_purge_body
from edgeproxy.cluster import (
    MAX_REPLAY,
    Position,
    PurgeQueue,
    behind_verdict,
    collapse,
    decode,
    encode,
    read_position,
    write_position,
)
from edgeproxy.config import ClusterConfig, parse_config
from edgeproxy.errors import ConfigError
from edgeproxy.policy.settings import CachePolicy
from edgeproxy.purge import (
    Purge,
    PurgeAll,
    PurgePrefix,
    PurgeRequestError,
    PurgeTags,
    PurgeURL,
    matches,
    parse_purge_json,
)
from edgeproxy.store.shared import member, prefix_range, purge_ranges, shared_ttl
from tests.contract.helpers import T0, make_entry

# -- messages -------------------------------------------------------------------

PURGES = [
    Purge(PurgeURL("http://a.example/x?y=1"), issued_at=T0),
    Purge(PurgePrefix("http://a.example/dir/"), soft=True, issued_at=T0 + 0.25),
    Purge(PurgeTags(("t1", "t-2")), issued_at=T0),
    Purge(PurgeAll(), issued_at=T0),
    Purge(PurgeAll("a.example:8080"), soft=True, issued_at=1e-3),
]


@pytest.mark.parametrize("purge", PURGES, ids=lambda p: type(p.target).__name__)
def test_a_purge_survives_the_stream(purge: Purge) -> None:
    fields: dict[str, Any] = {**encode(purge, "node-1", "edge-a"), "seq": "7"}
    # Redis hands fields back as bytes.
    got = decode({k.encode(): v.encode() for k, v in fields.items()})
    assert got is not None
    # The ORIGINAL issue time travels: the ban of a late-applied purge (purge.py).
    assert got.purge == purge and got.seq == 7
    assert (got.node, got.edge) == ("node-1", "edge-a")


GOOD = {**encode(PURGES[0], "n", "e"), "seq": "1"}


@pytest.mark.parametrize(
    "change",
    [
        {"v": "2"},  # a format this version does not read
        {"kind": "regex"},
        {"kind": "tags", "value": "not json"},
        {"kind": "tags", "value": "[]"},
        {"kind": "tags", "value": "[1]"},
        {"soft": "yes"},
        {"issued_at": "nan"},
        {"issued_at": "inf"},
        {"seq": "0"},
        {"seq": "x"},
    ],
)
def test_malformed_messages_are_none(change: dict[str, str]) -> None:
    assert decode({**GOOD, **change}) is None


@pytest.mark.parametrize("missing", sorted(GOOD))
def test_a_message_missing_a_field_is_none(missing: str) -> None:
    assert decode({k: v for k, v in GOOD.items() if k != missing}) is None


@given(st.dictionaries(st.one_of(st.binary(), st.text()), st.one_of(st.binary(), st.text())))
def test_decode_never_raises(fields: dict[Any, Any]) -> None:
    decode(fields)


@given(st.dictionaries(st.sampled_from(sorted(GOOD)), st.text()))
def test_decode_of_near_messages_never_raises(change: dict[str, str]) -> None:
    decode({**GOOD, **change})


# -- the queue kept while Redis is unreachable -----------------------------------


def test_queue_keeps_order_until_full_then_collapses_into_one_purge_all() -> None:
    q = PurgeQueue(3)
    purges = [Purge(PurgeURL(f"http://a/{i}"), soft=True, issued_at=T0 + i) for i in range(3)]
    for p in purges:
        q.append(p)
    assert len(q) == 3 and q.peek() == purges[0]
    late = Purge(PurgeURL("http://a/late"), issued_at=T0 + 10)
    q.append(late)
    # Never dropped: one purge covering all of them, banning as of the latest.
    assert len(q) == 1
    assert q.peek() == Purge(PurgeAll(), soft=False, issued_at=T0 + 10)


@pytest.mark.parametrize(
    ("softs", "soft"), [((True, True), True), ((True, False), False), ((False,), False)]
)
def test_collapse_is_soft_only_when_every_purge_was(softs: tuple[bool, ...], soft: bool) -> None:
    got = collapse(
        [Purge(PurgePrefix("http://a/"), soft=s, issued_at=T0 + i) for i, s in enumerate(softs)]
    )
    assert got.soft is soft and got.issued_at == T0 + len(softs) - 1
    assert all(matches(got.target, f"http://h{i}/p", ()) for i in range(3))


# -- when a (re)connecting edge must empty its cache -------------------------------


@pytest.mark.parametrize(
    ("saved", "epoch", "first_seq", "head", "live", "empties"),
    [
        pytest.param(Position(), "E", 1, 50, False, False, id="new edge joins at the end"),
        pytest.param(Position("E", "1-0", 10), "E", 5, 20, False, False, id="all still kept"),
        pytest.param(Position("E", "1-0", 10), "E", 11, 20, False, False, id="next is first"),
        pytest.param(Position("E", "1-0", 10), "E", 12, 20, False, True, id="purge 11 trimmed"),
        pytest.param(Position("E", "1-0", 10), "E", None, 10, False, False, id="empty stream"),
        pytest.param(
            Position("E", "1-0", 0), "E", 1, MAX_REPLAY + 1, False, True, id="too many to replay"
        ),
        pytest.param(Position("E", "1-0", 10), "F", 1, 3, False, True, id="Redis lost data"),
        pytest.param(
            Position("E", "1-0", 10), "F", 1, 3, True, False, id="lost data while connected"
        ),
    ],
)
def test_behind_verdict(
    saved: Position, epoch: str, first_seq: int | None, head: int, live: bool, empties: bool
) -> None:
    assert (behind_verdict(saved, epoch, first_seq, head, live) is not None) is empties


def test_position_file_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "pos.json")
    assert read_position(path, "ns") == Position()
    write_position(path, "ns", Position("E", "17-3", 42))
    assert read_position(path, "ns") == Position("E", "17-3", 42)
    assert read_position(path, "other") == Position()  # another namespace's: not ours
    assert list(tmp_path.iterdir()) == [tmp_path / "pos.json"]  # no temp file left


@pytest.mark.parametrize("text", ["", "{", "[]", '{"namespace": "ns", "epoch": 1}'])
def test_unreadable_position_starts_as_a_new_edge(tmp_path: Path, text: str) -> None:
    path = tmp_path / "pos.json"
    path.write_text(text)
    assert read_position(str(path), "ns") == Position()


# -- the cluster: config section -----------------------------------------------------


def test_cluster_section_parses() -> None:
    cfg = parse_config(
        textwrap.dedent(
            """\
            cluster:
              redis_url: redis://:secret@10.0.0.5:6379/2
              edge_id: par-1
              namespace: shop.edge
              stream_max_len: 5000
              heartbeat: 0.5
              edge_ttl: 3
              wait_timeout: 2
              queue_max: 100
              shared_tier: true
              shared_max_object: 512KiB
              shared_timeout: 0.05
            """
        )
    )
    assert cfg.cluster == ClusterConfig(
        redis_url="redis://:secret@10.0.0.5:6379/2",
        edge_id="par-1",
        namespace="shop.edge",
        stream_max_len=5000,
        heartbeat=0.5,
        edge_ttl=3.0,
        wait_timeout=2.0,
        queue_max=100,
        shared_tier=True,
        shared_max_object=512 * 1024,
        shared_timeout=0.05,
    )


def test_no_cluster_section_means_no_redis() -> None:
    assert parse_config("listen: 127.0.0.1:8080\n").cluster.redis_url is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("  shared_tier: true\n", "e.yaml:2 cluster.redis_url: required"),
        ("  redis_url: http://x/\n", "e.yaml:2 cluster.redis_url: expected a redis://"),
        ("  redis_url: redis://h:99999\n", "e.yaml:2 cluster.redis_url: expected a redis://"),
        ("  redis_url: redis://h\n  namespace: 'a b'\n", "e.yaml:3 cluster.namespace: expected"),
        ("  redis_url: redis://h\n  heartbeat: 0\n", "e.yaml:3 cluster.heartbeat: expected sec"),
        ("  redis_url: redis://h\n  stream_max_len: 0\n", "e.yaml:3 cluster.stream_max_len:"),
        ("  redis_url: redis://h\n  edge_ttl: 1\n", "e.yaml:3 cluster.edge_ttl: must be longer"),
        ("  redis_url: redis://h\n  nodes: 3\n", "e.yaml:3 cluster.nodes: unknown key"),
    ],
)
def test_cluster_errors_name_file_line_and_key(body: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config("cluster:\n" + body, "e.yaml")
    assert any(line.startswith(error) for line in e.value.errors), e.value.errors


# -- the purge API's "wait" flag ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "wait"),
    [
        (b'{"url": "http://a.example/x", "wait": true}', True),
        (b'{"url": "http://a.example/x", "wait": false}', False),
        (b'{"url": "http://a.example/x"}', False),
        (b'{"wait": true, "all": true, "soft": true}', True),
    ],
)
def test_wait_is_taken_off_the_purge(body: bytes, wait: bool) -> None:
    purge, got = parse_purge_body(body, issued_at=T0)
    assert got is wait
    without = body.replace(b', "wait": true', b"").replace(b', "wait": false', b"")
    without = without.replace(b'"wait": true, ', b"")
    assert purge == parse_purge_json(without, issued_at=T0)


@pytest.mark.parametrize(
    "body",
    [
        b'{"url": "http://a.example/x", "wait": 1}',
        b'{"url": "http://a.example/x", "wait": "yes"}',
    ],
)
def test_wait_must_be_a_boolean(body: bytes) -> None:
    with pytest.raises(PurgeRequestError, match='"wait" must be true or false'):
        parse_purge_body(body, issued_at=T0)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",
        b"{",
        b"[]",
        b'{"url": "http://a.example/x", "url": "http://a.example/y"}',
        b'{"url": "http://a.example/x", "wait": true, "wait": true}',
        b'{"nope": 1}',
    ],
)
def test_bad_bodies_get_the_purge_parsers_own_error(body: bytes) -> None:
    with pytest.raises(PurgeRequestError) as ours:
        parse_purge_body(body, issued_at=T0)
    try:
        parse_purge_json(body, issued_at=T0)
    except PurgeRequestError as theirs:
        assert str(ours.value) == str(theirs)


@given(st.binary(max_size=200))
def test_parse_purge_body_raises_only_request_errors(body: bytes) -> None:
    with contextlib.suppress(PurgeRequestError):
        parse_purge_body(body, issued_at=T0)


# -- the shared tier's index ranges (ZRANGEBYLEX compares bytes) -----------------------

KEYS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=0x21), max_size=20
)


def _within(m: bytes, lo: bytes, hi: bytes) -> bool:
    if (lo, hi) == (b"-", b"+"):
        return True
    low_ok = m >= lo[1:] if lo[:1] == b"[" else m > lo[1:]
    high_ok = m <= hi[1:] if hi[:1] == b"[" else m < hi[1:]
    return low_ok and high_ok


@given(KEYS, KEYS)
def test_prefix_range_is_startswith(prefix: str, key: str) -> None:
    lo, hi = prefix_range(prefix.encode())
    assert _within(member(key, "ab12"), lo, hi) is key.startswith(prefix)


@pytest.mark.parametrize("purge", PURGES[:2] + PURGES[3:], ids=lambda p: str(p.target))
@pytest.mark.parametrize(
    "key",
    [
        "http://a.example/x?y=1",
        "http://a.example/x?y=1#accept=gzip",
        "http://a.example/x?y=12",
        "http://a.example/dir/1",
        "http://a.example:8080/z",
        "https://a.example:8080/z",
        "http://b.example/x",
    ],
)
def test_shared_ranges_cover_what_the_purge_matches(purge: Purge, key: str) -> None:
    m = member(key, "0f")
    covered = any(_within(m, lo, hi) for lo, hi in purge_ranges(purge))
    assert covered is matches(purge.target, key, ())


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # max-age 60, requested at T0 (0.5 s in flight counts as age, RFC 9111
        # section 4.2.3): fresh until T0 + 60, then the default grace (an
        # ETag) keeps it worth revalidating for a day.
        ({"Cache-Control": "max-age=60", "ETag": '"v"'}, 60 + 86400),
        # No validator: worthless once stale, unless a stale window says so.
        ({"Cache-Control": "max-age=60"}, 60),
        ({"Cache-Control": "max-age=60, stale-while-revalidate=30"}, 90),
        ({"Cache-Control": "max-age=0"}, 0),  # 0: not shared
    ],
)
def test_shared_ttl_is_freshness_plus_retention(fields: dict[str, str], expected: float) -> None:
    entry = make_entry("http://a/x", fields=fields)
    got = shared_ttl(entry, CachePolicy(), T0)
    assert math.isclose(got, expected)
