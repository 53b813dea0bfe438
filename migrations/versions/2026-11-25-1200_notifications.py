"""notifications: per-recipient rows, counters, preferences and delivery log

Revision ID: 0002_notifications
Revises: 0001
Create Date: 2026-11-25 12:00:00

Partial indexes (unread rows, expiring rows) are written for both SQLite and PostgreSQL; other
dialects would get them as full indexes, which is slower but correct.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sourcekeeper.core.db

revision = "0002_notifications"
down_revision = "0001"
branch_labels = None
depends_on = None

UNREAD = sa.text("read_at IS NULL")
EXPIRING = sa.text("expires_at IS NOT NULL")


def _utc(nullable: bool) -> dict[str, object]:
    return {"type_": sourcekeeper.core.db.UtcDateTime(timezone=True), "nullable": nullable}


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data_source_id", sa.Integer(), nullable=True),
        sa.Column("data_source_name", sa.String(length=200), nullable=True),
        sa.Column("action_url", sa.String(length=500), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", **_utc(False)),
        sa.Column("read_at", **_utc(True)),
        sa.Column("acknowledged_at", **_utc(True)),
        sa.Column("acknowledged_by", sa.String(length=150), nullable=True),
        sa.Column("expires_at", **_utc(True)),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        "ix_notifications_user_created", "notifications", ["user_id", "created_at", "id"]
    )
    op.create_index(
        "ix_notifications_user_source_created",
        "notifications",
        ["user_id", "data_source_id", "created_at", "id"],
    )
    op.create_index(
        "ix_notifications_user_unread",
        "notifications",
        ["user_id", "created_at", "id"],
        sqlite_where=UNREAD,
        postgresql_where=UNREAD,
    )
    op.create_index(
        "ix_notifications_expires",
        "notifications",
        ["expires_at"],
        sqlite_where=EXPIRING,
        postgresql_where=EXPIRING,
    )
    op.create_index(
        "ix_notifications_user_expires",
        "notifications",
        ["user_id", "expires_at"],
        sqlite_where=EXPIRING,
        postgresql_where=EXPIRING,
    )

    op.create_table(
        "notification_counters",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("data_source_id", sa.Integer(), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("unread", sa.Integer(), nullable=False),
        sa.Column("unacknowledged", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notification_counters_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "user_id", "data_source_id", "dimension", "value", name=op.f("pk_notification_counters")
        ),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "notification_preferences",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("min_priority", sa.String(length=16), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("email_enabled", sa.Boolean(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("webhooks", sa.JSON(), nullable=False),
        sa.Column("updated_at", **_utc(False)),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notification_preferences_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_notification_preferences")),
    )

    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=320), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", **_utc(False)),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_notification_deliveries_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
    )
    op.create_index(
        op.f("ix_notification_deliveries_notification_id"),
        "notification_deliveries",
        ["notification_id"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_notification_deliveries_notification_id"), table_name="notification_deliveries"
    )
    op.drop_table("notification_deliveries")
    op.drop_table("notification_preferences")
    op.drop_table("notification_counters")
    for name in (
        "ix_notifications_user_expires",
        "ix_notifications_expires",
        "ix_notifications_user_unread",
        "ix_notifications_user_source_created",
        "ix_notifications_user_created",
    ):
        op.drop_index(name, table_name="notifications")
    op.drop_table("notifications")
