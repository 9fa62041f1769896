"""`prefix_end`: a prefix as an index range, exact in SQLite's BINARY order."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.store.disk import prefix_end

# Keys are ASCII URLs in practice; the property holds for any text.
texts = st.text(max_size=12)  # no surrogates: UTF-8 (and SQLite) can't hold them
near = st.text(alphabet="ab/\x7f\u00e9\ud7ff\ue000\U0010ffff", max_size=6)


def in_range(key: str, prefix: str) -> bool:
    end = prefix_end(prefix)
    return prefix <= key and (end is None or key < end)


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        ("", None),
        ("http://a/", "http://a0"),
        ("a\U0010ffff", "b"),  # the last code point can't grow: carry
        ("\U0010ffff", None),
        ("a\ud7ff", "a\ue000"),  # skip the surrogates, which UTF-8 can't hold
    ],
)
def test_prefix_end_table(prefix: str, end: str | None) -> None:
    assert prefix_end(prefix) == end


@given(prefix=near, rest=near, other=near)
def test_range_is_exactly_startswith(prefix: str, rest: str, other: str) -> None:
    assert in_range(prefix + rest, prefix)
    assert in_range(other, prefix) == other.startswith(prefix)


@given(prefix=texts | near, keys=st.lists(texts | near, max_size=8))
def test_sqlite_agrees(prefix: str, keys: list[str]) -> None:
    # SQLite's TEXT order is memcmp on UTF-8: the same as code point order.
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE TABLE k (key TEXT)")
        con.executemany("INSERT INTO k VALUES (?)", [(k,) for k in keys])
        end = prefix_end(prefix)
        if end is None:
            rows = con.execute("SELECT key FROM k WHERE key >= ?", (prefix,))
        else:
            rows = con.execute("SELECT key FROM k WHERE key >= ? AND key < ?", (prefix, end))
        assert sorted(k for (k,) in rows) == sorted(k for k in keys if k.startswith(prefix))
    finally:
        con.close()
