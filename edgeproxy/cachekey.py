"""The primary cache key (RFC 9111 section 4: method and target URI).

Only GET responses are stored, so the key is the target URI: scheme, host
(lower-cased, default port dropped), path and query, as received. Entries are
never shared across hosts.
"""

from __future__ import annotations

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_host(host: str, scheme: str) -> str:
    """Lower-case; drop the scheme's default port (RFC 9110 section 4.2.3)."""
    h = host.strip().lower().rstrip(".")
    name, sep, port = h.rpartition(":")
    if sep and port.isdigit() and "]" not in port and DEFAULT_PORTS.get(scheme) == int(port):
        return name
    return h


def primary_key(scheme: str, host: str, path_and_query: str) -> str:
    """`scheme://host/path?query`, the form the purge API accepts too."""
    target = path_and_query if path_and_query.startswith("/") else "/" + path_and_query
    return f"{scheme.lower()}://{normalise_host(host, scheme)}{target}"
