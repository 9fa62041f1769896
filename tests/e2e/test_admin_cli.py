"""`edgeproxy purge` and `edgeproxy entries` against a running admin listener.

cli.main runs in a worker thread (asyncio.to_thread), as it would in its own
process: it runs its own event loop there, off the test's loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from edgeproxy import cli
from edgeproxy.state import EDGE
from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, closed_port_url
from tests.e2e.test_admin_api import HOST, TOKEN, AdminAPI, admin_listener, fill, is_hit

ENV = "EDGEPROXY_ADMIN_TOKEN"
CACHEABLE = {"Cache-Control": "max-age=600", "ETag": '"v1"'}


@pytest.fixture
async def admin(
    proxy: Proxy, clock: FakeClock, client: aiohttp.ClientSession
) -> AsyncIterator[AdminAPI]:
    async with admin_listener(proxy, clock) as url:
        yield AdminAPI(url, client, proxy.app[EDGE])


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, TOKEN)


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI off the event loop; (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


async def store(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, *paths: str
) -> None:
    for path in paths:
        reply = Reply(body=b"stored " + path.encode(), headers=CACHEABLE)
        await fill(proxy, origin, client, path, reply=reply)


@pytest.mark.usefixtures("token_env")
@pytest.mark.parametrize(
    ("argv", "answer", "gone", "kept"),
    [
        pytest.param(
            [f"http://{HOST.upper()}/img/1"],
            {"purged": 1, "soft": False},
            ["/img/1"],
            ["/img/2", "/txt"],
            id="url",
        ),
        pytest.param(
            ["--prefix", f"http://{HOST}/img/"],
            {"purged": 2, "soft": False},
            ["/img/1", "/img/2"],
            ["/txt"],
            id="prefix",
        ),
        pytest.param(
            ["--all", "--host", HOST],
            {"purged": 3, "soft": False},
            ["/img/1", "/img/2", "/txt"],
            [],
            id="all-host",
        ),
        pytest.param(
            ["--all", "--host", "other.example"],
            {"purged": 0, "soft": False},
            [],
            ["/img/1", "/img/2", "/txt"],
            id="all-other-host",
        ),
        pytest.param(
            ["--prefix", f"http://{HOST}/img/", "--dry-run"],
            {"purged": 2, "soft": False, "dry_run": True},
            [],
            ["/img/1", "/img/2", "/txt"],
            id="dry-run",
        ),
        pytest.param(
            ["--tag", "no-such-tag", "--tag", "nor-this"],
            {"purged": 0, "soft": False},
            [],
            ["/img/1", "/img/2", "/txt"],
            id="tags",
        ),
    ],
)
async def test_purge_command(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    answer: dict[str, object],
    gone: list[str],
    kept: list[str],
) -> None:
    await store(proxy, origin, client, "/img/1", "/img/2", "/txt")
    rc, out, err = await run_cli(capsys, "purge", *argv, "--admin", admin.url)
    assert (rc, err) == (0, "")
    assert json.loads(out) == answer
    for path in kept:
        assert await is_hit(proxy, client, path)
    for path in gone:
        hits = origin.hits(path)
        assert not await is_hit(proxy, client, path)
        assert origin.hits(path) == hits + 1
        assert "If-None-Match" not in origin.last().headers


@pytest.mark.usefixtures("token_env")
async def test_soft_purge_command(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await store(proxy, origin, client, "/img/1")
    rc, out, _ = await run_cli(
        capsys, "purge", "--prefix", f"http://{HOST}/", "--soft", "--admin", admin.url
    )
    assert (rc, json.loads(out)) == (0, {"purged": 1, "soft": True})
    origin.script("/img/1", Reply(status=304, headers=CACHEABLE))
    assert not await is_hit(proxy, client, "/img/1")
    assert origin.last().headers["If-None-Match"] == '"v1"'  # revalidated, not refetched


@pytest.mark.usefixtures("token_env")
async def test_entries_command(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await store(proxy, origin, client, "/img/1", "/img/2", "/txt")
    clock.advance(100)
    rc, out, err = await run_cli(
        capsys, "entries", "--prefix", f"http://{HOST}/img/", "--admin", admin.url
    )
    assert (rc, err) == (0, "")
    lines = [line.split() for line in out.splitlines()]
    assert lines == [
        ["STATUS", "AGE", "TTL", "SIZE", "FLAGS", "URL", "VARY", "TAGS"],
        ["200", "100", "500", "13", "-", f"http://{HOST}/img/1", "-", "-"],
        ["200", "100", "500", "13", "-", f"http://{HOST}/img/2", "-", "-"],
        ["2", "entries"],
    ]
    rc, out, _ = await run_cli(capsys, "entries", "--limit", "1", "--json", "--admin", admin.url)
    assert rc == 0
    raw = json.loads(out)
    assert (raw["count"], raw["truncated"]) == (1, True)
    assert raw["entries"][0]["url"] == f"http://{HOST}/img/1"


async def test_config_file_gives_address_and_token(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    await store(proxy, origin, client, "/a")
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    port = admin.url.rsplit(":", 1)[1]
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"admin:\n  listen: 127.0.0.1:{port}\n  token_file: {token_file}\n")
    rc, out, err = await run_cli(capsys, "purge", f"http://{HOST}/a", "--config", str(cfg))
    assert (rc, err, json.loads(out)) == (0, "", {"purged": 1, "soft": False})
    assert not await is_hit(proxy, client, "/a")


async def test_config_names_the_token_variable(
    admin: AdminAPI,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("EDGE_TOKEN", TOKEN)
    port = admin.url.rsplit(":", 1)[1]
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"admin:\n  listen: 127.0.0.1:{port}\n  token_env: EDGE_TOKEN\n")
    rc, out, err = await run_cli(capsys, "entries", "--json", "--config", str(cfg))
    assert (rc, err) == (0, "")
    assert json.loads(out)["entries"] == []


# -- failures: a clear line on stderr, a non-zero status, nothing done --------------------


def one_line(err: str) -> str:
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("token", "words"),
    [
        pytest.param(
            "wrong", "HTTP 401: missing or invalid bearer token (the admin token is wrong"
        ),
        pytest.param(None, "(the admin token is not set", id="unset"),
    ],
)
async def test_refused_token(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    token: str | None,
    words: str,
) -> None:
    if token is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, token)
    await store(proxy, origin, client, "/a")
    for argv in (["purge", "--all"], ["entries"]):
        rc, out, err = await run_cli(capsys, *argv, "--admin", admin.url)
        assert (rc, out) == (1, "")
        assert words in one_line(err)
        assert err.startswith(f"edgeproxy {argv[0]}: ")
    assert await is_hit(proxy, client, "/a")


@pytest.mark.usefixtures("token_env")
@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["purge", "/a"], "HTTP 400: \"url\" '/a': expected an absolute http(s) URL"),
        (["purge", "--prefix", f"http://{HOST}"], 'HTTP 400: "prefix"'),
        (["purge", "--tag", "a b"], "no spaces or commas"),
        (["purge", "--all", "--host", "http://x/"], "no scheme or path"),
    ],
)
async def test_rejected_request(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin: AdminAPI,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    words: str,
) -> None:
    await store(proxy, origin, client, "/a")
    rc, out, err = await run_cli(capsys, *argv, "--admin", admin.url)
    assert (rc, out) == (1, "")
    assert words in one_line(err)
    assert await is_hit(proxy, client, "/a")


@pytest.mark.usefixtures("token_env")
@pytest.mark.parametrize("argv", [["purge", "--all"], ["entries"]])
async def test_connection_refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    url = closed_port_url()
    rc, out, err = await run_cli(capsys, *argv, "--admin", url)
    assert (rc, out) == (1, "")
    assert f"cannot connect to the admin API at {url}: connection refused" in one_line(err)


@pytest.mark.usefixtures("token_env")
async def test_not_an_admin_api(origin: ScriptedOrigin, capsys: pytest.CaptureFixture[str]) -> None:
    # Pointed at something else (here the origin): its answer, on one line.
    assert origin.server is not None
    rc, _, err = await run_cli(
        capsys, "purge", "--all", "--admin", f"http://127.0.0.1:{origin.server.port}"
    )
    assert rc == 1
    assert "HTTP 404: not scripted" in one_line(err)
