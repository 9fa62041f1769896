"""The CLI's client for the admin API (`edgeproxy purge`, `edgeproxy entries`).

Every failure becomes one `AdminError` with a one-line message (connection
refused, timeout, an HTTP error with the API's own reason), so the CLI can
print it and exit non-zero without a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from edgeproxy.config import AdminConfig, Config

DEFAULT_ADMIN_URL = "http://127.0.0.1:9090"
TIMEOUT = 30.0  # seconds; a purge of a large prefix takes a while


class AdminError(Exception):
    """The admin API could not be reached or refused the request."""


def admin_url(config: Config | None) -> str:
    """Where the admin API listens, from a config's `admin.listen`.

    A listener bound to every interface is reached through loopback.
    """
    if config is None:
        return DEFAULT_ADMIN_URL
    address = config.admin.listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(address.host, address.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{address.port}"


def admin_settings(config: Config | None) -> AdminConfig:
    return config.admin if config is not None else AdminConfig()


class AdminClient:
    def __init__(self, base_url: str, token: str | None, timeout: float = TIMEOUT) -> None:
        # `--admin 127.0.0.1:9090` means http: the admin listener speaks plain HTTP.
        self.base_url = (base_url if "://" in base_url else f"http://{base_url}").rstrip("/")
        self.token = token
        self.timeout = timeout

    async def purge(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/purge", body=request)

    async def entries(
        self, prefix: str | None = None, tag: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        params = {
            name: str(value)
            for name, value in (("prefix", prefix), ("tag", tag), ("limit", limit))
            if value is not None
        }
        return await self._call("GET", "/entries", params=params)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        url = self.base_url + path
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(method, url, json=body, params=params, headers=headers) as resp,
            ):
                text = await resp.text(errors="replace")
                status = resp.status
        except aiohttp.InvalidURL as e:
            raise AdminError(f"invalid admin URL {self.base_url!r}: {e}") from e
        except aiohttp.ClientConnectorError as e:
            why = (
                "connection refused (is edgeproxy serve running with its admin listener there?)"
                if isinstance(e.os_error, ConnectionRefusedError)
                else str(e.os_error.strerror or e)
            )
            raise AdminError(f"cannot connect to the admin API at {self.base_url}: {why}") from e
        except TimeoutError as e:
            raise AdminError(
                f"the admin API at {self.base_url} did not answer within {self.timeout:g}s"
            ) from e
        except aiohttp.ClientError as e:
            raise AdminError(f"admin API at {self.base_url}: {e or type(e).__name__}") from e
        answer = _json_object(text)
        if status >= 400:
            raise AdminError(_http_error(status, answer, text, self.token is not None))
        if answer is None:
            raise AdminError(f"{method} {url}: HTTP {status} but not a JSON object: {text[:200]!r}")
        return answer


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _http_error(status: int, answer: dict[str, Any] | None, text: str, sent_token: bool) -> str:
    reason = answer.get("error") if answer is not None else None
    if not isinstance(reason, str):
        reason = " ".join(text.split())[:200] or "(no body)"
    message = f"HTTP {status}: {reason}"
    if status == 401:
        where = "is wrong" if sent_token else "is not set"
        message += f" (the admin token {where}: set EDGEPROXY_ADMIN_TOKEN or admin.token_file)"
    return message


# -- output -------------------------------------------------------------------

COLUMNS = ("STATUS", "AGE", "TTL", "SIZE", "FLAGS", "URL", "VARY", "TAGS")


def format_entries(answer: Mapping[str, Any]) -> str:
    """A /entries answer as an aligned table, one stored variant per line."""
    entries: Sequence[Mapping[str, Any]] = answer.get("entries", [])
    rows: list[tuple[str, ...]] = [COLUMNS]
    for e in entries:
        vary = e.get("vary") or {}
        rows.append(
            (
                str(e.get("status", "")),
                str(e.get("age", "")),
                str(e.get("ttl", "")),
                str(e.get("size", "")),
                "soft-purged" if e.get("soft_purged") else "-",
                str(e.get("url", "")),
                " ".join(f"{k}={'' if v is None else v}" for k, v in vary.items()) or "-",
                " ".join(e.get("tags") or ()) or "-",
            )
        )
    rows = [tuple(_printable(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    count = len(entries)
    more = (
        " (more stored: raise --limit or narrow --prefix/--tag)" if answer.get("truncated") else ""
    )
    lines.append(f"{count} {'entry' if count == 1 else 'entries'}{more}")
    return "\n".join(lines)


def _printable(text: str) -> str:
    """Stored URLs and fields come from clients: no terminal control sequences."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
