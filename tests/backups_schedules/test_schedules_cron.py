"""Cron expressions and time zones: next_run in the schedule's zone, stored and shown in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sourcekeeper.backups.cron import (
    canonical_timezone,
    count_due_between,
    expand_cron,
    next_run_after,
)
from sourcekeeper.core.errors import InvalidInput


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_paris_two_am_is_one_am_utc_in_winter_and_midnight_in_summer() -> None:
    assert next_run_after("0 2 * * *", "Europe/Paris", utc(2026, 1, 10, 12)) == utc(2026, 1, 11, 1)
    assert next_run_after("0 2 * * *", "Europe/Paris", utc(2026, 7, 10, 12)) == utc(2026, 7, 11, 0)


def test_result_is_strictly_after_the_start() -> None:
    assert next_run_after("0 2 * * *", "UTC", utc(2026, 1, 11, 2)) == utc(2026, 1, 12, 2)
    assert next_run_after("*/15 * * * *", "UTC", utc(2026, 1, 11, 2, 7)) == utc(2026, 1, 11, 2, 15)


def test_other_zones_and_weekdays() -> None:
    # Monday 09:30 in New York (EST, UTC-5) after Saturday 2026-01-10
    assert next_run_after("30 9 * * MON", "America/New_York", utc(2026, 1, 10)) == utc(
        2026, 1, 12, 14, 30
    )
    assert next_run_after("0 0 1 * *", "Asia/Tokyo", utc(2026, 1, 10)) == utc(2026, 1, 31, 15)


def test_spring_forward_runs_a_missing_local_time_at_the_jump() -> None:
    # 2026-03-29 02:30 does not exist in Paris (02:00 → 03:00); the run happens at 03:00 CEST.
    assert next_run_after("30 2 * * *", "Europe/Paris", utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)


def test_fall_back_runs_a_fixed_hour_job_once() -> None:
    # 2026-10-25 02:30 happens twice in Paris (00:30Z and 01:30Z): Vixie cron runs it once.
    first = next_run_after("30 2 * * *", "Europe/Paris", utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)
    second = next_run_after("30 2 * * *", "Europe/Paris", first, previous=first)
    assert second == utc(2026, 10, 26, 1, 30)


def test_fall_back_keeps_both_hours_for_an_hourly_job() -> None:
    first = next_run_after("0 * * * *", "Europe/Paris", utc(2026, 10, 24, 23, 30))
    assert first == utc(2026, 10, 25, 0)  # 02:00 CEST
    second = next_run_after("0 * * * *", "Europe/Paris", first, previous=first)
    assert second == utc(2026, 10, 25, 1)  # 02:00 CET, one hour later


@pytest.mark.parametrize(
    ("nickname", "expanded"),
    [
        ("@daily", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_nicknames(nickname: str, expanded: str) -> None:
    assert expand_cron(nickname) == expanded


def test_month_and_day_names_are_accepted() -> None:
    assert expand_cron("0 3 * MAR-JUN THU") == "0 3 * MAR-JUN THU"
    assert expand_cron("  0   3 * * *  ") == "0 3 * * *"


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "not a cron",
        "* * * *",
        "0 2 * * * *",
        "0 2 * * * * 2027",
        "61 * * * *",
        "0 25 * * *",
        "0 0 32 * *",
        "0 0 * 13 *",
        "@reboot",
        "H 2 * * *",
        "R 2 * * *",
        "0 0 * * R",
        "0 0 * R *",
        "H(0-29) 2 * * *",
        "0 2 * * 8-9x",
    ],
)
def test_invalid_cron_names_the_field(expression: str) -> None:
    with pytest.raises(InvalidInput) as info:
        expand_cron(expression)
    assert info.value.details == [{"loc": ["body", "cron_expression"], "msg": info.value.message}]


def test_a_cron_that_never_matches_is_refused() -> None:
    with pytest.raises(InvalidInput, match="never matches") as info:
        next_run_after("0 0 30 2 *", "UTC", utc(2026, 1, 1))
    assert info.value.details[0]["loc"] == ["body", "cron_expression"]


def test_timezones_are_canonical_iana_names() -> None:
    assert canonical_timezone("Europe/Paris") == "Europe/Paris"
    assert canonical_timezone("europe/paris") == "Europe/Paris"
    assert canonical_timezone("UTC") == "UTC"


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "CEST+2", "../../etc/passwd", "/etc/localtime", "", "Europe", "+02:00"]
)
def test_invalid_timezone_names_the_field(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        canonical_timezone(name)
    assert info.value.details[0]["loc"] == ["body", "timezone"]


def test_counting_due_times_in_a_window() -> None:
    assert count_due_between("0 2 * * *", "UTC", utc(2026, 1, 1, 2), utc(2026, 1, 4, 2)) == 3
    assert count_due_between("0 2 * * *", "UTC", utc(2026, 1, 1, 2), utc(2026, 1, 1, 3)) == 0
    assert count_due_between("* * * * *", "UTC", utc(2026, 1, 1), utc(2026, 3, 1)) == 1000
