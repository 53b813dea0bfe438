"""Engine name → connector class; the one place that knows which engines exist."""

from __future__ import annotations

from sourcekeeper.core.errors import InvalidInput

from .base import Connector, ConnParams
from .mysql import MySQLConnector
from .postgres import PostgresConnector
from .sqlite import SQLiteConnector

CONNECTORS: dict[str, type[Connector]] = {
    "postgresql": PostgresConnector,
    "mysql": MySQLConnector,  # MariaDB speaks the same protocol and ships compatible tools
    "mariadb": MySQLConnector,
    "sqlite": SQLiteConnector,
}


def connector_for(params: ConnParams) -> Connector:
    """The connector for `params.engine`."""
    try:
        cls = CONNECTORS[params.engine]
    except KeyError:
        raise InvalidInput(f"unsupported engine {params.engine!r}", field="source_type") from None
    return cls(params)
