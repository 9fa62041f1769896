"""Accept-Encoding (RFC 9110 section 12.5.3) and the one coding this edge picks.

Pure. `request_coding` turns whatever a client sent into one of three tokens,
"br", "gzip" or "identity": the Accept-Encoding value used for the Vary
secondary key (http/vary.py) and the one sent upstream. So `gzip, deflate, br`
and `br;q=1, gzip` select the same stored variant, and a URL has at most three
coding variants however many spellings clients send.

The rule (a choice among the acceptable codings, which 12.5.3 leaves to the
server):

- Absent field: "identity". 12.5.3 says any coding is acceptable then, but a
  client that sent nothing (curl without --compressed, scripts) usually can't
  decode; every browser sends the field.
- Request `Cache-Control: no-transform` (RFC 9111 section 5.2.1.6): "identity",
  so the client gets the bytes as the origin made them for identity.
- Otherwise the producible coding (br, gzip) with the highest non-zero qvalue;
  on a tie br. `*` stands for every coding not listed. `x-gzip` is gzip
  (RFC 9110 section 8.4.1.3).
- "identity" when no producible coding is acceptable, or when identity is
  listed with a higher qvalue than the best of them. Also when `identity;q=0`
  excludes it: 12.5.3 has the server send without a coding then rather than
  fail; a cache has nothing better to send.
- An empty field value means "no coding wanted" (12.5.3): "identity".

Malformed members (a bad qvalue, an unknown parameter) are skipped: a
recipient can't know what they meant, and skipping only ever makes the
answer less compressed, never undecodable.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from edgeproxy.http.cache_control import request_cache_control
from edgeproxy.http.fields import Headers, combined, is_token, split_list

BR = "br"
GZIP = "gzip"
IDENTITY = "identity"
# What the edge can produce, most preferred first on equal qvalues.
PRODUCIBLE: tuple[str, ...] = (BR, GZIP)
# The normalised tokens: the only Accept-Encoding values a secondary key holds.
TOKENS: frozenset[str] = frozenset({BR, GZIP, IDENTITY})

_ALIASES = {"x-gzip": GZIP}
# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ) (RFC 9110 section 12.4.2)
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?", re.ASCII)


def parse_accept_encoding(value: str | None) -> dict[str, float] | None:
    """coding -> qvalue, codings lower-cased (with `*`); None when absent. Never raises.

    The first occurrence of a coding counts; malformed members are skipped.
    """
    if value is None:
        return None
    out: dict[str, float] = {}
    for member in split_list(value):
        coding, *params = (p.strip(" \t") for p in member.split(";"))
        coding = coding.lower()
        coding = _ALIASES.get(coding, coding)
        if not (coding == "*" or is_token(coding)):
            continue
        q = 1.0
        if params:
            # weight = OWS ";" OWS "q=" qvalue: one parameter, and only q.
            name, eq, qv = params[0].partition("=")
            if len(params) > 1 or not eq or name.strip(" \t").lower() != "q":
                continue
            qv = qv.strip(" \t")
            if _QVALUE.fullmatch(qv) is None:
                continue
            q = float(qv)
        out.setdefault(coding, q)
    return out


def choose(accepted: dict[str, float] | None, available: Collection[str] = PRODUCIBLE) -> str:
    """The coding to send: one of `available` (in PRODUCIBLE order), or identity.

    `accepted` is `parse_accept_encoding`'s result; see the module docstring.
    """
    if accepted is None:
        return IDENTITY
    star = accepted.get("*")
    best: str | None = None
    best_q = 0.0
    for coding in PRODUCIBLE:
        if coding not in available:
            continue
        q = accepted.get(coding, star if star is not None else 0.0)
        if q > best_q:  # strictly: earlier (preferred) codings win ties
            best, best_q = coding, q
    if best is None:
        return IDENTITY
    identity_q = accepted.get(IDENTITY)
    if identity_q is not None and identity_q > best_q:
        return IDENTITY  # the client ranked "no coding" above compression
    return best


def request_coding(request: Headers) -> str:
    """The normalised coding token ("br", "gzip", "identity") for a request."""
    value = combined(request, "accept-encoding")
    if value is None:
        return IDENTITY
    if "cache-control" in request and request_cache_control(request).has("no-transform"):
        return IDENTITY
    return choose(parse_accept_encoding(value))
