"""Stored metadata: JSON round trip, and corrupt input always CorruptEntry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.policy.entry import FORMAT_VERSION, CorruptEntry, Entry, entry_from_json
from tests.unit.policy.helpers import T0, make_entry

FULL = make_entry(
    [
        ("Cache-Control", "max-age=60"),
        ("ETag", '"a"'),
        ("Set-Cookie", "a=1"),
        ("set-cookie", "b=2"),  # repeated, case kept
        ("Vary", "Accept-Encoding, Accept-Language"),
        ("X-Unicode", "caf\u00e9 \u2603"),
    ],
    status=404,
    request_time=T0 - 0.25,
    response_time=T0 + 0.5,
    request={"Accept-Encoding": "gzip"},  # Accept-Language absent -> None in the key
    body_size=1234,
    tags=("a", "b"),
    route="static",
    soft_purged=True,
    variant="v1",
)


def test_round_trip_every_field() -> None:
    back = entry_from_json(FULL.to_json())
    assert back == FULL
    assert back.targeted == FULL.targeted  # not part of ==, so checked on its own
    assert list(back.fields.items()) == list(FULL.fields.items())  # order and case kept
    assert back.secondary == ("gzip", None)


def test_round_trip_minimal() -> None:
    entry = Entry(key="k", status=200, fields=make_entry(date=None).fields, request_time=0,
                  response_time=0)  # fmt: skip
    assert entry_from_json(entry.to_json()) == entry


def test_old_entries_without_targeted_still_load() -> None:
    d = FULL.to_dict()
    del d["targeted"]
    assert entry_from_json(json.dumps(d).encode()).targeted == ()


def _with(**changes: Any) -> bytes:
    d = FULL.to_dict()
    d.update(changes)
    return json.dumps(d).encode()


def _without(name: str) -> bytes:
    d = FULL.to_dict()
    del d[name]
    return json.dumps(d).encode()


# fmt: off
CORRUPT: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("truncated", FULL.to_json()[:-1]),
    ("not-utf8", b"\xff\xfe\x00{"),
    ("not-an-object", b"[]"),
    ("null", b"null"),
    ("number", b"1"),
    ("string", b'"entry"'),
    ("deeply-nested", b"[" * 100_000),
    ("huge-integer-text", b'{"v": ' + b"9" * 5000 + b"}"),
    # Wrong version: a newer or older format is a miss, not a guess.
    ("version-missing", _without("v")),
    ("version-2", _with(v=FORMAT_VERSION + 1)),
    ("version-0", _with(v=0)),
    ("version-as-string", _with(v=str(FORMAT_VERSION))),
    ("version-as-bool", _with(v=True)),
    ("version-as-float", _with(v=float(FORMAT_VERSION))),
    # Missing or mistyped members.
    ("key-missing", _without("key")),
    ("fields-missing", _without("fields")),
    ("response-time-missing", _without("response_time")),
    ("key-not-string", _with(key=5)),
    ("status-string", _with(status="200")),
    ("status-float", _with(status=200.0)),
    ("status-bool", _with(status=True)),
    ("status-out-of-range", _with(status=0)),
    ("status-too-big", _with(status=1000)),
    ("fields-not-list", _with(fields={"a": "b"})),
    ("fields-string", _with(fields="ab")),
    ("field-triple", _with(fields=[["a", "b", "c"]])),
    ("field-string-pair", _with(fields=["ab"])),
    ("field-value-number", _with(fields=[["age", 5]])),
    ("time-string", _with(request_time="now")),
    ("time-null", _with(response_time=None)),
    ("time-bool", _with(response_time=True)),
    ("time-nan", _with(response_time=float("nan"))),
    ("time-infinite", _with(request_time=float("inf"))),
    ("time-int-past-float", _with(request_time=10**400)),
    ("vary-string", _with(vary="accept")),
    ("secondary-number", _with(secondary=[1])),
    ("body-size-negative", _with(body_size=-1)),
    ("body-size-float", _with(body_size=1.5)),
    ("tags-null", _with(tags=None)),
    ("route-number", _with(route=1)),
    ("soft-purged-string", _with(soft_purged="false")),
    ("variant-null", _with(variant=None)),
    ("targeted-string", _with(targeted="cdn-cache-control")),
]
# fmt: on


@pytest.mark.parametrize("data", [pytest.param(d, id=i) for i, d in CORRUPT])
def test_corrupt_entry(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        entry_from_json(data)


def _outcome(data: bytes) -> Entry | None:
    try:
        return entry_from_json(data)
    except CorruptEntry:
        return None  # anything else propagates and fails the property


@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes: an Entry or CorruptEntry, never another exception."""
    _outcome(data)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: json writes them
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=4),
    max_leaves=12,
)  # fmt: skip
MEMBERS = sorted(FULL.to_dict())


@given(st.data())
def test_valid_entry_with_members_replaced(data: st.DataObject) -> None:
    """A real entry with some members swapped for arbitrary JSON, or removed."""
    d = FULL.to_dict()
    for name in data.draw(st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=3)):
        if data.draw(st.booleans()):
            d[name] = data.draw(JSON)
        else:
            d.pop(name, None)
    entry = _outcome(json.dumps(d).encode())
    if entry is not None:
        # Whatever loads is well-formed enough for the policy to use.
        assert 100 <= entry.status <= 599 and entry.body_size >= 0
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in entry.fields.items())


@given(JSON)
def test_arbitrary_json_documents(doc: Any) -> None:
    _outcome(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"response_time": T0 + 5},
        {"key": "http://b/", "variant": "v2", "body_size": 9},
        {"soft_purged": True, "tags": ("t",)},
        {"targeted": ("cdn-cache-control",), "coding": "gzip"},
    ],
)
def test_with_changes_is_dataclasses_replace_with_memos_unset(changes: dict[str, Any]) -> None:
    import dataclasses

    e = make_entry()
    _ = (e.cache_control, e.date, e.field_lines)  # memoised on the original
    new = e.with_changes(**changes)
    assert new == dataclasses.replace(e, **changes)
    assert all(
        getattr(new, f.name) == getattr(dataclasses.replace(e, **changes), f.name)
        for f in dataclasses.fields(Entry)
        if f.init
    )
    assert (new._cc, new._date, new._initial_age, new._lifetime) == (None, None, None, None)
    assert new._lines is None


@given(st.lists(st.tuples(st.text(), st.text()), max_size=8))
def test_field_lines_count_the_lines_and_their_characters(lines: list[tuple[str, str]]) -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    e = make_entry().with_changes(fields=CIMultiDictProxy(CIMultiDict(lines)))
    expected = (len(lines), sum(len(k) + len(v) for k, v in lines))
    assert e.field_lines == expected
    assert e.field_lines == expected  # the memo answers the same


def test_with_changes_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError):
        make_entry().with_changes(colour="red")
