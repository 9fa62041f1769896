"""HTTP-date (RFC 9110 section 5.6.7) as POSIX seconds.

Recipients must accept IMF-fixdate, the obsolete RFC 850 form and asctime;
`email.utils` parses all three. Parsing is total: an invalid date is None.
"""

from __future__ import annotations

import calendar
from email.utils import formatdate, parsedate_tz


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch, or None when absent or invalid."""
    if value is None:
        return None
    try:
        parts = parsedate_tz(value.strip())
    except (ValueError, IndexError, TypeError, OverflowError):
        return None
    if parts is None:
        return None
    try:
        # RFC 9110: HTTP-date is always GMT; an explicit offset is honoured.
        ts = calendar.timegm(parts[:9]) - (parts[9] or 0)
    except (ValueError, OverflowError):
        return None
    return float(ts)


def format_http_date(ts: float) -> str:
    """IMF-fixdate, the form senders must generate (RFC 9110 section 5.6.7)."""
    return formatdate(ts, usegmt=True)
