"""The sans-IO core stays pure (design.md "Import rules worth enforcing mechanically")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "edgeproxy"
PURE = [
    *sorted((PKG / "http").glob("*.py")),
    *sorted((PKG / "policy").glob("*.py")),
    PKG / "cachekey.py",
    PKG / "purge.py",
    PKG / "ratelimit.py",
    PKG / "routing.py",
    PKG / "forwarding.py",
    PKG / "pool.py",
    PKG / "store" / "base.py",
]
BANNED_IN_PURE = {"aiohttp", "diskcache", "asyncio", "yaml", "time", "socket", "os"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PKG)))
def test_pure_modules_do_no_io(path: Path) -> None:
    assert not imported_roots(path) & BANNED_IN_PURE


@pytest.mark.parametrize(
    ("library", "allowed"),
    [("yaml", {"config.py"}), ("diskcache", {"store/disk.py"})],
)
def test_library_confined_to_its_adapter(library: str, allowed: set[str]) -> None:
    users = {str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if library in imported_roots(p)}
    assert users <= allowed
