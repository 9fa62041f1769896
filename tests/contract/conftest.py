from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgeproxy.store.base import Store
from tests.contract.kits import KITS, StoreKit


@pytest.fixture(params=KITS, ids=lambda k: str(k.name))
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKit:
    kit: StoreKit = request.param(tmp_path)
    return kit


@pytest.fixture
async def store(kit: StoreKit) -> AsyncIterator[Store]:
    s = await kit.open()
    yield s
    await s.close()
