"""Failed-authentication limiting per client address (pure: the caller passes `now`).

After `max_failures` failed attempts within `window` seconds, an address is
refused for `lockout` seconds, even with the right token, so the admin token
can't be guessed at network speed. A success clears the address's record.
At most `max_tracked` addresses are remembered (oldest dropped first), so a
flood of addresses can't grow memory without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class FailureLimiter:
    def __init__(
        self,
        max_failures: int = 10,
        window: float = 60.0,
        lockout: float = 60.0,
        max_tracked: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.max_tracked = max_tracked
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until `key` may try again, or None when it may try now."""
        record = self._records.get(key)
        if record is None or record.locked_until <= now:
            return None
        return record.locked_until - now

    def failed(self, key: str, now: float) -> None:
        record = self._records.pop(key, None) or _Record()
        record.failures = [t for t in record.failures if now - t < self.window]
        record.failures.append(now)
        if len(record.failures) >= self.max_failures:
            record.locked_until = now + self.lockout
            record.failures.clear()
        self._records[key] = record  # most recent last
        while len(self._records) > self.max_tracked:
            self._records.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)
