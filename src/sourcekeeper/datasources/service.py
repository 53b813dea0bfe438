"""Register, change and reach data sources; the only door to a source's connector."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.auth import service as auth_service
from sourcekeeper.auth.models import User
from sourcekeeper.core.config import get_settings
from sourcekeeper.core.crypto import decrypt_secret, encrypt_secret
from sourcekeeper.core.errors import Conflict, InvalidInput, NotFound
from sourcekeeper.core.logging import register_secret
from sourcekeeper.core.pagination import PageParams, paginate
from sourcekeeper.datasources.connectors.base import ConnectionCheck, Connector, ConnParams
from sourcekeeper.datasources.models import DataSource
from sourcekeeper.datasources.schemas import DataSourceCreate, DataSourceUpdate
from sourcekeeper.notifications import service as notifications_service

DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def get(db: Session, data_source_id: int) -> DataSource | None:
    return db.get(DataSource, data_source_id)


def get_or_404(db: Session, data_source_id: int) -> DataSource:
    ds = db.get(DataSource, data_source_id)
    if ds is None:
        raise NotFound(f"Data source {data_source_id} does not exist")
    return ds


def list_sources(
    db: Session,
    *,
    page: PageParams,
    visible_ids: list[int] | None,
    source_type: str | None = None,
    status: str | None = None,
    environment: str | None = None,
    search: str | None = None,
) -> tuple[list[DataSource], int]:
    """Newest first; `visible_ids` (None = all) hides sources the caller has no grant on."""
    stmt: Select[Any] = select(DataSource).order_by(DataSource.id.desc())
    if visible_ids is not None:
        stmt = stmt.where(DataSource.id.in_(visible_ids))
    if source_type:
        stmt = stmt.where(DataSource.source_type == source_type)
    if status:
        stmt = stmt.where(DataSource.status == status)
    if environment:
        stmt = stmt.where(DataSource.environment == environment)
    if search:
        like = f"%{search.lower()}%"
        stmt = stmt.where(
            or_(
                func.lower(DataSource.name).like(like),
                func.lower(func.coalesce(DataSource.description, "")).like(like),
                func.lower(func.coalesce(DataSource.database_name, "")).like(like),
                func.lower(func.coalesce(DataSource.owner, "")).like(like),
                func.lower(func.coalesce(DataSource.team, "")).like(like),
            )
        )
    return paginate(db, stmt, page)


def sqlite_path_allowed(path: str) -> Path:
    """Resolve a SQLite path and insist it lies under an allowed directory (symlinks resolved)."""
    if "\x00" in path or not path.strip():
        raise InvalidInput("SQLite database path is empty or invalid", field="database_name")
    resolved = Path(os.path.realpath(Path(path).expanduser()))
    allowed = get_settings().allowed_sqlite_dirs
    if not any(resolved == d or d in resolved.parents for d in allowed):
        raise InvalidInput(
            "SQLite database path must lie under an allowed directory "
            f"({', '.join(str(d) for d in allowed)}); set SOURCEKEEPER_SQLITE_ALLOWED_DIRS",
            field="database_name",
        )
    return resolved


def _check_shape(ds: DataSource) -> None:
    if ds.source_type == "sqlite":
        ds.database_name = str(sqlite_path_allowed(ds.database_name))
        ds.host, ds.port = None, None
        return
    if not ds.host:
        raise InvalidInput(f"host is required for a {ds.source_type} source", field="host")
    if ds.port is None:
        ds.port = DEFAULT_PORTS[ds.source_type]


def _name_taken(db: Session, name: str, exclude_id: int | None = None) -> bool:
    stmt = select(DataSource.id).where(func.lower(DataSource.name) == name.lower())
    if exclude_id is not None:
        stmt = stmt.where(DataSource.id != exclude_id)
    return db.scalar(stmt) is not None


def _set_password(ds: DataSource, password: str | None) -> None:
    if not password:
        ds.password_encrypted = None
        return
    register_secret(password)
    ds.password_encrypted = encrypt_secret(password, context=f"data_source:{ds.id}")


def create(db: Session, *, data: DataSourceCreate, actor: User) -> DataSource:
    """Register a source; the password is encrypted, and a non-admin creator is granted admin on
    it.
    """
    values = data.given()
    password = values.pop("password", None)
    if _name_taken(db, data.name):
        raise Conflict(f"A data source named '{data.name}' already exists")
    values.setdefault("status", "pending")  # a given status must not be passed twice (was a 500)
    ds = DataSource(**values, created_by=actor.username)
    _check_shape(ds)
    db.add(ds)
    db.flush()
    _set_password(ds, password.get_secret_value() if password else None)
    auth_service.grant_creator(db, user=actor, data_source_id=ds.id)
    audit.record(
        db,
        actor=actor.username,
        action="datasource.created",
        target=f"data_source:{ds.id}",
        data_source_id=ds.id,
        details={"name": ds.name, "source_type": ds.source_type},
    )
    return ds


def update(db: Session, *, ds: DataSource, data: DataSourceUpdate, actor: str) -> DataSource:
    """Change the given fields; an empty password string removes the stored password."""
    values = data.given()
    password = values.pop("password", None)
    if "name" in values and _name_taken(db, values["name"], exclude_id=ds.id):
        raise Conflict(f"A data source named '{values['name']}' already exists")
    for key, value in values.items():
        setattr(ds, key, value)
    _check_shape(ds)
    if password is not None:
        _set_password(ds, password.get_secret_value())
    changed = sorted(values) + (["password"] if password is not None else [])
    audit.record(
        db,
        actor=actor,
        action="datasource.updated",
        target=f"data_source:{ds.id}",
        data_source_id=ds.id,
        details={"fields": changed},
    )
    return ds


def delete(db: Session, *, ds: DataSource, actor: str) -> None:
    audit.record(
        db,
        actor=actor,
        action="datasource.deleted",
        target=f"data_source:{ds.id}",
        data_source_id=ds.id,
        details={"name": ds.name},
    )
    db.delete(ds)


def conn_params(ds: DataSource) -> ConnParams:
    """Decrypt the credentials into the plain parameters a connector takes."""
    password = None
    if ds.password_encrypted:
        password = decrypt_secret(ds.password_encrypted, context=f"data_source:{ds.id}")
        register_secret(password)
    return ConnParams(
        engine=ds.source_type,
        host=ds.host,
        port=ds.port,
        database=ds.database_name,
        username=ds.username,
        password=password,
        options=dict(ds.connection_properties or {}),
        connect_timeout=get_settings().connect_timeout_seconds,
    )


def connector_for(ds: DataSource) -> Connector:
    """The engine's connector for this source (other domains never build connectors themselves)."""
    from sourcekeeper.datasources.connectors import registry

    return registry.connector_for(conn_params(ds))


def record_reachability(db: Session, *, ds: DataSource, ok: bool, message: str) -> bool:
    """Remember whether the source answered; True when it just went from reachable to
    unreachable.
    """
    went_down = not ok and ds.last_reachable is not False
    ds.last_reachable = ok
    if ok and ds.status in ("pending", "error"):
        ds.status = "active"
    elif not ok and ds.status != "inactive":
        ds.status = "error"
    return went_down


def test_connection(db: Session, *, ds: DataSource, actor: str) -> ConnectionCheck:
    """Connect once (bounded by the connect timeout) and report version, latency and SSL."""
    check = connector_for(ds).test_connection()
    if record_reachability(db, ds=ds, ok=check.ok, message=check.message):
        notifications_service.emit(
            db,
            event_type="datasource.unreachable",
            category="connectivity",
            type="error",
            priority="high",
            title=f"Data source '{ds.name}' is unreachable",
            message=f"Data source '{ds.name}' is unreachable: {check.message}",
            data_source_id=ds.id,
            action_url=f"/data-sources/{ds.id}",
        )
    audit.record(
        db,
        actor=actor,
        action="datasource.connection_tested",
        target=f"data_source:{ds.id}",
        data_source_id=ds.id,
        outcome="success" if check.ok else "failure",
        details={"message": check.message},
    )
    return check
