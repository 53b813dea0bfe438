"""API shapes of backups and restores (API.md §3)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from sourcekeeper.backups.models import Backup, Restore
from sourcekeeper.core.params import MAX_ID
from sourcekeeper.core.schemas import Bool, Input, Int, Schema, Str, UtcDateTime
from sourcekeeper.jobs.state import JobStatus

BackupStatus = JobStatus
RestoreStatus = JobStatus


class BackupTrigger(StrEnum):
    MANUAL = "manual"
    SCHEDULE = "schedule"
    PRE_RESTORE = "pre_restore"


class VerificationStatus(StrEnum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    FAILED = "failed"


class RestoreTarget(StrEnum):
    ORIGINAL = "original"  # the backup's own source and database
    NEW = "new"  # a new database (or SQLite file) on the target source's server
    SOURCE = "source"  # another registered source's own database (target_data_source_id)


class HealthLevel(StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"


# ---- input -------------------------------------------------------------------------------------


class BackupCreate(Input):
    """Every field may be null or absent: null means the default."""

    name: Annotated[Str, Field(min_length=1, max_length=200)] | None = None
    # A plain string, not an enum, so an unsupported type gets a message naming the engine's types.
    type: Annotated[Str, Field(min_length=1, max_length=32)] | None = None
    retention_days: Annotated[Int, Field(ge=1, le=36500)] | None = None
    description: Annotated[Str, Field(max_length=4000)] | None = None


class RestoreCreate(Input):
    """`target` "original" (default) or "new"; `target_data_source_id` picks another source of the
    same engine (its own database, or with "new" a new database on its server)."""

    target: Literal["original", "new"] | None = None
    target_database: Annotated[Str, Field(min_length=1, max_length=1024)] | None = None
    target_data_source_id: Annotated[Int, Field(ge=1, le=MAX_ID)] | None = None
    tables: (
        Annotated[list[Annotated[Str, Field(min_length=1, max_length=255)]], Field(max_length=5000)]
        | None
    ) = None
    clean: Bool | None = None
    verify: Bool | None = None


# ---- output ------------------------------------------------------------------------------------


class BackupMetadata(Schema):
    engine: str | None = None
    server_version: str | None = None
    tool: str | None = None
    tool_version: str | None = None
    format: str | None = None
    tables: int | None = None


class BackupRead(Schema):
    id: int
    data_source_id: int
    name: str
    type: str
    status: BackupStatus
    trigger: BackupTrigger
    schedule_id: int | None
    progress: float | None
    bytes_processed: int
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    completed_at: UtcDateTime | None
    duration_seconds: float | None
    size_bytes: int | None = Field(description="Stored (compressed, encrypted) size")
    original_size_bytes: int | None = Field(description="Size of the dump before compression")
    compression_ratio: float | None
    location: str | None = Field(description="Object key within the configured store")
    encrypted: bool = True
    encryption: str
    compression: str
    checksum_sha256: str | None = Field(description="SHA-256 of the stored bytes")
    verification_status: VerificationStatus
    verified_at: UtcDateTime | None
    verification_error: str | None
    retention_days: int
    expires_at: UtcDateTime | None
    created_by: str
    description: str | None
    metadata: BackupMetadata
    error_message: str | None

    @classmethod
    def of(cls, row: Backup) -> BackupRead:
        meta = row.meta or {}
        duration = None
        if row.started_at and row.completed_at:
            duration = round((row.completed_at - row.started_at).total_seconds(), 3)
        ratio = None
        if row.size_bytes and row.original_size_bytes is not None:
            ratio = round(row.original_size_bytes / row.size_bytes, 2)
        values: dict[str, Any] = {
            name: getattr(row, name)
            for name in cls.model_fields
            if name not in ("duration_seconds", "compression_ratio", "metadata", "encrypted")
        }
        return cls(
            **values,
            duration_seconds=duration,
            compression_ratio=ratio,
            encrypted=True,
            metadata=BackupMetadata.model_validate(
                {k: meta.get(k) for k in BackupMetadata.model_fields}
            ),
        )


class BackupOut(Schema):
    backup: BackupRead


class BackupList(Schema):
    backups: list[BackupRead]
    total: int


class BackupStats(Schema):
    total_backups: int
    successful_backups: int
    failed_backups: int
    total_size_bytes: int
    total_size_gb: float
    success_rate: float = Field(description="Percent of finished backups that succeeded (0-100)")
    average_duration_seconds: float | None


class StorageUsage(Schema):
    used_bytes: int
    backup_count: int


class BackupStatusRead(Schema):
    backups: list[BackupRead]
    stats: BackupStats
    last_backup: BackupRead | None
    last_successful_backup: BackupRead | None
    next_backup_at: UtcDateTime | None
    backup_enabled: bool
    health: HealthLevel
    issues: list[str]
    storage: StorageUsage


class RowCountMismatch(Schema):
    table: str
    expected: int | None
    actual: int | None


class RestoreVerification(Schema):
    tables_checked: int
    row_counts_match: bool
    mismatches: list[RowCountMismatch] = []


class RestoreRead(Schema):
    id: int
    backup_id: int | None
    data_source_id: int
    status: RestoreStatus
    target: RestoreTarget
    target_database: str | None
    target_data_source_id: int | None
    tables: list[str] | None
    clean: bool
    verify: bool
    progress: float | None
    bytes_processed: int
    safety_backup_id: int | None
    verified: bool | None
    verification: RestoreVerification | None
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    completed_at: UtcDateTime | None
    duration_seconds: float | None
    created_by: str
    error_message: str | None

    @classmethod
    def of(cls, row: Restore) -> RestoreRead:
        duration = None
        if row.started_at and row.completed_at:
            duration = round((row.completed_at - row.started_at).total_seconds(), 3)
        values: dict[str, Any] = {
            name: getattr(row, name) for name in cls.model_fields if name != "duration_seconds"
        }
        return cls(**values, duration_seconds=duration)


class RestoreOut(Schema):
    restore: RestoreRead


class RestoreList(Schema):
    restores: list[RestoreRead]
    total: int
