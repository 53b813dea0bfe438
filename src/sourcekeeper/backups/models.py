"""Backups, restores and backup schedules; job state lives on these rows (jobs.state.JobState)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from sourcekeeper.core.db import Base, TimestampMixin, utcnow
from sourcekeeper.jobs.state import JobState

# At most one queued or running backup per source (safety backups of restores aside): the check in
# backups.service.start, made race-free by the database. Written for SQLite and PostgreSQL alike.
_ONE_ACTIVE = text("status IN ('scheduled', 'in_progress') AND \"trigger\" <> 'pre_restore'")


class Backup(JobState, Base):
    __tablename__ = "backups"
    __table_args__ = (
        Index("ix_backups_source_created", "data_source_id", "created_at"),
        Index(
            "uq_backups_one_active_per_source",
            "data_source_id",
            unique=True,
            sqlite_where=_ONE_ACTIVE,
            postgresql_where=_ONE_ACTIVE,
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    data_source_id: Mapped[int] = mapped_column(ForeignKey("data_sources.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16), default="full")
    trigger: Mapped[str] = mapped_column(
        String(16), default="manual"
    )  # manual|schedule|pre_restore
    schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("backup_schedules.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    original_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    location: Mapped[str | None] = mapped_column(String(512))
    encryption: Mapped[str] = mapped_column(String(32), default="age-x25519")
    compression: Mapped[str] = mapped_column(String(16), default="zstd")
    checksum_sha256: Mapped[str | None] = mapped_column(String(64))
    verification_status: Mapped[str] = mapped_column(String(16), default="unverified")
    verified_at: Mapped[datetime | None]
    verification_error: Mapped[str | None] = mapped_column(Text)
    retention_days: Mapped[int] = mapped_column(default=30)
    expires_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(150), default="System")
    description: Mapped[str | None] = mapped_column(Text)
    # engine, server_version, tool, tool_version, format, tables, row_counts (per table)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    recipient: Mapped[str | None] = mapped_column(String(128))  # the age public key used


class Restore(JobState, Base):
    __tablename__ = "restores"
    __table_args__ = (Index("ix_restores_source_created", "data_source_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    backup_id: Mapped[int | None] = mapped_column(ForeignKey("backups.id", ondelete="SET NULL"))
    data_source_id: Mapped[int] = mapped_column(ForeignKey("data_sources.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    target: Mapped[str] = mapped_column(String(16), default="original")  # original|new|source
    target_database: Mapped[str | None] = mapped_column(String(1024))
    target_data_source_id: Mapped[int | None] = mapped_column(
        ForeignKey("data_sources.id", ondelete="SET NULL")
    )
    tables: Mapped[list[str] | None] = mapped_column(JSON)
    clean: Mapped[bool] = mapped_column(default=True)
    verify: Mapped[bool] = mapped_column(default=True)
    safety_backup_id: Mapped[int | None] = mapped_column(
        ForeignKey("backups.id", ondelete="SET NULL")
    )
    verified: Mapped[bool | None]
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(150), default="System")


class BackupSchedule(TimestampMixin, Base):
    __tablename__ = "backup_schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    data_source_id: Mapped[int] = mapped_column(
        ForeignKey("data_sources.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    backup_type: Mapped[str] = mapped_column(String(16), default="full")
    cron_expression: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(default=True)
    retention_days: Mapped[int] = mapped_column(default=30)
    next_run: Mapped[datetime | None] = mapped_column(index=True)
    last_run: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_backup_id: Mapped[int | None]
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(150))


class BackupKey(Base):
    """The service's age identity (secret key encrypted with the master key); one row is current."""

    __tablename__ = "backup_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    recipient: Mapped[str] = mapped_column(String(128), unique=True)
    identity_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
