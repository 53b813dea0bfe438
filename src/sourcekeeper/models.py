"""Imports every domain's models so mappers resolve and Alembic sees the whole schema."""

from sourcekeeper.auditlog.models import AuditEvent
from sourcekeeper.auth.models import AuthToken, DataSourceGrant, User
from sourcekeeper.backups.models import Backup, BackupKey, BackupSchedule, Restore
from sourcekeeper.core.db import Base
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.notifications.models import (
    Notification,
    NotificationCounter,
    NotificationDelivery,
    NotificationPreference,
)

__all__ = [
    "AuditEvent",
    "AuthToken",
    "Backup",
    "BackupKey",
    "BackupSchedule",
    "Base",
    "DataSource",
    "DataSourceGrant",
    "Notification",
    "NotificationCounter",
    "NotificationDelivery",
    "NotificationPreference",
    "Restore",
    "User",
]
