"""`edgeproxy warm`: request URLs through the edge so they are stored before users ask.

URLs come from a file (one per line; blank lines and `#` comments skipped),
stdin (`-`), or a sitemap (`--sitemap URL`: a urlset or a sitemap index,
whose sitemaps are fetched in turn). Each URL is requested with GET, with
`--proxy` through that edge (the URL's host goes in Host, the path and query
in the request target, as a client's request would arrive), else directly.

Requests run `--concurrency` at a time and at most `--rate` per second (a
token bucket, burst 1, so the origin sees evenly spaced misses). Each answer
is classified from the edge's Cache-Status member (RFC 9211): a hit, a miss
(anything else the edge answered), or an error (no answer, or a status of 400
or more). A progress bar shows the counts; a summary line ends the run; the
exit status is 1 when any URL failed.

Sitemaps are parsed with the standard library's expat, with any DTD refused
before it is read: a sitemap never needs one, and without a DTD there are no
entities to expand (billion laughs) or to fetch (XXE). Size is capped before
parsing, gzip included.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from tqdm import tqdm
from yarl import URL

from edgeproxy import __version__

Outcome = Literal["hit", "miss", "error"]

MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemaps.org limit, uncompressed
MAX_SITEMAPS = 1000  # sitemap files fetched per run (an index lists at most 50000)
SITEMAP_NAMESPACES = frozenset(
    {
        "",
        "http://www.sitemaps.org/schemas/sitemap/0.9",
        "http://www.google.com/schemas/sitemap/0.84",
        "http://www.google.com/schemas/sitemap/0.9",
    }
)
DEFAULT_HEADERS = {
    "User-Agent": f"edgeproxy-warm/{__version__}",
    # What browsers send: the variant stored is the one they will ask for.
    "Accept-Encoding": "gzip, deflate, br",
}
CHUNK = 65536


class WarmError(Exception):
    """Input that can't be warmed: unreadable list, unreachable or invalid sitemap."""


class SitemapError(WarmError):
    """The bytes are not a sitemap this parser accepts."""


# -- sitemap parsing (pure) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sitemap:
    """A parsed sitemap: page URLs (a urlset) or sitemap URLs (an index)."""

    urls: tuple[str, ...] = ()
    sitemaps: tuple[str, ...] = ()


class _DoctypeRefused(Exception):
    pass


class _SitemapTarget:
    """An ElementTree parser target keeping only `<loc>` texts, without building a tree.

    A `loc` counts only as the child of `url` (urlset) or `sitemap` (index),
    all in the sitemap namespace: extensions such as `image:loc` are skipped.
    """

    def __init__(self) -> None:
        self.path: list[str | None] = []  # local names; None: a foreign namespace
        self.root: str | None = None
        self.urls: list[str] = []
        self.sitemaps: list[str] = []
        self._text: list[str] | None = None

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        # Called at the start of <!DOCTYPE, before any entity is declared.
        raise _DoctypeRefused

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        ns, _, local = tag[1:].rpartition("}") if tag.startswith("{") else ("", "", tag)
        name = local if ns in SITEMAP_NAMESPACES else None
        if not self.path:
            self.root = name
        self.path.append(name)
        if name == "loc" and self.path[:-1] in (["urlset", "url"], ["sitemapindex", "sitemap"]):
            self._text = []

    def data(self, text: str) -> None:
        if self._text is not None:
            self._text.append(text)

    def end(self, tag: str) -> None:
        if self._text is not None:
            loc = "".join(self._text).strip()
            if loc:
                (self.urls if self.path[0] == "urlset" else self.sitemaps).append(loc)
            self._text = None
        self.path.pop()

    def close(self) -> None:
        return None


def parse_sitemap(data: bytes) -> Sitemap:
    """The URLs of a sitemap or sitemap index (sitemaps.org 0.9), gzip or not.

    Raises SitemapError, and nothing else, on anything that is not one.
    """
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data)
    if len(data) > MAX_SITEMAP_BYTES:
        raise SitemapError(f"sitemap larger than {MAX_SITEMAP_BYTES} bytes")
    target = _SitemapTarget()
    parser = ET.XMLParser(target=target)
    try:
        parser.feed(data)
        parser.close()
    except _DoctypeRefused:
        raise SitemapError("sitemap has a DTD (<!DOCTYPE>): refused") from None
    except ET.ParseError as e:
        raise SitemapError(f"sitemap is not well-formed XML: {e}") from None
    except (ValueError, LookupError, UnicodeError) as e:  # e.g. an unknown encoding
        raise SitemapError(f"sitemap cannot be read: {e}") from None
    if target.root not in ("urlset", "sitemapindex"):
        raise SitemapError("not a sitemap: the root element is not <urlset> or <sitemapindex>")
    return Sitemap(tuple(target.urls), tuple(target.sitemaps))


def _gunzip(data: bytes) -> bytes:
    inflate = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        out = inflate.decompress(data, MAX_SITEMAP_BYTES + 1)
    except zlib.error as e:
        raise SitemapError(f"sitemap is not valid gzip: {e}") from None
    if len(out) > MAX_SITEMAP_BYTES:
        raise SitemapError(f"sitemap larger than {MAX_SITEMAP_BYTES} bytes uncompressed")
    return out


# -- URL lists and answers (pure) ---------------------------------------------


def read_url_list(text: str) -> list[str]:
    """One URL per line; blank lines and lines starting with # skipped."""
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


def request_target(url: str) -> tuple[str, str] | str:
    """(Host, origin-form target) of an absolute http(s) URL, or why it isn't one."""
    try:
        parts = urlsplit(url)
    except ValueError as e:
        return f"invalid URL: {e}"
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return "not an absolute http(s) URL"
    if "@" in parts.netloc:
        return "userinfo in a URL is not sent (RFC 9110 section 4.2.4)"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "whitespace or control characters in the URL"
    path = parts.path or "/"
    return parts.netloc, f"{path}?{parts.query}" if parts.query else path


def cache_outcome(fields: Sequence[str]) -> Literal["hit", "miss"]:
    """Hit or miss, from the last Cache-Status member: the cache nearest the
    client, the edge we sent through (RFC 9211 section 2). Anything but a
    `hit` parameter (absent, malformed, fwd=...) is a miss. Never raises."""
    members = _split_outside_quotes(", ".join(fields), ",")
    last = next((m for m in reversed(members) if m.strip()), "")
    for param in _split_outside_quotes(last, ";")[1:]:
        name, eq, value = param.partition("=")
        # `hit` is a Boolean parameter: bare or ?1 is true (RFC 8941 section 3.3.6).
        if name.strip() == "hit" and (not eq or value.strip() == "?1"):
            return "hit"
    return "miss"


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for c in text:
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(c)
    parts.append("".join(current))
    return parts


class TokenBucket:
    """At most `rate` requests per second on average, `burst` at once. Pure:
    the caller passes `now` and sleeps the answer."""

    def __init__(self, rate: float, burst: float = 1.0, now: float = 0.0) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def reserve(self, now: float) -> float:
        """Take a token: the seconds to wait before using it (0: now).

        Tokens may go negative: each caller gets the next free slot, in order,
        so concurrent workers queue instead of retrying.
        """
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


# -- running ------------------------------------------------------------------


@dataclass
class Tally:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (url, why)

    @property
    def done(self) -> int:
        return self.hits + self.misses + self.errors

    def add(self, url: str, outcome: Outcome, why: str = "") -> None:
        if outcome == "hit":
            self.hits += 1
        elif outcome == "miss":
            self.misses += 1
        else:
            self.errors += 1
            self.failed.append((url, why))

    def summary(self, seconds: float) -> str:
        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 'es' if word.endswith('s') else 's'}"

        return (
            f"warmed {self.done} URL{'' if self.done == 1 else 's'} in {seconds:.1f}s: "
            f"{n(self.hits, 'hit')}, {n(self.misses, 'miss')}, {n(self.errors, 'error')}"
        )


Report = Callable[[str, Outcome, str], None]  # url, outcome, why (for errors)


class Warmer:
    """Sends GETs through the edge (or directly), concurrency- and rate-limited."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        proxy: str | None = None,
        *,
        concurrency: int = 8,
        rate: float | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.session = session
        self.proxy = proxy.rstrip("/") if proxy else None
        self.concurrency = concurrency
        self.headers = {**DEFAULT_HEADERS, **dict(headers)}
        loop = asyncio.get_running_loop()
        self._bucket = TokenBucket(rate, now=loop.time()) if rate else None

    async def _paced(self) -> None:
        if self._bucket is not None:
            wait = self._bucket.reserve(asyncio.get_running_loop().time())
            if wait > 0:
                await asyncio.sleep(wait)

    def _request_url(self, url: str) -> tuple[URL, dict[str, str]] | str:
        target = request_target(url)
        if isinstance(target, str):
            return target
        host, path = target
        if self.proxy is None:
            return URL(url, encoded=True), dict(self.headers)
        # The edge sees what a client of `host` would send it.
        return URL(self.proxy + path, encoded=True), {**self.headers, "Host": host}

    async def get(self, url: str) -> tuple[int, list[str], bytes]:
        """Status, Cache-Status field lines and body; raises WarmError on no answer."""
        request = self._request_url(url)
        if isinstance(request, str):
            raise WarmError(request)
        where, headers = request
        headers["Accept-Encoding"] = "gzip"  # the one coding parse_sitemap undoes
        await self._paced()
        try:
            async with self.session.get(where, headers=headers, allow_redirects=False) as resp:
                body = await resp.read()
                return resp.status, resp.headers.getall("Cache-Status", []), body
        except TimeoutError:
            raise WarmError("timed out") from None
        except (aiohttp.ClientError, ValueError) as e:
            raise WarmError(str(e) or type(e).__name__) from None

    async def warm_one(self, url: str) -> tuple[Outcome, str]:
        request = self._request_url(url)
        if isinstance(request, str):
            return "error", request
        where, headers = request
        await self._paced()
        try:
            async with self.session.get(where, headers=headers, allow_redirects=False) as resp:
                # Read it all: the edge stores a response only once it is complete.
                async for _ in resp.content.iter_chunked(CHUNK):
                    pass
                if resp.status >= 400:
                    return "error", f"HTTP {resp.status}"
                return cache_outcome(resp.headers.getall("Cache-Status", [])), ""
        except TimeoutError:
            return "error", "timed out"
        except (aiohttp.ClientError, ValueError) as e:
            return "error", str(e) or type(e).__name__

    async def warm(self, urls: Sequence[str], report: Report) -> None:
        """Warm every URL, at most `concurrency` at a time; `report` each answer."""
        pending = iter(urls)

        async def worker() -> None:
            for url in pending:  # shared: each URL goes to one worker
                outcome, why = await self.warm_one(url)
                report(url, outcome, why)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(urls)))))

    async def sitemap_urls(self, sitemap: str) -> list[str]:
        """The page URLs of a sitemap, following a sitemap index (bounded, no repeats)."""
        queue = [sitemap]
        seen: set[str] = set()
        urls: list[str] = []
        while queue:
            where = queue.pop(0)
            if where in seen:
                continue
            if len(seen) >= MAX_SITEMAPS:
                raise WarmError(f"more than {MAX_SITEMAPS} sitemaps: stopped at {where}")
            seen.add(where)
            try:
                status, _, body = await self.get(where)
            except WarmError as e:
                raise WarmError(f"sitemap {where}: {e}") from None
            if status != 200:
                raise WarmError(f"sitemap {where}: HTTP {status}")
            try:
                parsed = parse_sitemap(body)
            except SitemapError as e:
                raise SitemapError(f"sitemap {where}: {e}") from None
            urls.extend(parsed.urls)
            queue.extend(parsed.sitemaps)
        return list(dict.fromkeys(urls))  # first occurrence kept


# -- the command --------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    urls: tuple[str, ...] = ()
    sitemap: str | None = None
    proxy: str | None = None
    concurrency: int = 8
    rate: float | None = None
    timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = ()
    progress: bool = True


async def run(options: Options, out: Callable[[str], None] = print) -> tuple[Tally, float]:
    """Warm what `options` names; `out` gets the summary line."""
    started = time.monotonic()
    tally = Tally()
    timeout = aiohttp.ClientTimeout(total=options.timeout)
    async with aiohttp.ClientSession(
        timeout=timeout, auto_decompress=False, skip_auto_headers=("User-Agent",)
    ) as session:
        warmer = Warmer(
            session,
            options.proxy,
            concurrency=options.concurrency,
            rate=options.rate,
            headers=options.headers,
        )
        urls = list(options.urls)
        if options.sitemap is not None:
            urls += await warmer.sitemap_urls(options.sitemap)
        urls = list(dict.fromkeys(urls))
        # Off the loop: a first bar sets up tqdm's locks (imports, os calls).
        bar = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: tqdm(
                total=len(urls), unit="url", file=sys.stderr, disable=not options.progress
            ),
        )

        def report(url: str, outcome: Outcome, why: str) -> None:
            tally.add(url, outcome, why)
            if outcome == "error":
                bar.write(f"error: {url}: {why}", file=sys.stderr)
            bar.set_postfix_str(
                f"hit={tally.hits} miss={tally.misses} error={tally.errors}", refresh=False
            )
            bar.update(1)

        try:
            await warmer.warm(urls, report)
        finally:
            bar.close()
    elapsed = time.monotonic() - started
    out(tally.summary(elapsed))
    return tally, elapsed


def options_from_args(args: argparse.Namespace, stdin_text: Callable[[], str]) -> Options:
    """Options from `edgeproxy warm`'s arguments; raises WarmError on bad input."""
    if args.source is None and args.sitemap is None:
        raise WarmError("name a file of URLs, '-' for stdin, or --sitemap URL")
    if args.rate is not None and not 0 < args.rate < float("inf"):
        raise WarmError(f"--rate must be a number of requests per second > 0, got {args.rate}")
    if not 0 < args.timeout < float("inf"):
        raise WarmError(f"--timeout must be seconds > 0, got {args.timeout}")
    headers = []
    for h in args.header or ():
        name, colon, value = h.partition(":")
        if not colon or not name.strip() or any(c in name for c in " \t\r\n"):
            raise WarmError(f"--header wants 'Name: value', got {h!r}")
        headers.append((name.strip(), value.strip()))
    if args.proxy is not None and isinstance(request_target(args.proxy), str):
        raise WarmError(f"--proxy wants a URL such as http://127.0.0.1:8080, got {args.proxy!r}")
    urls: list[str] = []
    if args.source == "-":
        urls = read_url_list(stdin_text())
    elif args.source is not None:
        try:
            with open(args.source, encoding="utf-8") as f:
                urls = read_url_list(f.read())
        except (OSError, UnicodeDecodeError) as e:
            raise WarmError(f"{args.source}: {getattr(e, 'strerror', None) or e}") from None
    if args.sitemap is not None and isinstance(request_target(args.sitemap), str):
        raise WarmError(f"--sitemap wants an absolute http(s) URL, got {args.sitemap!r}")
    return Options(
        urls=tuple(urls),
        sitemap=args.sitemap,
        proxy=args.proxy,
        concurrency=args.concurrency,
        rate=args.rate,
        timeout=args.timeout,
        headers=tuple(headers),
        progress=not args.no_progress,
    )


def main(args: argparse.Namespace) -> int:
    """`edgeproxy warm`: 0 when every URL was warmed, 1 when any failed, 2 on bad input."""
    try:
        options = options_from_args(args, sys.stdin.read)
    except WarmError as e:
        print(f"edgeproxy warm: {e}", file=sys.stderr)
        return 2
    try:
        tally, _ = asyncio.run(run(options))
    except WarmError as e:
        print(f"edgeproxy warm: {e}", file=sys.stderr)
        return 1
    if tally.done == 0:
        print("edgeproxy warm: no URLs to warm", file=sys.stderr)
        return 1
    return 1 if tally.errors else 0
