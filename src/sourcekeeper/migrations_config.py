"""Where the Alembic scripts live and which database they target (from settings, not
alembic.ini).
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from sourcekeeper.core.config import get_settings

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = url or get_settings().resolved_database_url
    return cfg
