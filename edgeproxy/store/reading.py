"""A stored body's bytes, as the store's readers get them.

Its own module, kept plain: mypyc (edgeproxy/compiled.py) compiles no
async generators, and disk.py is compiled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from edgeproxy.store.base import Body


async def read_body(
    run: Callable[..., Awaitable[Any]], body: Body, chunk_size: int
) -> AsyncIterator[bytes]:
    """The body's chunks: in memory, as is; from its file, read on a pool
    thread (`run`), and the file closed there when the reader is done or
    stops early (the generator's close)."""
    if body.data is not None:
        if body.data:
            yield body.data
        return
    assert body.file is not None
    f = body.file
    try:
        while True:
            chunk: bytes = await run(f.read, chunk_size)
            if not chunk:
                return
            yield chunk
    finally:
        await run(f.close)
