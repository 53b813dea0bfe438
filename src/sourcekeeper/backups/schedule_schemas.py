"""Request and reply models of the backup-schedule routes (API.md §3, BackupSchedule)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sourcekeeper.core.schemas import Bool, Input, Schema, Str, UtcDateTime

CronText = Annotated[Str, Field(min_length=1, max_length=120)]
RetentionDays = Annotated[int, Field(strict=True, ge=1, le=36500)]


class BackupScheduleUpdate(Input):
    """Any subset of the fields; null or absent leaves the value as it is.

    `cron_expression` and `timezone` are checked by the service (croniter, zoneinfo), which names
    the field in its 422 the same way Pydantic does.
    """

    cron_expression: CronText | None = None
    name: Annotated[Str, Field(min_length=1, max_length=200)] | None = None
    backup_type: Annotated[Str, Field(min_length=1, max_length=16)] | None = None
    timezone: Annotated[Str, Field(min_length=1, max_length=64)] | None = None
    retention_days: RetentionDays | None = None
    enabled: Bool | None = None
    description: Annotated[Str, Field(max_length=5000)] | None = None


class BackupScheduleCreate(BackupScheduleUpdate):
    cron_expression: CronText


class BackupScheduleRead(Schema):
    id: int
    data_source_id: int
    name: str
    backup_type: str
    cron_expression: str
    timezone: str
    enabled: bool
    retention_days: int
    next_run: UtcDateTime | None
    last_run: UtcDateTime | None
    last_status: str | None
    last_backup_id: int | None
    description: str | None
    created_at: UtcDateTime
    updated_at: UtcDateTime


class BackupScheduleOut(Schema):
    schedule: BackupScheduleRead


class BackupScheduleList(Schema):
    schedules: list[BackupScheduleRead]
