"""The access line's text and its writer, against the reference they replace.

format_json and rfc3339 are hand-built for speed (issue #10); they must give
exactly what json.dumps and datetime give, for any text a client can send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy import accesslog
from edgeproxy.accesslog import AccessRecord, LineWriter, format_json, request_id, rfc3339


def _reference_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reference_json(r: AccessRecord) -> str:
    return json.dumps(
        {
            "time": _reference_time(r.time),
            "client": r.client,
            "method": r.method,
            "url": r.url,
            "status": r.status,
            "bytes": r.bytes,
            "duration_ms": r.duration_ms,
            "cache": r.cache,
            "route": r.route,
            "origin_status": r.origin_status,
            "origin_ms": r.origin_ms,
            "request_id": r.request_id,
        },
        separators=(",", ":"),
    )


_TIMES = st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False)
_MS = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
_TEXT = st.text()  # any code point, controls and lone surrogates included


@given(_TIMES)
def test_rfc3339_is_datetime_isoformat(t: float) -> None:
    # RFC 3339 section 5.6, UTC, milliseconds truncated after datetime's
    # own rounding to the microsecond.
    assert rfc3339(t) == _reference_time(t)


@pytest.mark.parametrize(
    "t",
    [0.0, 1_800_000_000.0, 1_800_000_000.4359994, 1_800_000_000.9999995, 1_800_000_000.999],
)
def test_rfc3339_edges(t: float) -> None:
    assert rfc3339(t) == _reference_time(t)


@given(
    time=_TIMES,
    client=st.none() | _TEXT,
    method=_TEXT,
    url=_TEXT,
    status=st.integers(100, 999),
    size=st.integers(0, 2**40),
    duration=_MS,
    cache=_TEXT,
    route=st.none() | _TEXT,
    origin_status=st.none() | st.integers(100, 999),
    origin_ms=st.none() | _MS,
    rid=_TEXT,
)
def test_format_json_is_json_dumps(
    time: float,
    client: str | None,
    method: str,
    url: str,
    status: int,
    size: int,
    duration: float,
    cache: str,
    route: str | None,
    origin_status: int | None,
    origin_ms: float | None,
    rid: str,
) -> None:
    r = AccessRecord(
        time,
        client,
        method,
        url,
        status,
        size,
        duration,
        cache,
        route,
        origin_status,
        origin_ms,
        rid,
    )
    line = format_json(r)
    assert line == _reference_json(r)
    assert "\n" not in line and "\r" not in line  # one record, one line
    assert json.loads(line)["url"] == url


def test_new_request_ids_are_32_hex_and_distinct() -> None:
    ids = [request_id(None) for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_gets_its_own_prefix() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, request_id(None).encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 64).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert child[:16] != request_id(None)[:16]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123", True), ("a" * 128, True), ("a" * 129, False), ("a b", False), ("", False)],
)
def test_a_client_id_is_kept_only_when_harmless(sent: str, kept: bool) -> None:
    assert (request_id(sent) == sent) is kept


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


@pytest.mark.no_blockbuster  # it writes to a pipe: that is its job
async def test_lines_of_one_loop_turn_go_out_in_one_write_when_it_ends(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    writer = LineWriter(w)
    writer.write("one")
    writer.write("two")
    assert _read(r) == b""  # nothing yet: the turn is not over
    await asyncio.sleep(0)  # one loop turn, not a wait for time
    assert _read(r) == b"one\ntwo\n"
    writer.write("three")
    await asyncio.sleep(0)
    assert _read(r) == b"three\n"


@pytest.mark.no_blockbuster
async def test_a_full_batch_is_written_at_once(pipe: tuple[int, int]) -> None:
    r, w = pipe
    writer = LineWriter(w)
    for i in range(LineWriter.MAX_PENDING):
        writer.write(str(i))
    assert _read(r).count(b"\n") == LineWriter.MAX_PENDING


def test_outside_a_loop_a_line_is_written_at_once(pipe: tuple[int, int]) -> None:
    r, w = pipe
    LineWriter(w).write("alone")
    assert _read(r) == b"alone\n"


def test_a_closed_output_loses_lines_not_the_proxy(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(r)  # the reader went away: EPIPE (SIGPIPE is ignored by Python)
    LineWriter(w).write("lost")


@pytest.mark.no_blockbuster
async def test_emit_uses_the_writer_and_flush_empties_it(pipe: tuple[int, int]) -> None:
    r, w = pipe
    record = AccessRecord(1.8e9, None, "GET", "/", 200, 0, 0.5, "hit", None, None, None, "id")
    accesslog.write_to(w)
    try:
        accesslog.emit(record, "json")
        accesslog.emit(record, "combined")
        accesslog.flush()
        lines = _read(r).decode().splitlines()
    finally:
        accesslog.write_to(None)
    assert lines[0] == format_json(record)
    assert lines[1].startswith('- - - [15/Jan/2027:08:00:00 +0000] "GET / HTTP/1.1" 200 0')
