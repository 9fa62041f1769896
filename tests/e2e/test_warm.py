"""`edgeproxy warm` (issue #11) against the real proxy and the scripted origin.

cli.main runs in a worker thread (asyncio.to_thread), as in its own process,
with its own event loop; one test runs the real command in a subprocess with
URLs on its stdin.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edgeproxy import cli
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch

HOST = "shop.example"
CACHEABLE = {"Cache-Control": "max-age=600"}
NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def pages(origin: ScriptedOrigin, *paths: str) -> list[str]:
    """Script cacheable pages; their absolute URLs as a sitemap would list them."""
    for path in paths:
        origin.script(path, Reply(body=b"page " + path.encode(), headers=CACHEABLE))
    return [f"https://{HOST}{path}" for path in paths]


async def warm(
    capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None
) -> tuple[int, str, str]:
    """Run `edgeproxy warm ARGV` off the test's loop: (exit status, stdout, stderr)."""
    capsys.readouterr()
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)  # restored by pytest's capture
    code = await asyncio.to_thread(cli.main, ["warm", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_warm_from_a_file_then_hits_on_a_second_run(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    urls = pages(origin, "/", "/a", "/b?page=2")
    listing = tmp_path / "urls.txt"
    listing.write_text("# the home page and two more\n" + "\n\n".join(urls) + "\n")

    code, out, err = await warm(capsys, str(listing), "--proxy", proxy.url)
    assert code == 0, err
    assert out.startswith("warmed 3 URLs in ")
    assert out.rstrip().endswith(": 0 hits, 3 misses, 0 errors")
    # The progress bar (stderr) counts as it goes.
    assert "3/3" in err and "hit=0 miss=3 error=0" in err
    # Each URL reached the origin once, asked for as a client of its host would
    # (the edge names that host to the origin in X-Forwarded-Host).
    assert sorted(r.path_qs for r in origin.received) == ["/", "/a", "/b?page=2"]
    assert {r.headers["X-Forwarded-Host"] for r in origin.received} == {HOST}

    code, out, err = await warm(capsys, str(listing), "--proxy", proxy.url, "--no-progress")
    assert code == 0, err
    assert out.rstrip().endswith(": 3 hits, 0 misses, 0 errors")
    assert err == ""
    assert len(origin.received) == 3  # all answered from the cache
    got = await fetch(client, "GET", proxy.url + "/b?page=2", headers={"Host": HOST})
    assert got.headers["Cache-Status"].startswith("edgeproxy; hit")


async def test_without_proxy_the_urls_are_requested_as_they_are(
    proxy: Proxy, origin: ScriptedOrigin, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No --proxy: each URL goes where it points (here the edge's own address)."""
    pages(origin, "/d")
    listing = tmp_path / "urls.txt"
    listing.write_text(proxy.url + "/d\n")
    code, out, err = await warm(capsys, str(listing), "--no-progress")
    assert code == 0, err
    assert out.rstrip().endswith(": 0 hits, 1 miss, 0 errors")
    code, out, err = await warm(capsys, str(listing), "--no-progress")
    assert out.rstrip().endswith(": 1 hit, 0 misses, 0 errors")
    assert origin.hits("/d") == 1


async def test_warm_from_stdin_in_a_real_process(proxy: Proxy, origin: ScriptedOrigin) -> None:
    urls = pages(origin, "/x", "/y")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgeproxy",
        "warm",
        "-",
        "--proxy",
        proxy.url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate("\n".join(urls).encode()), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().rstrip().endswith(": 0 hits, 2 misses, 0 errors")
    assert b"2/2" in err  # tqdm's bar reached the end
    assert sorted(r.path_qs for r in origin.received) == ["/x", "/y"]


def sitemap_index(*locs: str) -> bytes:
    items = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0"?><sitemapindex {NS}>{items}</sitemapindex>'.encode()


def urlset(*locs: str) -> bytes:
    items = "".join(f"<url><loc>{loc.replace('&', '&amp;')}</loc></url>" for loc in locs)
    return f'<?xml version="1.0"?><urlset {NS}>{items}</urlset>'.encode()


async def test_warm_a_sitemap_index_and_its_sitemaps(
    proxy: Proxy, origin: ScriptedOrigin, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = pages(origin, "/docs/1", "/docs/2")
    shop = pages(origin, "/p?id=1&c=2", "/p?id=2")
    origin.script(
        "/sitemap.xml",
        Reply(body=sitemap_index(f"https://{HOST}/sitemap-docs.xml", f"http://{HOST}/shop.xml.gz")),
    )
    origin.script("/sitemap-docs.xml", Reply(body=urlset(*docs, shop[0])))
    # A gzipped sitemap file (not a Content-Encoding), as sites serve *.xml.gz.
    gz = gzip.compress(urlset(*shop, docs[1]))  # repeats are warmed once
    origin.script("/shop.xml.gz", Reply(body=gz, headers={"Content-Type": "application/gzip"}))

    code, out, err = await warm(
        capsys, "--sitemap", f"https://{HOST}/sitemap.xml", "--proxy", proxy.url
    )
    assert code == 0, err
    assert ": 0 hits, 4 misses, 0 errors" in out
    assert out.startswith("warmed 4 URLs in ")
    for path in ("/docs/1", "/docs/2", "/p", "/sitemap.xml", "/sitemap-docs.xml", "/shop.xml.gz"):
        assert origin.hits(path) == (2 if path == "/p" else 1), path
    assert sorted(r.path_qs for r in origin.received if r.path_qs.startswith("/p?")) == [
        "/p?id=1&c=2",
        "/p?id=2",
    ]


@pytest.mark.parametrize(
    ("sitemap", "reply", "message"),
    [
        pytest.param("/missing.xml", None, "HTTP 404", id="not-found"),
        pytest.param(
            "/bad.xml", Reply(body=b"<html>oops</html>"), "not a sitemap", id="not-a-sitemap"
        ),
        pytest.param(
            "/dtd.xml",
            Reply(body=b'<!DOCTYPE x [<!ENTITY a "b">]><urlset/>'),
            "DTD",
            id="dtd-refused",
        ),
    ],
)
async def test_warm_a_bad_sitemap_fails(
    proxy: Proxy,
    origin: ScriptedOrigin,
    capsys: pytest.CaptureFixture[str],
    sitemap: str,
    reply: Reply | None,
    message: str,
) -> None:
    if reply is not None:
        origin.script(sitemap, reply)
    code, out, err = await warm(
        capsys, "--sitemap", f"http://{HOST}{sitemap}", "--proxy", proxy.url
    )
    assert code == 1
    assert out == ""
    assert f"edgeproxy warm: sitemap http://{HOST}{sitemap}: " in err and message in err


async def test_failed_urls_exit_1_and_the_rest_are_warmed(
    proxy: Proxy,
    origin: ScriptedOrigin,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    good = pages(origin, "/ok")
    origin.script("/boom", Reply(status=500, body=b"down"))
    listing = tmp_path / "urls.txt"
    listing.write_text(
        "\n".join([*good, f"http://{HOST}/not-scripted", f"http://{HOST}/boom", "ftp://x/"])
    )
    code, out, err = await warm(capsys, str(listing), "--proxy", proxy.url, "--no-progress")
    assert code == 1
    assert out.rstrip().endswith(": 0 hits, 1 miss, 3 errors")
    assert f"error: http://{HOST}/not-scripted: HTTP 404" in err
    assert f"error: http://{HOST}/boom: HTTP 500" in err
    assert "error: ftp://x/: not an absolute http(s) URL" in err
    assert origin.hits("/ok") == 1


async def test_an_unreachable_edge_fails_every_url(
    origin: ScriptedOrigin, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.e2e.harness import closed_port_url

    listing = tmp_path / "urls.txt"
    listing.write_text(f"http://{HOST}/a\nhttp://{HOST}/b\n")
    code, out, err = await warm(capsys, str(listing), "--proxy", closed_port_url())
    assert code == 1
    assert ": 0 hits, 0 misses, 2 errors" in out
    assert err.count("error: http://shop.example/") == 2
    assert origin.received == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param([], "name a file of URLs", id="nothing-to-warm"),
        pytest.param(["-", "--rate", "0"], "--rate must be", id="zero-rate"),
        pytest.param(["-", "--rate", "nan"], "--rate must be", id="nan-rate"),
        pytest.param(["-", "--timeout", "-1"], "--timeout must be", id="negative-timeout"),
        pytest.param(["-", "-H", "NoColon"], "--header wants", id="bad-header"),
        pytest.param(["-", "--proxy", "127.0.0.1:8080"], "--proxy wants", id="proxy-no-scheme"),
        pytest.param(["--sitemap", "sitemap.xml"], "--sitemap wants", id="relative-sitemap"),
        pytest.param(["/no/such/file"], "No such file", id="missing-file"),
    ],
)
async def test_bad_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = await warm(capsys, *argv, stdin="")
    assert code == 2
    assert out == ""
    assert err.startswith("edgeproxy warm: ") and message in err


async def test_the_rate_limit_spaces_the_requests_the_origin_sees(
    proxy: Proxy, origin: ScriptedOrigin, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--rate R: by time `start + k/R` the origin has seen at most k+1 requests.

    Measured on the origin's own receive times (the loop's monotonic clock,
    the one the command's token bucket runs on). Each request leaves no
    earlier than its slot, start + k/R (burst 1), and delivery only adds
    delay, so the k-th arrival is never earlier than its slot: a bound that
    load on the machine cannot break, and that an unlimited run (all nine
    within a few ms) fails.
    """
    rate, n = 20.0, 9
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []

    def handler(path: str) -> Callable[[web.Request], object]:
        async def answer(request: web.Request) -> web.Response:
            arrivals.append(loop.time())
            return web.Response(body=path.encode(), headers=CACHEABLE)

        return answer

    for i in range(n):
        origin.script(f"/r/{i}", handler(f"/r/{i}"))  # type: ignore[arg-type]
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(f"http://{HOST}/r/{i}" for i in range(n)))

    start = loop.time()  # before the command creates its bucket
    code, _, err = await warm(
        capsys, str(listing), "--proxy", proxy.url, "--rate", str(rate), "--concurrency", "4"
    )
    assert code == 0, err
    assert len(arrivals) == n
    resolution = 1e-3  # asyncio may wake a timer a clock tick early
    for k, arrived in enumerate(sorted(arrivals)):
        assert arrived - start >= k / rate - resolution, (k, [t - start for t in arrivals])
