"""The operator dashboard (issue #11): the page on the admin listener, in a real
headless chromium driven by Playwright, against the real proxy, the real admin
app and the scripted origin.

The browser tests skip (saying why) only when no chromium can be found:
scripts/test installs Debian's package when it is missing (ensure_chromium).
The page's HTTP contract (open page, CSP, token-protected data) is tested
without a browser, so it runs everywhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgeproxy.dashboard import CSP, PAGE_PATHS
from edgeproxy.state import EDGE
from tests.conftest import FakeClock
from tests.e2e.harness import Proxy, Reply, ScriptedOrigin, fetch
from tests.e2e.test_admin_api import HOST, TOKEN, AdminAPI, admin_listener, fill

CACHEABLE = {"Cache-Control": "max-age=600"}
POLL_MS = 3000  # app.js POLL_MS
BROWSER_EPOCH = 1_800_000_000  # where the page's fake clock stops (seconds)


def _chromium() -> str | None:
    for candidate in (os.environ.get("EDGEPROXY_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM = _chromium()
needs_browser = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium found (scripts/test installs Debian's `chromium` package; "
    "or set EDGEPROXY_CHROMIUM to a chromium binary): the dashboard browser tests need one",
)


@pytest.fixture
async def admin_url(proxy: Proxy, clock: FakeClock) -> AsyncIterator[str]:
    async with admin_listener(proxy, clock) as url:
        yield url


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh chromium page (its own context: empty sessionStorage)."""
    pw = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    async with pw.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 1000})
            pg = await context.new_page()
            pg.set_default_timeout(10_000)  # bounds every wait below
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            # A CSP violation shows up only on the console: fail on any.
            pg.on(
                "console",
                lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
            )
            yield pg
            assert errors == [], errors
        finally:
            await browser.close()


# -- the page's HTTP contract (no browser) ------------------------------------


@pytest.mark.parametrize("path", sorted(PAGE_PATHS))
async def test_page_and_assets_are_open_and_locked_down(
    admin_url: str, client: aiohttp.ClientSession, path: str
) -> None:
    got = await fetch(client, "GET", admin_url + path)  # no Authorization
    assert got.status == 200
    assert got.headers["Content-Security-Policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["X-Frame-Options"] == "DENY"
    # The page carries no data: nothing from the cache or config in it.
    assert HOST.encode() not in got.body and TOKEN.encode() not in got.body


async def test_page_has_no_inline_code(admin_url: str, client: aiohttp.ClientSession) -> None:
    # The CSP forbids inline script and handlers; the page must not need them.
    html = (await fetch(client, "GET", admin_url + "/")).body.decode()
    assert "<script>" not in html and " on" + "click=" not in html and "style=" not in html
    assert '<script src="/dashboard/app.js" defer></script>' in html


async def test_status_needs_the_token_and_reports_origins_limit_and_purges(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin_url: str
) -> None:
    admin = AdminAPI(admin_url, client, proxy.app[EDGE])
    denied = await admin.call("GET", "/dashboard/status", auth=False)
    assert denied.status == 401
    await fill(proxy, origin, client, "/a")
    await admin.purge({"url": f"http://{HOST}/a", "dry_run": True})  # not recorded
    await admin.purge({"prefix": f"http://{HOST}/", "soft": True})
    got = await admin.call("GET", "/dashboard/status")
    assert got.status == 200
    assert got.json["origins"] == {
        "default": [
            {
                "server": proxy.config.origins["default"].servers[0],
                "up": True,
                "probation": False,
                "failures": 0,
                "inflight": 0,
                "down_for": None,
            }
        ]
    }
    assert got.json["cache"]["size_limit"] == proxy.config.cache.size_limit
    assert got.json["purges"] == [
        {
            "at": proxy.app[EDGE].clock(),
            "kind": "prefix",
            "target": f"http://{HOST}/",
            "soft": True,
            "purged": 1,
        }
    ]


async def test_without_a_token_the_api_refuses_the_page(
    proxy: Proxy, clock: FakeClock, client: aiohttp.ClientSession
) -> None:
    """No token configured: the page loads, but a browser's data calls are refused
    (admin._browser_refusal), so the dashboard shows nothing but the reason."""
    async with admin_listener(proxy, clock, token=None) as url:
        page = await fetch(client, "GET", url + "/")
        assert page.status == 200
        got = await fetch(
            client, "GET", url + "/dashboard/status", headers={"Sec-Fetch-Site": "same-origin"}
        )
        assert got.status == 403
        assert b"browser requests need a token" in got.body


# -- in the browser -----------------------------------------------------------


async def _traffic(proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession) -> None:
    """Two products tagged by the origin (stored, then hit) and one untagged page."""
    for n in (1, 2):
        reply = Reply(body=b"p%d" % n, headers={**CACHEABLE, "Surrogate-Key": f"product-{n}"})
        await fill(proxy, origin, client, f"/products/{n}", reply=reply)
    await fill(proxy, origin, client, "/about")


@needs_browser
async def test_dashboard_login_traffic_entries_and_purge(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin_url: str,
    page: Any,
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    # The page's clock is Playwright's fake: its 3 s poll fires when the test
    # advances it (as FakeClock does for the proxy), so rates are exact.
    await page.clock.install(time=BROWSER_EPOCH - 60)
    response = await page.goto(admin_url + "/")
    assert response.headers["content-security-policy"] == CSP
    await page.clock.pause_at(BROWSER_EPOCH)
    await expect(page.locator("#login-view")).to_be_visible()
    await expect(page.locator("#main-view")).to_be_hidden()

    # A wrong token: refused, back to the form, nothing kept in the session.
    await page.fill("#token", "not-the-token")
    await page.click("#login")
    await expect(page.locator("#login-error")).to_contain_text("invalid bearer token")
    assert await page.evaluate("sessionStorage.length") == 0

    await page.fill("#token", TOKEN)
    await page.click("#login")
    await expect(page.locator("#main-view")).to_be_visible()
    await expect(page.locator("#outcome-hit td.num")).to_have_text("0")
    await expect(page.locator("#config-version")).to_have_text("v1")
    await expect(page.locator("#origins tbody tr")).to_have_count(1)
    await expect(page.locator("#origins tbody td.ok")).to_have_text("up")
    await expect(page.locator("#page-info")).to_have_text("no entries")  # then polling starts
    # Kept for this tab only, never in a cookie or the URL.
    assert await page.evaluate("sessionStorage.getItem('edgeproxy-admin-token')") == TOKEN
    assert await page.context.cookies() == []
    assert TOKEN not in page.url
    assert await page.locator("#rate-line").get_attribute("points") == ""

    await _traffic(proxy, origin, client)  # 3 misses, 3 hits
    await page.clock.run_for(POLL_MS)  # one poll: 6 requests in 3 s
    await expect(page.locator("#outcome-hit td.num")).to_have_text("3")
    await expect(page.locator("#outcome-miss td.num")).to_have_text("3")
    await expect(page.locator("#outcome-bypass td.num")).to_have_text("0")
    await expect(page.locator("#req-rate")).to_have_text("2.00")
    await expect(page.locator("#hit-ratio")).to_have_text("50.0%")
    await expect(page.locator("#cache-entries")).to_have_text("3 stored responses")
    # The chart's first point: the peak rate (y=10 of 150), a 50% hit ratio (y=80).
    await expect(page.locator("#rate-line")).to_have_attribute("points", "600.0,10.0")
    await expect(page.locator("#ratio-line")).to_have_attribute("points", "600.0,80.0")

    # A quiet interval: the rate line falls to the baseline, the ratio has no point.
    await page.clock.run_for(POLL_MS)
    await expect(page.locator("#rate-line")).to_have_attribute("points", "570.0,10.0 600.0,150.0")
    await expect(page.locator("#ratio-line")).to_have_attribute("points", "570.0,80.0")
    await expect(page.locator("#hit-ratio")).to_have_text("no lookups")

    # Find entries by prefix, then by tag.
    rows = page.locator("#entries tbody tr")
    await page.click("#search")  # everything
    await expect(rows).to_have_count(3)
    await page.fill("#search-prefix", f"http://{HOST}/products/")
    await page.click("#search")
    await expect(rows).to_have_count(2)
    await page.fill("#search-prefix", "")
    await page.fill("#search-tag", "product-2")
    await page.click("#search")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("td.url")).to_have_text(f"http://{HOST}/products/2")

    # Purge it from its row: gone from the list, and the next request is a miss.
    await rows.first.locator("button.purge-entry").click()
    await expect(page.locator("#purge-result")).to_contain_text("purged 1 stored response")
    await expect(rows).to_have_count(0)
    await expect(page.locator("#page-info")).to_have_text("no entries")
    before = origin.hits("/products/2")
    got = await fetch(client, "GET", proxy.url + "/products/2", headers={"Host": HOST})
    assert got.headers["Cache-Status"].startswith("edgeproxy; fwd=uri-miss")
    assert origin.hits("/products/2") == before + 1

    # The purge form: a dry run counts first, and changes nothing.
    await page.select_option("#purge-kind", "prefix")
    await page.fill("#purge-value", f"http://{HOST}/products/")
    await page.click("#purge-count")
    await expect(page.locator("#purge-result")).to_have_text(
        "dry run: would purge 2 stored response(s)"
    )
    assert len(await AdminAPI(admin_url, client, proxy.app[EDGE]).urls()) == 3
    # Editing the form after the count disarms the purge button.
    await page.fill("#purge-value", f"http://{HOST}/")
    await expect(page.locator("#purge-apply")).to_be_disabled()
    await page.fill("#purge-value", f"http://{HOST}/products/")
    await page.click("#purge-count")
    await expect(page.locator("#purge-apply")).to_have_text("Purge 2")
    await page.click("#purge-apply")
    await expect(page.locator("#purge-result")).to_have_text("purged 2 stored response(s)")
    assert await AdminAPI(admin_url, client, proxy.app[EDGE]).urls() == [f"http://{HOST}/about"]

    # Both real purges listed, newest first; the dry runs are not.
    purges = page.locator("#purges tbody tr")
    await expect(purges).to_have_count(2)
    await expect(purges.nth(0)).to_contain_text(f"prefix http://{HOST}/products/")
    await expect(purges.nth(1)).to_contain_text(f"url http://{HOST}/products/2")

    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"dashboard screenshot: {shot}")


@needs_browser
async def test_dashboard_pages_through_entries(
    proxy: Proxy,
    origin: ScriptedOrigin,
    client: aiohttp.ClientSession,
    admin_url: str,
    page: Any,
) -> None:
    from playwright.async_api import expect

    for n in range(25):  # page size 20: two pages
        origin.script(f"/p/{n:02d}", Reply(body=b"x", headers=CACHEABLE))
        await fetch(client, "GET", proxy.url + f"/p/{n:02d}", headers={"Host": HOST})
    await page.goto(admin_url + "/")
    await page.fill("#token", TOKEN)
    await page.click("#login")
    rows = page.locator("#entries tbody tr")
    await expect(rows).to_have_count(20)
    await expect(page.locator("#page-info")).to_have_text("entries 1-20 (more)")
    await expect(page.locator("#prev")).to_be_disabled()
    await page.click("#next")
    await expect(rows).to_have_count(5)
    await expect(rows.first.locator("td.url")).to_have_text(f"http://{HOST}/p/20")
    await expect(page.locator("#next")).to_be_disabled()
    await page.click("#prev")
    await expect(rows).to_have_count(20)


@needs_browser
async def test_dashboard_without_a_configured_token_shows_only_the_refusal(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, clock: FakeClock, page: Any
) -> None:
    """An admin listener without a token is open to scripts on loopback, never to
    a browser: the page's own calls are refused (admin._browser_refusal)."""
    from playwright.async_api import expect

    await fill(proxy, origin, client, "/secret")
    async with admin_listener(proxy, clock, token=None) as url:
        await page.goto(url + "/")
        await page.fill("#token", "anything")
        await page.click("#login")
        await expect(page.locator("#api-error")).to_contain_text("browser requests need a token")
        await expect(page.locator("#outcome-hit")).to_have_count(0)  # no data shown
        await expect(page.locator("#entries tbody tr")).to_have_count(0)
        assert "secret" not in await page.content()


@needs_browser
async def test_stored_values_are_shown_as_text_never_markup(
    proxy: Proxy, origin: ScriptedOrigin, client: aiohttp.ClientSession, admin_url: str, page: Any
) -> None:
    """Tags and URLs come from origins and clients: the page writes them as text."""
    from playwright.async_api import expect

    tag = "<img/src=x/onerror=document.title='owned'>"
    reply = Reply(body=b"x", headers={**CACHEABLE, "Surrogate-Key": tag})
    await fill(proxy, origin, client, "/x", reply=reply)
    await page.goto(admin_url + "/")
    await page.fill("#token", TOKEN)
    await page.click("#login")
    row = page.locator("#entries tbody tr")
    await expect(row).to_have_count(1)
    await expect(row.locator("td").nth(5)).to_have_text(tag)
    assert await page.locator("#entries img").count() == 0
    assert await page.title() == "edgeproxy"
