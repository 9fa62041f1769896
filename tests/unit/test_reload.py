"""Reloader: validate first, swap atomically, keep the old config on errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgeproxy.config import Config, load_config
from edgeproxy.reload import Reloader
from tests.conftest import FakeClock

GOOD_A = "listen: 127.0.0.1:8080\norigins: {a: http://127.0.0.1:1}\n"
GOOD_B = "listen: 127.0.0.1:8080\norigins: {b: http://127.0.0.1:2}\n"
BAD = "listen: 127.0.0.1:8080\norigins: {a: ftp://nope}\n"


async def make(tmp_path: Path, text: str, clock: FakeClock) -> tuple[Reloader, list[Config], Path]:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    applied: list[Config] = []
    initial = await asyncio.to_thread(load_config, str(path))  # file I/O off the loop
    reloader = Reloader(initial, lambda: load_config(str(path)), applied.append, clock)
    return reloader, applied, path


async def test_valid_edit_swaps_and_bumps_version(tmp_path: Path, clock: FakeClock) -> None:
    reloader, applied, path = await make(tmp_path, GOOD_A, clock)
    path.write_text(GOOD_B)
    clock.advance(5)
    assert await reloader.reload("SIGHUP") is True
    assert list(applied[-1].origins) == ["b"]
    assert reloader.status.version == 2
    assert reloader.status.trigger == "SIGHUP"
    assert reloader.status.loaded_at == clock.now
    assert reloader.status.last_error is None


async def test_invalid_edit_keeps_old_config_and_reports(tmp_path: Path, clock: FakeClock) -> None:
    reloader, applied, path = await make(tmp_path, GOOD_A, clock)
    path.write_text(BAD)
    assert await reloader.reload("admin") is False
    assert applied == []
    assert list(reloader.config.origins) == ["a"]
    assert reloader.status.version == 1
    assert reloader.status.last_error is not None
    assert reloader.status.last_error[0].startswith(f"{path}:2 origins.a:")
    # The next good edit clears the error.
    path.write_text(GOOD_B)
    assert await reloader.reload("admin") is True
    assert reloader.status.last_error is None


async def test_bound_settings_need_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    reloader, applied, path = await make(tmp_path, GOOD_A, clock)
    path.write_text(GOOD_B.replace("8080", "9999") + "cache: {dir: /elsewhere}\n")
    assert await reloader.reload("SIGHUP") is True
    assert str(applied[-1].listen) == "127.0.0.1:8080"  # the listener can't move live
    assert applied[-1].cache.directory == "./cache"
    assert list(applied[-1].origins) == ["b"]  # everything else did change
    assert len(reloader.status.restart_needed) == 2


async def test_without_a_file_reload_is_refused(clock: FakeClock) -> None:
    reloader = Reloader(Config(), None, lambda c: None, clock)
    assert await reloader.reload("SIGHUP") is False
    assert reloader.status.last_error == ["no config file: started without --config"]


async def test_watch_reloads_on_file_change(tmp_path: Path, clock: FakeClock) -> None:
    reloader, applied, path = await make(tmp_path, GOOD_A, clock)
    task = asyncio.create_task(reloader.watch(str(path), interval=0.02, debounce=0.02))
    try:
        await asyncio.sleep(0.05)
        path.write_text(GOOD_B)
        for _ in range(200):  # bounded: at most ~2 s
            if applied:
                break
            await asyncio.sleep(0.01)
        assert applied and list(applied[-1].origins) == ["b"]
        assert reloader.status.trigger == "file change"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
