"""SQLite: the database is a file; the online backup API gives a consistent copy of a live one.

Which paths are allowed is decided by the datasources service; this connector trusts its params.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from sourcekeeper.core.errors import ConnectorFailed, TargetExists

from .base import (
    COPY_CHUNK,
    ConnectionCheck,
    Connector,
    DumpProcess,
    FileDump,
    describe_unexpected,
    spooled,
)

USER_TABLES = (
    "SELECT name FROM {schema}.sqlite_master"
    " WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
)
SIDE_FILES = ("-wal", "-shm", "-journal")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tables(conn: sqlite3.Connection, schema: str = "main") -> list[str]:
    return [str(row[0]) for row in conn.execute(USER_TABLES.format(schema=schema))]


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()[0])


def _check_integrity(conn: sqlite3.Connection, what: str) -> None:
    """quick_check reads every page: a truncated or corrupted copy fails here, not in production."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ConnectorFailed(f"{what} is not a valid SQLite database: {exc}") from exc
    if [tuple(r) for r in rows] != [("ok",)]:
        raise ConnectorFailed(f"{what} failed the integrity check: {rows[0][0]}")


class SQLiteConnector(Connector):
    """A SQLite database file on this server's disk."""

    engine = "sqlite"

    def _path(self, database: str | None = None) -> Path:
        return Path(database or self.params.database).expanduser()

    @contextmanager
    def _open(self, database: str | None = None) -> Iterator[sqlite3.Connection]:
        """A read-only connection: a `mode=ro` URI never creates a file for a mistyped path."""
        path = self._path(database)
        if not path.is_file():
            raise ConnectorFailed(f"file does not exist: {path}")
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=self.params.connect_timeout,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise ConnectorFailed(f"cannot open {path}: {exc}") from exc
        try:
            with closing(conn):
                yield conn
        except sqlite3.Error as exc:
            raise ConnectorFailed(f"{path}: {exc}") from exc

    # -- queries ------------------------------------------------------------------------------

    def test_connection(self) -> ConnectionCheck:
        path = self.params.database
        fail = ConnectionCheck(False, None, None, path, None, "")
        try:
            with self._open() as conn:
                conn.execute(
                    "SELECT count(*) FROM sqlite_master"
                ).fetchone()  # rejects non-databases
                started = time.perf_counter()
                conn.execute("SELECT 1").fetchone()
                latency = (time.perf_counter() - started) * 1000
        except ConnectorFailed as exc:
            fail.message = exc.message
            return fail
        except Exception as exc:  # a check must answer, whatever went wrong
            fail.message = describe_unexpected(exc, self.params)
            return fail
        version = sqlite3.sqlite_version
        return ConnectionCheck(
            True, round(latency, 3), version, path, None, f"opened {path} (SQLite {version})"
        )

    def server_version(self) -> str:
        """The SQLite library's version: a file has no server, this library reads and writes it."""
        return sqlite3.sqlite_version

    def list_tables(self) -> list[str]:
        with self._open() as conn:
            return _tables(conn)

    def table_row_counts(self) -> dict[str, int]:
        with self._open() as conn:
            conn.execute("BEGIN")  # one read snapshot for all counts
            counts = {
                table: int(conn.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()[0])
                for table in _tables(conn)
            }
            conn.execute("COMMIT")
            return counts

    def database_exists(self, name: str) -> bool:
        return self._path(name).exists()

    def create_database(self, name: str) -> None:
        path = self._path(name)
        if path.exists():
            raise TargetExists(f"file {str(path)!r} already exists")
        if not path.parent.is_dir():
            raise ConnectorFailed(f"directory does not exist: {path.parent}")
        try:
            with closing(sqlite3.connect(path)) as conn:
                conn.execute("PRAGMA user_version = 0")
        except sqlite3.Error as exc:
            raise ConnectorFailed(f"cannot create {path}: {exc}") from exc

    def drop_database(self, name: str) -> None:
        path = self._path(name)
        for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SIDE_FILES)):
            candidate.unlink(missing_ok=True)

    # -- dump and restore ---------------------------------------------------------------------

    def dump(self) -> DumpProcess:
        """Copy the live file with the backup API into a temp file, then hand that file out.

        The temp file is unlinked at once: the open handle keeps it readable, and nothing is left
        behind whatever the caller does.
        """
        fd, name = tempfile.mkstemp(prefix="sk-sqlite-dump-", suffix=".db")
        os.close(fd)
        try:
            with self._open() as src, closing(sqlite3.connect(name)) as dst:
                src.backup(dst)
                # Counted in the copy itself, so the counts are exactly those of the dump.
                counts = {table: _count(dst, table) for table in _tables(dst)}
            fh = open(name, "rb")  # noqa: SIM115 - returned to the caller, closed by DumpProcess
        except sqlite3.Error as exc:
            raise ConnectorFailed(f"backup of {self.params.database} failed: {exc}") from exc
        finally:
            os.unlink(name)
        info = {
            "tool": "sqlite3-backup-api",
            "tool_version": sqlite3.sqlite_version,
            "format": "sqlite",
        }
        dump = FileDump(fh, info)
        dump.row_counts = counts
        return dump

    def restore(
        self,
        stream: BinaryIO,
        *,
        database: str | None = None,
        tables: list[str] | None = None,
        clean: bool = True,
        jobs: int = 1,
        cancel: threading.Event | None = None,
    ) -> None:
        """Restore a whole file (clean) or copy tables into the target; `jobs` is ignored, and so
        is `cancel`: the copy is local and short, and a cancelling `stream` stops it anyway.

        The backup is first written next to the target, so a failed or partial write never
        touches it. A full restore onto an existing file goes through the backup API (which takes
        SQLite's locks and handles WAL); a new target is simply renamed into place.
        """
        target = self._path(database)
        if not target.parent.is_dir():
            raise ConnectorFailed(f"directory does not exist: {target.parent}")
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.restore-")
        staged = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                shutil.copyfileobj(stream, fh, COPY_CHUNK)
            with closing(sqlite3.connect(staged, isolation_level=None)) as src:
                _check_integrity(src, "the backup")
                if tables is None and clean and not target.exists():
                    src.close()
                    os.replace(staged, target)
                elif tables is None and clean:
                    with closing(
                        sqlite3.connect(target, timeout=self.params.connect_timeout)
                    ) as dst:
                        src.backup(dst)
                else:
                    self._copy_tables(staged, target, tables, clean)
        except sqlite3.Error as exc:
            raise ConnectorFailed(f"restore into {target} failed: {exc}") from exc
        finally:
            for leftover in (staged, *(Path(f"{staged}{s}") for s in SIDE_FILES)):
                leftover.unlink(missing_ok=True)

    def _copy_tables(
        self, staged: Path, target: Path, tables: list[str] | None, clean: bool
    ) -> None:
        """Copy tables (with indexes and triggers) from the staged backup in one transaction."""
        with closing(
            sqlite3.connect(target, timeout=self.params.connect_timeout, isolation_level=None)
        ) as dst:
            dst.execute("ATTACH DATABASE ? AS backup", (str(staged),))
            available = _tables(dst, "backup")
            chosen = available if tables is None else tables
            if missing := sorted(set(chosen) - set(available)):
                raise ConnectorFailed(f"not in the backup: {', '.join(missing)}")
            dst.execute("BEGIN IMMEDIATE")
            try:
                for table in chosen:
                    self._copy_table(dst, table, clean)
                dst.execute("COMMIT")
            except BaseException:
                dst.execute("ROLLBACK")
                raise
            finally:
                with suppress(sqlite3.Error):
                    dst.execute("DETACH DATABASE backup")

    @staticmethod
    def _copy_table(dst: sqlite3.Connection, table: str, clean: bool) -> None:
        quoted = quote_ident(table)
        if clean:
            dst.execute(f"DROP TABLE IF EXISTS main.{quoted}")
        objects = dst.execute(
            "SELECT type, sql FROM backup.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL"
            " ORDER BY type = 'table' DESC",
            (table,),
        ).fetchall()
        for kind, ddl in objects:
            dst.execute(ddl)  # unqualified DDL creates in main
            if kind == "table":
                dst.execute(f"INSERT INTO main.{quoted} SELECT * FROM backup.{quoted}")
        if dst.execute(
            "SELECT 1 FROM backup.sqlite_master WHERE name = 'sqlite_sequence'"
        ).fetchone():
            # AUTOINCREMENT counters live in sqlite_sequence; carry this table's over.
            with suppress(sqlite3.OperationalError):  # main has none if no AUTOINCREMENT table
                dst.execute("DELETE FROM main.sqlite_sequence WHERE name = ?", (table,))
                dst.execute(
                    "INSERT INTO main.sqlite_sequence"
                    " SELECT * FROM backup.sqlite_sequence WHERE name = ?",
                    (table,),
                )

    @staticmethod
    def toc(stream: BinaryIO) -> list[str]:
        """Tables in a SQLite backup, after checking that the file is intact."""
        with spooled(stream, suffix=".db") as path:
            # immutable: a private copy needs no locks, and SQLite then leaves no -wal/-shm behind.
            uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
            try:
                with closing(sqlite3.connect(uri, uri=True)) as conn:
                    _check_integrity(conn, "the backup")
                    return _tables(conn)
            except sqlite3.Error as exc:
                raise ConnectorFailed(f"the backup is not a valid SQLite database: {exc}") from exc
