"""The hot tier's charge against `cache.memory_size` is the memory it really
holds: measured with tracemalloc as what clearing the tier gives back, after
real misses and hits (wire path) through a real proxy and origin.

Its constants (store/memory.py) were calibrated this way; this holds them
there, so that `memory_size` stays a bound on memory and not only on bytes
of bodies and fields (it once charged a quarter of what small objects cost).
"""

from __future__ import annotations

import gc
import tracemalloc

import aiohttp
import pytest

from edgeproxy.state import EDGE
from edgeproxy.store.tiered import TieredStore
from tests.e2e.conftest import MakeProxy
from tests.e2e.harness import Reply, ScriptedOrigin

KEYS = 200


@pytest.mark.parametrize(
    ("extra_fields", "hits"),
    # A key's first hit reads the disk and brings its list and body into
    # memory (a commit leaves a new key out); the second is served from
    # memory and keeps the head templates it built.
    [(0, 1), (0, 2), (12, 2), (12, 1)],
    ids=["read-once", "hit", "hit-many-fields", "read-once-many-fields"],
)
async def test_the_charge_covers_what_the_tier_holds(
    make_proxy: MakeProxy, origin: ScriptedOrigin, extra_fields: int, hits: int
) -> None:
    assert origin.server is not None
    headers = {"Cache-Control": "max-age=600", "ETag": '"v1"', "Content-Type": "text/plain"}
    headers |= {f"X-Extra-{i}": f"a field value of some length {i}" for i in range(extra_fields)}
    origin.script("/o", Reply(body=b"x" * 1024, headers=headers))
    proxy = await make_proxy(f"http://127.0.0.1:{origin.server.port}")
    store = proxy.app[EDGE].store
    assert isinstance(store, TieredStore)
    tier = store._mem
    gc.collect()
    tracemalloc.start()  # before the fill: only what is traced can be seen freed
    try:
        async with aiohttp.ClientSession() as s:
            for i in range(KEYS):
                for _ in range(1 + hits):
                    async with s.get(f"{proxy.url}/o?k={i}") as r:
                        assert r.status == 200
                        await r.read()
        assert len(tier) == KEYS
        charged = tier.nbytes
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        tier.clear()
        gc.collect()
        freed = before - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    ratio = charged / freed
    assert 0.9 <= ratio <= 1.5, (charged / KEYS, freed / KEYS)
