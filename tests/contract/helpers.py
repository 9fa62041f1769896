"""Building and reading back entries through the Store protocol only."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.policy.entry import Entry
from edgeproxy.store.base import Store

T0 = 1_800_000_000.0  # the FakeClock's start


def make_entry(
    key: str,
    *,
    request_time: float = T0,
    tags: tuple[str, ...] = (),
    vary: tuple[str, ...] = (),
    secondary: tuple[str | None, ...] = (),
    fields: dict[str, str] | None = None,
) -> Entry:
    headers = CIMultiDict(fields or {"Cache-Control": "max-age=60", "ETag": '"v1"'})
    return Entry(
        key=key,
        status=200,
        fields=CIMultiDictProxy(headers),
        request_time=request_time,
        response_time=request_time + 0.5,
        vary=vary,
        secondary=secondary,
        tags=tags,
        route="default",
    )


def body_of(size: int, seed: int = 0) -> bytes:
    """Bytes whose content shows truncation or mix-ups, not just length."""
    return bytes((i * 31 + seed) % 251 for i in range(size))


async def put(store: Store, entry: Entry, body: bytes = b"hello", chunk: int = 16 * 1024) -> Entry:
    """Stream `body` through a writer and commit `entry` with it."""
    writer = store.open_writer(entry.key)
    for i in range(0, len(body), chunk):
        await writer.write(body[i : i + chunk])
    assert writer.size == len(body)
    return await writer.commit(entry)


async def read(store: Store, entry: Entry) -> bytes | None:
    body = await store.open_body(entry)
    if body is None:
        return None
    out = bytearray()
    async for chunk in store.read_body(body, 8192):
        out += chunk
    assert len(out) == body.size
    return bytes(out)


async def variants(store: Store, key: str) -> set[str]:
    return {e.variant for e in await store.lookup(key)}
