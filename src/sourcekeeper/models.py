"""Imports every domain's models so mappers resolve and Alembic sees the whole schema."""

from sourcekeeper.auditlog.models import AuditEvent
from sourcekeeper.auth.models import AuthToken, DataSourceGrant, User
from sourcekeeper.core.db import Base
from sourcekeeper.datasources.models import DataSource

__all__ = ["AuditEvent", "AuthToken", "Base", "DataSource", "DataSourceGrant", "User"]
