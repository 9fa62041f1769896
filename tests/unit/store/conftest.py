"""Fixtures the store's unit tests share."""

from __future__ import annotations

import fcntl

import pytest


@pytest.fixture
def flocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The flock operations made from now on (the calls still go through)."""
    ops: list[int] = []
    real = fcntl.flock

    def counting(fd: int, op: int) -> None:
        ops.append(op)
        real(fd, op)

    monkeypatch.setattr(fcntl, "flock", counting)
    return ops
