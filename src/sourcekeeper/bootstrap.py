"""What a process does once before serving or working: migrate, first admin, keys, task registry."""

from __future__ import annotations

import structlog

from sourcekeeper.core.config import get_settings
from sourcekeeper.core.db import session_scope

log = structlog.get_logger("sourcekeeper.bootstrap")


def migrate() -> None:
    """Bring the metadata database to the newest schema (Alembic, same migrations on SQLite and
    PG).
    """
    from alembic import command

    from sourcekeeper.migrations_config import alembic_config

    command.upgrade(alembic_config(), "head")


def prepare(*, run_migrations: bool = True) -> str | None:
    """Returns the generated admin password when one was just created (printed once by the CLI)."""
    from sourcekeeper import tasks  # noqa: F401  - registers every task with the queue
    from sourcekeeper.auth import service as auth_service
    from sourcekeeper.backups import keys as backup_keys

    settings = get_settings()
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    for directory in settings.allowed_sqlite_dirs:
        if directory == settings.resolved_data_dir / "sqlite":
            directory.mkdir(parents=True, exist_ok=True)
    if run_migrations:
        migrate()
    with session_scope() as db:
        password = auth_service.ensure_admin(db)
    with session_scope() as db:
        # The backup key exists before any job can need it (fail closed if it cannot be made).
        backup_keys.ensure_identity(db)
    if password:
        log.warning("first_admin_created", username="admin")
    return password
