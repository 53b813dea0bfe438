"""Alembic environment: the URL comes from sourcekeeper's settings; batch mode keeps SQLite
happy.
"""

from __future__ import annotations

from alembic import context

from sourcekeeper import models
from sourcekeeper.core.config import get_settings
from sourcekeeper.core.db import make_engine

config = context.config
url = config.attributes.get("database_url") or get_settings().resolved_database_url


def run_migrations() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=models.Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
