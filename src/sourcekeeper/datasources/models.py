"""Registered data sources."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sourcekeeper.core.db import Base, TimestampMixin


class DataSource(TimestampMixin, Base):
    __tablename__ = "data_sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source_type: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None]
    database_name: Mapped[str] = mapped_column(String(1024))
    username: Mapped[str | None] = mapped_column(String(255))
    password_encrypted: Mapped[str | None] = mapped_column(Text)
    connection_properties: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    description: Mapped[str | None] = mapped_column(Text)
    environment: Mapped[str] = mapped_column(String(16), default="development", index=True)
    criticality: Mapped[str] = mapped_column(String(16), default="medium")
    data_classification: Mapped[str] = mapped_column(String(16), default="internal")
    owner: Mapped[str | None] = mapped_column(String(200))
    team: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    backup_enabled: Mapped[bool] = mapped_column(default=True)
    last_backup: Mapped[datetime | None]
    last_scan: Mapped[datetime | None]
    last_reachable: Mapped[bool | None]  # remembered so "unreachable" is announced once per outage
    created_by: Mapped[str | None] = mapped_column(String(150))

    @property
    def has_password(self) -> bool:
        return self.password_encrypted is not None
