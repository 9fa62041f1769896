"""MemoryTier (store/memory.py): the hot tier's LRU, bounded in bytes."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgeproxy.policy.entry import Entry
from edgeproxy.store.generation import key_hash
from edgeproxy.store.memory import MemoryTier, built_size, key_charge, metadata_size
from tests.contract.helpers import make_entry

URL = "http://a.example/"


def listed(key: str, *variants: str) -> list[Entry]:
    return [
        make_entry(key, vary=("x",), secondary=(v,)).with_changes(variant=v, body_size=10)
        for v in variants
    ]


def hot(tier: MemoryTier, key: str, size: int, variant: str = "v") -> None:
    tier.put_entries(key, key_hash(key), listed(key, variant))
    assert tier.put_body(key, key_hash(key), variant, b"x" * size) is not None


def meta(key: str) -> int:
    return metadata_size(key, listed(key, "v"))


def test_lru_is_bounded_by_bytes_and_evicts_least_recent() -> None:
    keys = [f"{URL}{i}" for i in range(4)]
    per_key = key_charge(meta(keys[0]), [1000])
    tier = MemoryTier(max_bytes=3 * per_key, max_object=1000)
    for key in keys[:3]:
        hot(tier, key, 1000)
    assert tier.nbytes == 3 * per_key
    assert tier.entries(keys[0]) is not None  # a hit makes it the most recent
    hot(tier, keys[3], 1000)  # one too many: the least recent (keys[1]) goes
    assert [k in tier for k in keys] == [True, False, True, True]
    assert tier.nbytes == 3 * per_key <= tier.max_bytes
    assert tier.body(keys[1], "v") is None


def test_a_key_bigger_than_the_whole_tier_is_not_kept() -> None:
    tier = MemoryTier(max_bytes=100, max_object=1000)
    tier.put_entries(URL, key_hash(URL), listed(URL, "v"))
    assert URL not in tier
    assert tier.nbytes == 0


def test_bodies_above_max_object_are_never_kept() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object=100)
    tier.put_entries(URL, key_hash(URL), listed(URL, "a", "b"))
    assert tier.put_body(URL, key_hash(URL), "a", b"x" * 101) is None
    kept = tier.put_body(URL, key_hash(URL), "b", b"y" * 100)
    assert kept is not None and kept.data == b"y" * 100 and kept.size == 100
    assert tier.body(URL, "a") is None
    assert tier.body(URL, "b") is kept  # every hit gets the same Body: no copy
    assert tier.nbodies == 1


def test_a_body_of_a_variant_the_list_does_not_name_is_refused() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object=100)
    tier.put_entries(URL, key_hash(URL), listed(URL, "a"))
    assert tier.put_body(URL, key_hash(URL), "gone", b"x") is None
    # With no list yet (after a commit), any variant's body may wait for it.
    assert tier.put_body(URL + "2", key_hash(URL + "2"), "new", b"x") is not None
    assert tier.entries(URL + "2") is None  # no list: the caller asks the disk


def test_a_new_list_drops_bodies_of_variants_it_no_longer_names() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object=100)
    tier.put_entries(URL, key_hash(URL), listed(URL, "a", "b"))
    tier.put_body(URL, key_hash(URL), "a", b"aa")
    tier.put_body(URL, key_hash(URL), "b", b"bb")
    tier.put_entries(URL, key_hash(URL), listed(URL, "b", "c"))
    assert tier.body(URL, "a") is None
    assert tier.body(URL, "b") is not None
    assert tier.nbodies == 1
    assert tier.nbytes == key_charge(metadata_size(URL, listed(URL, "b", "c")), [2])


def test_drop_hash_takes_a_url_and_its_extras_keys_only() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object=100)
    for key in (URL, URL + "#lang=fr", URL + "x"):
        hot(tier, key, 10)
    tier.drop_hash(key_hash(URL))
    assert [k in tier for k in (URL, URL + "#lang=fr", URL + "x")] == [False, False, True]
    assert tier.nbytes == key_charge(meta(URL + "x"), [10])


def test_lookup_returns_a_copy_of_the_list() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object=100)
    tier.put_entries(URL, key_hash(URL), listed(URL, "a"))
    got = tier.entries(URL)
    assert got is not None
    got.clear()
    assert [e.variant for e in tier.entries(URL) or []] == ["a"]


def test_prebuilt_is_kept_with_the_listed_entry_until_it_changes() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object=100)
    tier.put_entries(URL, key_hash(URL), listed(URL, "a"))
    [entry] = tier.entries(URL) or []
    calls: list[str] = []

    def build(e: Entry) -> tuple[tuple[str, str], ...]:
        calls.append(e.variant)
        return tuple(e.fields.items())

    first = tier.prebuilt(entry, build)
    assert tier.prebuilt(entry, build) is first
    assert calls == ["a"]
    merged = entry.with_changes(response_time=entry.response_time + 1)  # not the listed one
    tier.prebuilt(merged, build)
    tier.prebuilt(merged, build)
    assert calls == ["a", "a", "a"]
    tier.put_entries(URL, key_hash(URL), [merged])  # the list changed: built again
    tier.prebuilt(merged, build)
    assert calls == ["a", "a", "a", "a"]


# Whatever is put, touched or dropped, the byte tally matches what is held
# and never passes the bound.
OPS = st.lists(
    st.tuples(
        st.sampled_from(["entries", "body", "touch", "build", "refresh", "drop", "drop_hash"]),
        st.integers(0, 5),  # which key
        st.integers(0, 2),  # which variant
        st.integers(0, 300),  # body size
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(0, 40_000))
@example([("entries", 0, 1, 0), ("build", 0, 1, 0), ("refresh", 0, 1, 7)], 40_000)
def test_the_tally_matches_what_is_held(
    ops: list[tuple[str, int, int, int]], max_bytes: int
) -> None:
    tier = MemoryTier(max_bytes=max_bytes, max_object=200)
    for op, k, v, size in ops:
        key = f"{URL}{k}" + ("#e" if k == 5 else "")
        h = key_hash(key)
        if op == "entries":
            tier.put_entries(key, h, listed(key, *(str(i) for i in range(v + 1))))
        elif op == "body":
            tier.put_body(key, h, str(v), b"x" * size)
        elif op == "touch":
            tier.entries(key)
        elif op == "build":  # a hit's head templates, kept (and charged) once
            found = tier.listed(key)
            for entry in found or listed(key, str(v)):
                if entry.variant == str(v):
                    tier.prebuilt(entry, lambda e: [e.variant])
        elif op == "refresh":  # a 304: the variant's entry replaced, its body kept
            before = tier.body(key, str(v))
            fresh = listed(key, str(v))[0].with_changes(request_time=float(size))
            if tier.refresh(key, fresh):
                assert fresh in (tier.listed(key) or [])
                assert tier.body(key, str(v)) is before
        elif op == "drop":
            tier.drop_key(key)
        else:
            tier.drop_hash(h)
        held = tier._keys.values()
        assert tier.nbytes <= max_bytes
        assert tier.nbytes == sum(
            key_charge(x.meta_bytes + x.built_bytes, (b.size for b in x.bodies.values()))
            for x in held
        )
        assert all(x.built_bytes == sum(built_size(b[2]) for b in x.built.values()) for x in held)
        assert tier.nbodies == sum(len(x.bodies) for x in held)
        assert all(b.size <= 200 for x in held for b in x.bodies.values())
        assert {k for ks in tier._by_hash.values() for k in ks} == set(tier._keys)
