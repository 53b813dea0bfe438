from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr

from sourcekeeper.core.schemas import Bool, Input, Schema, Str, UtcDateTime

SourceType = Literal["postgresql", "mysql", "mariadb", "sqlite"]
Environment = Literal["production", "staging", "development", "test"]
Criticality = Literal["critical", "high", "medium", "low"]
Classification = Literal["public", "internal", "confidential", "restricted"]
SourceStatus = Literal["active", "inactive", "error", "pending"]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
Name = Annotated[Str, Field(min_length=1, max_length=200)]
Text = Annotated[Str, Field(max_length=5000)]
Short = Annotated[Str, Field(max_length=255)]
Tag = Annotated[Str, Field(min_length=1, max_length=64)]
Properties = dict[Annotated[Str, Field(max_length=64)], Annotated[Str, Field(max_length=1024)]]


class DataSourceRead(Schema):
    id: int
    name: str
    source_type: str
    host: str | None
    port: int | None
    database_name: str
    username: str | None
    connection_properties: dict[str, str]
    description: str | None
    environment: str
    criticality: str
    data_classification: str
    owner: str | None
    team: str | None
    tags: list[str]
    status: str
    backup_enabled: bool
    has_password: bool
    last_backup: UtcDateTime | None
    last_scan: UtcDateTime | None
    created_by: str | None
    created_at: UtcDateTime
    updated_at: UtcDateTime


class DataSourceUpdate(Input):
    """Every field optional; null or absent leaves the value as it is."""

    name: Name | None = None
    host: Short | None = None
    port: Port | None = None
    database_name: Annotated[Str, Field(min_length=1, max_length=1024)] | None = None
    username: Short | None = None
    password: Annotated[SecretStr, Field(max_length=1024)] | None = None
    connection_properties: Properties | None = None
    description: Text | None = None
    environment: Environment | None = None
    criticality: Criticality | None = None
    data_classification: Classification | None = None
    owner: Short | None = None
    team: Short | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] | None = None
    status: SourceStatus | None = None
    backup_enabled: Bool | None = None


class DataSourceCreate(DataSourceUpdate):
    name: Name
    source_type: SourceType
    database_name: Annotated[Str, Field(min_length=1, max_length=1024)]


class DataSourceOut(Schema):
    data_source: DataSourceRead


class DataSourceList(Schema):
    data_sources: list[DataSourceRead]
    total: int


class ConnectionTest(Schema):
    ok: bool
    latency_ms: float | None
    server_version: str | None
    database: str | None
    ssl: bool | None
    message: str
