"""HTTP-date (RFC 9110 section 5.6.7) as POSIX seconds.

Recipients must accept IMF-fixdate, the obsolete RFC 850 form and asctime.
Parsing is total: an invalid date is None. The whole value must be one date:
`email.utils` would take the first date of "date1, date2", but RFC 9110
sections 13.1.3/13.1.4 require a list of dates to be ignored, and it would
also accept out-of-range fields (25:61:00, 31 Feb) and any time zone.

Deliberate leniency (RFC 9110 5.6.7 asks recipients to be robust): names are
matched case-insensitively as RFC 9111 section 4.2 asks of caches, runs of
SP/HTAB count as one SP, and the day-name is not checked against the date.
Zones other than GMT are invalid (RFC 9111 section 4.2).
"""

from __future__ import annotations

import calendar
import functools
import math
import re
from email.utils import formatdate

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_DAY_L = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MON = r"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = r"(?P<h>[0-9]{2}):(?P<m>[0-9]{2}):(?P<s>[0-9]{2})"
_SP = r"[ \t]+"
_FLAGS = re.IGNORECASE | re.ASCII

# IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
_IMF = re.compile(
    rf"{_DAY},{_SP}(?P<d>[0-9]{{2}}){_SP}{_MON}{_SP}(?P<y>[0-9]{{4}}){_SP}{_TIME}{_SP}GMT", _FLAGS
)
# rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
_RFC850 = re.compile(
    rf"{_DAY_L},{_SP}(?P<d>[0-9]{{2}})-{_MON}-(?P<y>[0-9]{{2}}){_SP}{_TIME}{_SP}GMT", _FLAGS
)
# asctime-date: Sun Nov  6 08:49:37 1994 (day is 2DIGIT or SP DIGIT)
_ASCTIME = re.compile(
    rf"{_DAY}{_SP}{_MON}{_SP}(?P<d>[0-9]{{1,2}}){_SP}{_TIME}{_SP}(?P<y>[0-9]{{4}})", _FLAGS
)


def _two_digit_year(yy: int) -> int:
    # RFC 9110 5.6.7 wants "more than 50 years in the future" read as the
    # past century; that needs `now`, which the grammar layer never reads.
    # The POSIX %y pivot (69-99 -> 19xx) differs only for 69-99 years that
    # are under 50 years ahead (2069-2076 as of 2026), and errs towards the
    # past: an Expires that far out is read as long expired.
    return 1900 + yy if yy >= 69 else 2000 + yy


@functools.lru_cache(maxsize=1024)
def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch, or None when absent or invalid.

    Memoised: a hit reads the same few Date / Last-Modified / Expires values
    over and over, and the result is an immutable float.
    """
    if value is None:
        return None
    v = value.strip(" \t")
    for form in (_IMF, _RFC850, _ASCTIME):
        m = form.fullmatch(v)
        if m is not None:
            break
    else:
        return None
    year = int(m["y"])
    if form is _RFC850:
        year = _two_digit_year(year)
    month = _MONTHS[m["mon"].lower()]
    day, hour, minute, second = int(m["d"]), int(m["h"]), int(m["m"]), int(m["s"])
    if year < 1 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    # second 60 is a leap second (RFC 5322 section 3.3, which 5.6.7 defers to).
    if hour > 23 or minute > 59 or second > 60:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def format_http_date(ts: float) -> str:
    """IMF-fixdate, the form senders must generate (RFC 9110 section 5.6.7).

    Floored: formatdate rounds, and a Date must never be later than the
    moment it stands for.
    """
    return formatdate(math.floor(ts), usegmt=True)
