"""A stored response's head as the wire path writes it: bytes with gaps.

Built once per hot entry, snapshot, route and status (kept with the
entry's templates, serving.prebuilt_for), from the template aiohttp would
be given and serialised as aiohttp serialises it; the wire path's hits
(wire.py) and revalidations (wire_revalidation.py) fill in Age,
Cache-Status and the request id per request.
"""

from __future__ import annotations

from http import HTTPStatus

from multidict import CIMultiDict

from edgeproxy.accesslog import REQUEST_ID, json_parts
from edgeproxy.config import Route
from edgeproxy.http.cache_status import CacheStatus
from edgeproxy.metrics import outcome
from edgeproxy.policy.entry import Entry
from edgeproxy.serving import keep, prebuilt_for, stored_template
from edgeproxy.state import Snapshot
from edgeproxy.store.tiered import TieredStore

_VERSION = (1, 1)
_AGE, _STATUS, _ID = "age", "cache-status", REQUEST_ID.lower()


class WireHead:
    """A stored response's head as bytes, with the three per-request values
    (Age, Cache-Status, request id) as gaps: `parts` are the bytes around
    them, `order` which value goes in each gap."""

    __slots__ = ("code", "lines", "order", "parts", "statuses")

    def __init__(self, parts: list[bytes], order: list[int], code: int) -> None:
        self.parts = parts
        self.order = order
        self.code = code  # the status it sends
        # (method, target, cache outcome) -> the access line's fixed runs.
        self.lines: dict[tuple[str, str, str], tuple[str, str]] = {}
        # ttl -> (Cache-Status value, cache outcome): the same for every hit
        # of this entry, snapshot and status within a second of ttl.
        self.statuses: dict[int, tuple[bytes, str]] = {}

    def line_parts(
        self, method: str, target: str, nbytes: int, cache: str, route: str
    ) -> tuple[str, str]:
        """accesslog.json_parts for a hit of this head: kept per method, target
        and outcome (everything else in them is fixed for the head)."""
        slot = (method, target, cache)
        parts = self.lines.get(slot)
        if parts is None:
            parts = json_parts(method, target, self.code, nbytes, cache, route, None, None)
            if len(self.lines) >= 64:
                self.lines.clear()
            self.lines[slot] = parts
        return parts

    def status(self, ttl: int, status: int, cache_name: str) -> tuple[bytes, str]:
        """The Cache-Status a hit sends (RFC 9211: hit, ttl) and its outcome."""
        memo = self.statuses.get(ttl)
        if memo is None:
            cs = CacheStatus(hit=True, ttl=ttl)
            memo = (cs.render(cache_name).encode(), outcome(cs, status, True))
            if len(self.statuses) >= 16:
                self.statuses.clear()
            self.statuses[ttl] = memo
        return memo

    def redated(self, before: Entry, after: Entry) -> WireHead | None:
        """This head (built for `before`) for `after`, when the two differ
        only in Date's value (same fields in the same order otherwise, same
        body size); else None. The Date line is found whole in exactly one
        part (a gap's value is never next to it without its CRLF)."""
        if before.body_size != after.body_size:
            return None
        was, now = list(before.fields.items()), list(after.fields.items())
        if len(was) != len(now):
            return None
        changed = [i for i, pair in enumerate(was) if pair != now[i]]
        if not changed:
            return self
        if len(changed) != 1:
            return None
        (name, old_value), (new_name, new_value) = was[changed[0]], now[changed[0]]
        if name != new_name or name.lower() != "date":
            return None
        try:
            needle = f"\r\n{name}: {old_value}\r\n".encode()
            line = f"\r\n{name}: {new_value}\r\n".encode()
        except UnicodeEncodeError:
            return None
        found = [i for i, part in enumerate(self.parts) if needle in part]
        if len(found) != 1 or self.parts[found[0]].count(needle) != 1:
            return None
        parts = list(self.parts)
        parts[found[0]] = parts[found[0]].replace(needle, line)
        return WireHead(parts, self.order, self.code)

    def render(self, values: tuple[bytes, bytes, bytes]) -> bytes:
        parts, order = self.parts, self.order
        out = [parts[0]]
        for i, which in enumerate(order):
            out.append(values[which])
            out.append(parts[i + 1])
        return b"".join(out)


# HTTPStatus(status).phrase without the enum's lookup (three interpreted
# calls a response): the same phrases, read once.
_PHRASES: dict[int, str] = {int(s): s.phrase for s in HTTPStatus}


def _as_sent(
    fields: CIMultiDict[str], status: int, length: int | None
) -> tuple[str, CIMultiDict[str]] | None:
    """The status line and fields aiohttp would send for `status` (`length`:
    the body's Content-Length, None for a 304), or None if it would not send
    them as they are: aiohttp adds Date when there is none (and with its own
    clock). It also refuses CR or LF in a field: its callers check that as
    they render the fields."""
    headers = CIMultiDict(fields)
    if length is not None:
        headers["Content-Length"] = str(length)  # StreamResponse.content_length does this
    if "Date" not in headers:
        return None
    phrase = _PHRASES.get(status)
    if phrase is None:
        return None  # not a status HTTPStatus knows: aiohttp's head, not ours
    return f"HTTP/1.1 {status} {phrase}\r\n", headers


def response_head(fields: CIMultiDict[str], status: int, length: int | None) -> bytes | None:
    """A whole response head (a relayed one: no per-request gaps), as
    aiohttp would send it, or None where it would not (`_as_sent`)."""
    sent = _as_sent(fields, status, length)
    if sent is None:
        return None
    line, headers = sent
    text = line + "".join([f"{name}: {value}\r\n" for name, value in headers.items()]) + "\r\n"
    # CR and LF only where we put them (one pair a line): none in a field.
    lines = len(headers) + 2
    if text.count("\r") != lines or text.count("\n") != lines:
        return None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # aiohttp would fail on it too: the full path's
        return None


def wire_head(template: CIMultiDict[str], status: int, length: int | None) -> WireHead | None:
    """`template` as aiohttp would send it (`_as_sent`), with gaps for Age,
    Cache-Status and the request id."""
    sent = _as_sent(template, status, length)
    if sent is None:
        return None
    text, headers = sent
    parts: list[bytes] = []
    order: list[int] = []
    gaps = {_AGE: 0, _STATUS: 1, _ID: 2}
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            return None  # aiohttp refuses it: the full path's
        gap = gaps.get(name.lower())
        if gap is None:
            text += f"{name}: {value}\r\n"
            continue
        text += f"{name}: "
        parts.append(text.encode("utf-8"))
        order.append(gap)
        text = "\r\n"
    parts.append(text.encode("utf-8") + b"\r\n")
    if sorted(order) != [0, 1, 2]:
        return None
    return WireHead(parts, order, status)


def wire_head_for(
    store: TieredStore,
    snap: Snapshot,
    route: Route,
    entry: Entry,
    status: int,
    validated: bool = False,
) -> WireHead | None:
    """The entry's WireHead for this snapshot, route and status, built once.
    `validated`: just validated upstream (qualified no-cache fields are then
    sent: serving.stored_template)."""
    templates = prebuilt_for(store, entry)
    slot = ("wire", id(snap), id(route), status, validated)
    kept = templates.get(slot)
    if kept is not None and kept[0] is snap and kept[1] is route:
        return kept[2]  # type: ignore[return-value]
    template = stored_template(store, snap, route, _VERSION, entry, status, validated)
    length = None if status == 304 else entry.body_size
    built = None
    if template is not None:
        try:
            built = wire_head(template, status, length)
        except UnicodeEncodeError:  # aiohttp would fail on it too: the full path's
            built = None
    keep(templates, slot, (snap, route, built))
    return built


def wire_head_after_304(
    store: TieredStore,
    where: tuple[Snapshot, Route],
    old: tuple[Entry, WireHead],
    merged: Entry,
    status: int,
) -> WireHead | None:
    """`merged`'s WireHead (validated) after a 304 freshened the `old` entry,
    whose head for `status` is given. A 304 that changed only Date (most
    do, once the fields it sends have moved to the end: merge_304) leaves
    the head as it was but for that one line: it is carried over instead of
    rebuilt, which is most of a revalidation's head cost."""
    snap, route = where
    before, head = old
    if status == head.code and before.status == merged.status:
        carried = head.redated(before, merged)
        if carried is not None:
            keep(
                prebuilt_for(store, merged),
                ("wire", id(snap), id(route), status, True),
                (snap, route, carried),
            )
            return carried
    return wire_head_for(store, snap, route, merged, status, validated=True)
