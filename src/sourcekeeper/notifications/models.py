"""Notifications (one row per recipient), their per-user counters, preferences and delivery log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from sourcekeeper.core.db import Base, utcnow


class NotificationType(StrEnum):
    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Category(StrEnum):
    SYSTEM = "system"
    PERFORMANCE = "performance"
    SECURITY = "security"
    BACKUP = "backup"
    CONNECTIVITY = "connectivity"
    COMPLIANCE = "compliance"
    MAINTENANCE = "maintenance"


PRIORITY_RANK: dict[str, int] = {p.value: rank for rank, p in enumerate(Priority)}

_UNREAD = text("read_at IS NULL")
_EXPIRING = text("expires_at IS NOT NULL")


class Notification(Base):
    """One user's copy of an event (fan-out on write): read, acknowledge and delete act on it alone.

    The indexes serve the three hot paths at millions of rows: the newest-first page of one user
    (optionally per source), the unread page (partial index: only unread rows), and the expiry
    purge / the correction of counts for expired rows not yet purged (partial: only expiring rows).
    """

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_user_created", "user_id", "created_at", "id"),
        Index(
            "ix_notifications_user_source_created", "user_id", "data_source_id", "created_at", "id"
        ),
        Index(
            "ix_notifications_user_unread",
            "user_id",
            "created_at",
            "id",
            sqlite_where=_UNREAD,
            postgresql_where=_UNREAD,
        ),
        Index(
            "ix_notifications_expires",
            "expires_at",
            sqlite_where=_EXPIRING,
            postgresql_where=_EXPIRING,
        ),
        Index(
            "ix_notifications_user_expires",
            "user_id",
            "expires_at",
            sqlite_where=_EXPIRING,
            postgresql_where=_EXPIRING,
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(
        String(64)
    )  # e.g. datasource.unreachable; shown as `source`
    type: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    # No foreign key: a notification about a source outlives the source (like the audit log), so
    # its name is copied at emit time rather than joined.
    data_source_id: Mapped[int | None]
    data_source_name: Mapped[str | None] = mapped_column(String(200))
    action_url: Mapped[str | None] = mapped_column(String(500))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # `metadata` is reserved on declarative classes, so the attribute is `meta`.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(150))
    expires_at: Mapped[datetime | None]


class NotificationCounter(Base):
    """Running totals per user, source and one dimension value, kept in step with every write to
    `notifications`, so badge counts and stats cost the same at 1,000 rows or 10 million.

    Each notification counts in four rows: (`all`, ""), (`type`, t), (`priority`, p) and
    (`category`, c). One dimension at a time keeps a user's rows few (at most 16 per source)
    where a joint (type, priority, category) key would grow to 112 per source; lists filtered on
    two dimensions at once count rows instead. `data_source_id` is 0 for events without a source
    (a NULL would defeat the upsert's key). WITHOUT ROWID on SQLite: the rows live in the primary
    key's b-tree, so a user's counters are one range scan.
    """

    __tablename__ = "notification_counters"
    __table_args__ = {"sqlite_with_rowid": False}

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    data_source_id: Mapped[int] = mapped_column(primary_key=True)
    dimension: Mapped[str] = mapped_column(
        String(16), primary_key=True
    )  # all|type|priority|category
    value: Mapped[str] = mapped_column(String(16), primary_key=True)
    total: Mapped[int] = mapped_column(default=0)
    unread: Mapped[int] = mapped_column(default=0)
    unacknowledged: Mapped[int] = mapped_column(default=0)


class NotificationPreference(Base):
    """What a user wants delivered outside the app; in-app copies are always written."""

    __tablename__ = "notification_preferences"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    min_priority: Mapped[str] = mapped_column(String(16), default=Priority.LOW)
    categories: Mapped[list[str]] = mapped_column(JSON, default=lambda: [c.value for c in Category])
    email_enabled: Mapped[bool] = mapped_column(default=False)
    email: Mapped[str | None] = mapped_column(String(320))  # None: the account's address
    # [{"url": <encrypted>, "format": "slack"|"generic", "enabled": bool}]; a webhook URL is a
    # bearer secret (Slack's are), so it is stored like a data-source password.
    webhooks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class NotificationDelivery(Base):
    """One delivery attempt of one notification over one channel (the delivery log)."""

    __tablename__ = "notification_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(16))  # email | webhook
    target: Mapped[str] = mapped_column(
        String(320)
    )  # address, or a webhook URL without its secret parts
    attempt: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))  # sent | retrying | failed | skipped
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)
