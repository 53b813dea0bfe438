"""Migrations build the same schema on SQLite and PostgreSQL, and match the models exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from servers_plugin import DbServer
from sqlalchemy import inspect

from sourcekeeper import models
from sourcekeeper.core.db import make_engine
from sourcekeeper.migrations_config import alembic_config


def _schema(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        insp = inspect(engine)
        schema: dict[str, Any] = {}
        for table in insp.get_table_names():
            if table == "alembic_version":
                continue
            schema[table] = {
                "columns": {c["name"]: c["nullable"] for c in insp.get_columns(table)},
                "pk": tuple(insp.get_pk_constraint(table)["constrained_columns"]),
                "fks": sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"])
                    for f in insp.get_foreign_keys(table)
                ),
                # PostgreSQL also lists the index behind each unique constraint; count it once.
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in insp.get_indexes(table)
                    if "duplicates_constraint" not in i
                ),
                "unique": sorted(
                    (u["name"], tuple(u["column_names"]))
                    for u in insp.get_unique_constraints(table)
                ),
            }
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), models.Base.metadata)
        schema["__model_diff__"] = [d for d in diff if not _type_only(d)]
        return schema
    finally:
        engine.dispose()


def _type_only(diff: Any) -> bool:
    """SQLite reports our UTC column as DATETIME; a pure type reflection difference is not drift."""
    return isinstance(diff, list) and all(d[0] == "modify_type" for d in diff)


def test_same_schema_on_sqlite_and_postgresql(tmp_path: Path, pg_server: DbServer) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'migrated.db'}"
    pg_server.create_database("sk_migrations")
    pg_url = pg_server.url("sk_migrations")
    try:
        for url in (sqlite_url, pg_url):
            command.upgrade(alembic_config(url), "head")
        on_sqlite, on_pg = _schema(sqlite_url), _schema(pg_url)
        assert on_sqlite["__model_diff__"] == [], on_sqlite["__model_diff__"]
        assert on_pg["__model_diff__"] == [], on_pg["__model_diff__"]
        assert on_sqlite == on_pg
        assert {"users", "data_sources", "audit_events", "auth_tokens"} <= set(on_pg)
        # and back down again, so a bad release can be rolled back
        for url in (sqlite_url, pg_url):
            command.downgrade(alembic_config(url), "base")
            engine = make_engine(url)
            assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
            engine.dispose()
    finally:
        pg_server.drop_database("sk_migrations")
