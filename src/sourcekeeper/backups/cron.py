"""Cron expressions and IANA time zones for backup schedules: pure functions, no database.

Due times are computed in the schedule's own zone (so "0 2 * * *" in Europe/Paris is 02:00 local,
01:00Z in winter and 00:00Z in summer) and returned in UTC, which is how they are stored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadDateError, croniter

from sourcekeeper.core.errors import InvalidInput

# Counting missed due times stops here (a per-minute schedule down for a month is "≥ 1000").
MAX_MISSED_COUNT = 1000

# croniter's extensions: `R` (random) and `H` / `H(0-29)` (hashed), alone in a list item.
_RANDOM_OR_HASHED = re.compile(r"^[RH](\(.*)?$", re.IGNORECASE)
# Vixie cron's nicknames (croniter knows most; expanding them ourselves keeps one code path).
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def expand_cron(expression: str) -> str:
    """The five-field form of a cron expression; 422 on `cron_expression` if it is not one.

    Only minute precision makes sense for a once-a-minute tick, so croniter's optional seconds and
    year fields, and its random/hashed (`R`, `H`) extensions, are refused.
    """
    text = " ".join(expression.split())
    if text.lower() in _NICKNAMES:
        return _NICKNAMES[text.lower()]
    fields = text.split(" ")
    problem = None
    if len(fields) != 5:
        problem = (
            f"has {len(fields)} fields; expected 5 (minute hour day-of-month month day-of-week)"
        )
    elif any(_RANDOM_OR_HASHED.match(part) for part in re.split(r"[,/-]", text.replace(" ", ","))):
        problem = "uses random or hashed values (R, H), which are not supported"
    elif not croniter.is_valid(text):
        problem = "is not a valid cron expression"
    if problem:
        raise InvalidInput(f"cron_expression {expression!r} {problem}", field="cron_expression")
    return text


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


def canonical_timezone(name: str) -> str:
    """The IANA name as spelled by tzdata (`europe/paris` → `Europe/Paris`); 422 on `timezone`."""
    found = _zone_names().get(name.strip().lower())
    if found is None:
        raise InvalidInput(
            f"timezone {name!r} is not an IANA time zone name (e.g. 'UTC', 'Europe/Paris')",
            field="timezone",
        )
    return found


def _fixed_hour(expanded: str) -> bool:
    return not expanded.split(" ")[1].startswith("*")


def next_run_after(
    cron_expression: str, timezone: str, after: datetime, *, previous: datetime | None = None
) -> datetime:
    """The first due time strictly after `after`, evaluated in `timezone`, returned in UTC.

    When clocks fall back, a fixed-hour job (`30 2 * * *`) would match the repeated wall-clock
    time twice; like Vixie cron it runs once, so a candidate with the same local time as
    `previous` (the run just fired) is passed over. Wildcard-hour jobs run in both hours.
    """
    expanded = expand_cron(cron_expression)
    zone = ZoneInfo(canonical_timezone(timezone))
    it = croniter(expanded, after.astimezone(zone))
    skip_wall = (
        previous.astimezone(zone).replace(tzinfo=None)
        if previous is not None and _fixed_hour(expanded)
        else None
    )
    try:
        for _ in range(3):
            candidate: datetime = it.get_next(datetime)
            if candidate.replace(tzinfo=None) != skip_wall:
                return candidate.astimezone(UTC)
    except CroniterBadDateError:
        pass
    raise InvalidInput(
        f"cron_expression {cron_expression!r} never matches a date", field="cron_expression"
    )


def count_due_between(cron_expression: str, timezone: str, start: datetime, end: datetime) -> int:
    """How many due times fall in (start, end], capped at MAX_MISSED_COUNT."""
    count, current = 0, start
    while count < MAX_MISSED_COUNT:
        current = next_run_after(cron_expression, timezone, current, previous=current)
        if current > end:
            break
        count += 1
    return count
