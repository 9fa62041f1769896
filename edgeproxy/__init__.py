"""edgeproxy: a caching reverse proxy (a small CDN edge).

Layers (imports only point down):

    cli / server           assembly: argv + YAML -> aiohttp apps
    proxy                  the aiohttp handler: straight-line glue over one decision
    origin / store         I/O adapters: upstream client, diskcache store
    policy / cachekey / config   pure decisions and typed config
    http                   pure header grammar

`http/` and `policy/` are sans-IO: they never import aiohttp, diskcache,
asyncio, yaml or time, and every decision takes `now` as an argument
(enforced by tests/unit/test_layering.py).
"""

from edgeproxy import compiled as _compiled

__version__ = "0.1.0"

_compiled.check()  # never run a compiled module older than its source
