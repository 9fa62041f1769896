"""Micro-benchmark of the pure hit decision: `python scripts/bench_decide.py`.

Prints microseconds per decide() on a fresh 1 KiB entry, with the parse caches
warm (as on a busy edge) and cleared before every call (as before memoising).
"""

from __future__ import annotations

import time

from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.http.cache_control import parse_cache_control, request_cache_control
from edgeproxy.http.dates import parse_http_date
from edgeproxy.policy.decide import Request, decide
from edgeproxy.policy.entry import Entry
from edgeproxy.policy.settings import CachePolicy

N = 20_000


def main() -> None:
    fields = CIMultiDictProxy(
        CIMultiDict(
            {
                "Date": "Sat, 28 Nov 2026 12:00:00 GMT",
                "Cache-Control": "public, max-age=3600",
                "ETag": '"x"',
                "Last-Modified": "Sat, 28 Nov 2026 11:00:00 GMT",
                "Content-Type": "text/plain",
            }
        )
    )
    entry = Entry(
        key="http://x/a",
        status=200,
        fields=fields,
        request_time=1_795_867_200.0,
        response_time=1_795_867_200.0,
        body_size=1024,
    )
    headers = CIMultiDictProxy(CIMultiDict({"Host": "x"}))
    request = Request("GET", headers, request_cache_control(headers))
    policy = CachePolicy()
    for label, clear in (("warm caches", False), ("cold caches", True)):
        start = time.perf_counter()
        for _ in range(N):
            if clear:
                parse_http_date.cache_clear()
                parse_cache_control.cache_clear()
            decide(request, [entry], policy, 1_795_867_300.0)
        per_call = (time.perf_counter() - start) / N * 1e6
        print(f"{label}: {per_call:.1f} us per decide()")


if __name__ == "__main__":
    main()
