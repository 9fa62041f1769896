"""The primary cache key (RFC 9111 section 4: method and target URI).

Only GET responses are stored, so the key is the target URI: scheme, host
(lower-cased, default port dropped), path and query, as received. Entries are
never shared across hosts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import unquote_plus

from edgeproxy.http.fields import Headers
from edgeproxy.http.vary import normalise

DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=4096)  # an edge serves few hosts; bounded all the same
def normalise_host(host: str, scheme: str) -> str:
    """Host[:port] in the URI normal form of RFC 3986 section 6.2.2-6.2.3.

    Lower-cased (host names are case-insensitive); the root label's trailing
    dot dropped ("example.com." names the same host; all trailing dots and
    stray SP/HTAB before a port go too, so normalising twice changes
    nothing); an empty port or the scheme's default port dropped (RFC 9110
    sections 4.2.1-4.2.2: http is 80, https 443). A port is only split off
    a bracketed IPv6 literal ("[::1]:80") or a name with a single colon, so
    an unbracketed IPv6 address is never mistaken for host:port.
    """
    h = host.strip(" \t").lower()
    if h.startswith("["):
        close = h.find("]")
        if close >= 0 and h[close + 1 : close + 2] == ":":
            name, port = h[: close + 1], h[close + 2 :]
        else:
            name, port = h, None
    elif h.count(":") == 1:
        name, _, port = h.partition(":")
    else:
        name, port = h, None
    name = name.rstrip(". \t")
    if port is None:
        return name
    # ASCII digits only: str.isdigit() accepts other scripts' digits, and a
    # port that long is no port (int() of a huge string would also raise).
    is_number = port.isascii() and port.isdigit() and len(port) <= 5
    if port == "" or (is_number and DEFAULT_PORTS.get(scheme.lower()) == int(port)):
        return name
    return f"{name}:{port}"


def primary_key(scheme: str, host: str, path_and_query: str) -> str:
    """`scheme://host/path?query`, the form the purge API accepts too."""
    target = path_and_query if path_and_query.startswith("/") else "/" + path_and_query
    return f"{scheme.lower()}://{normalise_host(host, scheme)}{target}"


def apply_key_rules(
    path_and_query: str,
    *,
    ignore_query: bool = False,
    query_params: tuple[str, ...] | None = None,
    sort_query: bool = False,
) -> str:
    """A route's query rules applied to the target, for the key only.

    Parameters are split on `&` and kept in the key as sent; the request
    forwarded upstream is unchanged. Dropping a parameter from the key is
    only safe if the origin can't read it as a kept one, so a segment stays
    in the key when any of its `;`-separated pieces names a kept parameter
    once percent-decoded and case-folded: origins that also split on `;`
    or decode or case-fold names would otherwise read `?cb=ok&x=1;cb=evil`
    or `?cb=ok&c%62=evil` as cb=evil under the key of `?cb=ok` (parameter
    cloaking). Keeping too much only costs hits.
    """
    path, sep, query = path_and_query.partition("?")
    if not sep or ignore_query:
        return path
    params = [p for p in query.split("&") if p]
    if query_params is not None:
        keep = {_param_name(n) for n in query_params}
        params = [p for p in params if any(_param_name(x) in keep for x in p.split(";"))]
    if sort_query:
        # By name only, and stable: repeated names keep their order, since
        # origins that take the first (or last) `p` tell ?p=1&p=2 from ?p=2&p=1.
        params.sort(key=_param_name)
    return f"{path}?{'&'.join(params)}" if params else path


def _param_name(param: str) -> str:
    """A parameter's name as a lenient origin reads it: decoded, case-folded."""
    return unquote_plus(param.partition("=")[0]).strip().casefold()


def key_extras(parts: list[tuple[str, str | None]]) -> str:
    """Extra key components (route key headers and cookies) as a `#fragment`.

    A request target never has a fragment, so `url#...` can't collide with a
    real URL, and a purge of `url` also takes every `url#...` key.
    """
    if not parts:
        return ""
    return "#" + "&".join(f"{name}={'' if value is None else value}" for name, value in parts)


@dataclass(frozen=True, slots=True)
class KeyRules:
    """How a route builds its cache key (the `cache_key` block of a route)."""

    ignore_query: bool = False
    query_params: tuple[str, ...] | None = None  # keep only these
    sort_query: bool = False
    headers: tuple[str, ...] = ()  # lower-cased request field names added to the key
    cookies: tuple[str, ...] = ()  # cookie names whose values are added to the key


def cookie_values(headers: Headers, names: tuple[str, ...]) -> list[str | None]:
    """The named cookies' values from Cookie field lines (RFC 6265 section 4.2)."""
    found: dict[str, str] = {}
    wanted = set(names)
    for line in headers.getall("cookie", ()):
        for pair in line.split(";"):
            name, eq, value = pair.strip().partition("=")
            if eq and name in wanted and name not in found:
                found[name] = value.strip()
    return [found.get(n) for n in names]


def route_key(
    rules: KeyRules, host: str, target: str, headers: Headers, scheme: str = "http"
) -> str:
    """The full primary key: normalised URL after the route's query rules,
    plus any header or cookie values the route adds (as a `#` suffix)."""
    url = primary_key(
        scheme,
        host,
        apply_key_rules(
            target,
            ignore_query=rules.ignore_query,
            query_params=rules.query_params,
            sort_query=rules.sort_query,
        )
        if rules.ignore_query or rules.query_params is not None or rules.sort_query
        else target,
    )
    if not rules.headers and not rules.cookies:
        return url
    parts: list[tuple[str, str | None]] = [
        (f"h:{name}", normalise(headers, name)) for name in rules.headers
    ]
    parts.extend(
        (f"c:{name}", value)
        for name, value in zip(rules.cookies, cookie_values(headers, rules.cookies), strict=True)
    )
    return url + key_extras(parts)
