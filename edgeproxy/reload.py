"""Live reload: validate a new config, then swap one reference atomically.

Triggers: SIGHUP, `POST /reload` on the admin listener, and changes to the
file on disk (polled, debounced). A file that fails validation changes
nothing: the old rules keep serving and the errors are kept for `GET /config`.
Listener addresses and the cache directory are bound at start; a change to
them is logged as needing a restart and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from edgeproxy.config import Config
from edgeproxy.errors import ConfigError
from edgeproxy.metrics import Metrics

log = logging.getLogger("edgeproxy.config")

Loader = Callable[[], Config]


@dataclass
class ReloadStatus:
    version: int = 1
    loaded_at: float = 0.0
    trigger: str = "start"
    last_error: list[str] | None = None
    last_error_at: float | None = None
    restart_needed: list[str] = field(default_factory=list)


class Reloader:
    """Owns the active config; `apply` is called with each new valid one."""

    def __init__(
        self,
        config: Config,
        load: Loader | None,
        apply: Callable[[Config], None],
        clock: Callable[[], float],
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self._load = load
        self._apply = apply
        self._clock = clock
        self._metrics = metrics  # edgeproxy_reloads_total{result}
        self._lock = asyncio.Lock()
        self.status = ReloadStatus(loaded_at=clock())

    @property
    def enabled(self) -> bool:
        return self._load is not None

    async def reload(self, trigger: str) -> bool:
        """Load, validate and swap; False (and the old config kept) on errors."""
        if self._load is None:
            self._fail(trigger, ["no config file: started without --config"])
            return False
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(None, self._load)
            except ConfigError as e:
                self._fail(trigger, e.errors)
                return False
            new = self._keep_bound(new)
            self._apply(new)
            self.config = new
            if self._metrics is not None:
                self._metrics.reloaded(True)
            self.status = replace(
                self.status,
                version=self.status.version + 1,
                loaded_at=self._clock(),
                trigger=trigger,
                last_error=None,
                last_error_at=None,
            )
            log.info(
                "config reloaded (%s): version %d, %d routes, %d origins",
                trigger,
                self.status.version,
                len(new.routes),
                len(new.origins),
            )
            return True

    def _fail(self, trigger: str, errors: list[str]) -> None:
        self.status = replace(self.status, last_error=errors, last_error_at=self._clock())
        if self._metrics is not None:
            self._metrics.reloaded(False)
        log.error(
            "config reload (%s) rejected; keeping version %d:\n  %s",
            trigger,
            self.status.version,
            "\n  ".join(errors),
        )

    def _keep_bound(self, new: Config) -> Config:
        """Addresses and the cache directory can't change without a restart."""
        old = self.config
        notes: list[str] = []
        if new.listen != old.listen:
            notes.append(f"listen {old.listen} -> {new.listen}")
        if new.admin.listen != old.admin.listen:
            notes.append(f"admin.listen {old.admin.listen} -> {new.admin.listen}")
        if new.cache.directory != old.cache.directory:
            notes.append(f"cache.dir {old.cache.directory} -> {new.cache.directory}")
        if new.cache.size_limit != old.cache.size_limit:
            notes.append(f"cache.size_limit {old.cache.size_limit} -> {new.cache.size_limit}")
        for note in notes:
            log.warning("config change needs a restart to take effect: %s", note)
        self.status.restart_needed = notes
        return replace(
            new,
            listen=old.listen,
            admin=replace(new.admin, listen=old.admin.listen),
            cache=replace(
                new.cache, directory=old.cache.directory, size_limit=old.cache.size_limit
            ),
        )

    async def watch(self, path: str, interval: float = 1.0, debounce: float = 0.3) -> None:
        """Poll the file; reload once its stat signature changed and settled."""
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(None, _signature, path)
        while True:
            await asyncio.sleep(interval)
            current = await loop.run_in_executor(None, _signature, path)
            if current == last:
                continue
            # Editors write in several steps: wait until it stops changing.
            while True:
                await asyncio.sleep(debounce)
                settled = await loop.run_in_executor(None, _signature, path)
                if settled == current:
                    break
                current = settled
            last = current
            if current is not None:
                await self.reload("file change")


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
