"""One kit per Store implementation: how to open it, restart it and damage it.

The contract suite (tests/contract) runs every test against every kit in
KITS. A new implementation (say an in-memory hot tier) joins by adding a kit:
`damage_body` / `corrupt_index` return False where a kind of damage can't
happen to it (the test is then skipped, not passed), and `persistent=False`
skips the restart tests.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Literal, Protocol

from edgeproxy.policy.entry import Entry
from edgeproxy.store.base import Store
from edgeproxy.store.disk import BODY, DiskStore
from edgeproxy.store.tiered import TieredStore

Damage = Literal["truncate", "remove"]
SPILL = 64 * 1024  # the disk kit's writer spills to a temp file past this


class StoreKit(Protocol):
    name: str
    persistent: bool

    async def open(self, *, size_limit: int | None = None) -> Store:
        """A store over this kit's place; opening again after close reopens it."""
        ...

    async def damage_body(self, entry: Entry, how: Damage) -> bool: ...

    async def corrupt_index(self, entry: Entry, raw: str) -> bool:
        """Overwrite the entry's stored metadata with `raw` (unreadable)."""
        ...

    def leftovers(self) -> list[str]:
        """Temporary files a writer left behind."""
        ...


class DiskKit:
    name = "disk"
    persistent = True

    def __init__(self, root: Path) -> None:
        self.directory = root / "cache"

    async def open(self, *, size_limit: int | None = None) -> Store:
        return await DiskStore.open(
            str(self.directory),
            size_limit=size_limit or (1 << 30),
            spill_threshold=SPILL,
            threads=2,
        )

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.directory / "cache.db", timeout=10, isolation_level=None)

    async def damage_body(self, entry: Entry, how: Damage) -> bool:
        def damage() -> bool:
            con = self._db()
            try:
                row = con.execute(
                    "SELECT filename FROM Cache WHERE key = ?", (BODY + entry.variant,)
                ).fetchone()
                assert row is not None, "no body to damage"
                (filename,) = row
                if filename is None:  # inline in SQLite
                    if how == "remove":
                        return False  # no file to lose
                    con.execute(
                        "UPDATE Cache SET value = substr(value, 2) WHERE key = ?",
                        (BODY + entry.variant,),
                    )
                    return True
                path = self.directory / filename
                if how == "remove":
                    os.unlink(path)
                else:
                    os.truncate(path, entry.body_size - 1)
                return True
            finally:
                con.close()

        return await asyncio.to_thread(damage)

    async def corrupt_index(self, entry: Entry, raw: str) -> bool:
        def corrupt() -> bool:
            con = self._db()
            try:
                n = con.execute(
                    "UPDATE edge_variants SET meta = ? WHERE variant = ?", (raw, entry.variant)
                ).rowcount
                return bool(n)
            finally:
                con.close()

        return await asyncio.to_thread(corrupt)

    def leftovers(self) -> list[str]:
        tmp = self.directory / "tmp"
        return sorted(os.listdir(tmp)) if tmp.exists() else []


class TieredKit(DiskKit):
    """TieredStore over a DiskKit directory. Bodies up to MEMORY_OBJECT are
    kept in memory (the suite's small and mid sizes; its large ones stay on
    disk), and MEMORY_BYTES is small enough that the eviction test also
    evicts from memory.

    Damage happens to the disk copy; a hot copy in memory is a copy damage
    can't reach, so the kit drops this process's hot tier as well (as a
    restart or a memory eviction would): the store must then find the
    damage through the tier. tests/unit/store/test_memory_tiered.py covers the
    hot copy itself.
    """

    name = "tiered"
    persistent = True
    MEMORY_BYTES = 512 * 1024
    MEMORY_OBJECT = 48 * 1024

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.store: TieredStore | None = None

    async def open(self, *, size_limit: int | None = None) -> Store:
        disk = await super().open(size_limit=size_limit)
        assert isinstance(disk, DiskStore)
        self.store = await TieredStore.open(
            disk, max_bytes=self.MEMORY_BYTES, max_object=self.MEMORY_OBJECT
        )
        return self.store

    def _cold(self) -> None:
        if self.store is not None:
            self.store.drop_memory()

    async def damage_body(self, entry: Entry, how: Damage) -> bool:
        done = await super().damage_body(entry, how)
        self._cold()
        return done

    async def corrupt_index(self, entry: Entry, raw: str) -> bool:
        done = await super().corrupt_index(entry, raw)
        self._cold()
        return done


KITS: list[type[DiskKit]] = [DiskKit, TieredKit]
