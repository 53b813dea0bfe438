"""SQLite connector on real files: online backup, restore onto a live WAL database, toc."""

from __future__ import annotations

import io
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from sourcekeeper.core.errors import ConnectorFailed, TargetExists
from sourcekeeper.datasources.connectors.base import ConnParams
from sourcekeeper.datasources.connectors.registry import connector_for
from sourcekeeper.datasources.connectors.sqlite import SQLiteConnector

EXPECTED = {"audit log": 1000, "items": 1000, "empty": 0}


def connector(path: Path) -> SQLiteConnector:
    return SQLiteConnector(ConnParams(engine="sqlite", host=None, port=None, database=str(path)))


@pytest.fixture
def live_db(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A WAL database with an index, a trigger and AUTOINCREMENT, held open by a writer."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(
        """
        CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, blob BLOB);
        CREATE INDEX items_name ON items (name);
        CREATE TABLE "audit log" (item_id INTEGER);
        CREATE TRIGGER audit AFTER INSERT ON items
            BEGIN INSERT INTO "audit log" VALUES (new.id); END;
        CREATE TABLE empty (x);
        """
    )
    conn.executemany(
        "INSERT INTO items (name, blob) VALUES (?, ?)",
        [(f"item {i}", bytes([i % 256]) * 100) for i in range(1000)],
    )
    conn.commit()
    yield path, conn
    conn.close()


def dump_bytes(c: SQLiteConnector) -> bytes:
    with c.dump() as dump:
        data = dump.stdout.read()
        dump.wait()
    return data


class TestConnection:
    def test_missing_file_is_reported_and_not_created(self, tmp_path: Path) -> None:
        path = tmp_path / "missing.db"
        check = connector(path).test_connection()
        assert not check.ok
        assert check.message == f"file does not exist: {path}"
        assert not path.exists()

    def test_a_file_that_is_no_database(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("hello " * 1000)
        check = connector(path).test_connection()
        assert not check.ok
        assert "not a database" in check.message

    def test_ok(self, live_db: tuple[Path, sqlite3.Connection]) -> None:
        path, _ = live_db
        check = connector_for(
            ConnParams(engine="sqlite", host=None, port=None, database=str(path))
        ).test_connection()
        assert check.ok, check.message
        assert check.server_version == sqlite3.sqlite_version
        assert check.latency_ms is not None and check.ssl is None


class TestCatalog:
    def test_tables_and_counts(self, live_db: tuple[Path, sqlite3.Connection]) -> None:
        path, _ = live_db
        assert connector(path).list_tables() == sorted(EXPECTED)
        assert connector(path).table_row_counts() == EXPECTED

    def test_create_and_drop(self, tmp_path: Path) -> None:
        c = connector(tmp_path / "app.db")
        target = str(tmp_path / "new.db")
        assert not c.database_exists(target)
        c.create_database(target)
        assert c.database_exists(target)
        assert c.for_database(target).test_connection().ok
        with pytest.raises(TargetExists):
            c.create_database(target)
        c.drop_database(target)
        assert not c.database_exists(target)


class TestDumpRestore:
    def test_round_trip_into_a_new_file(
        self, live_db: tuple[Path, sqlite3.Connection], tmp_path: Path
    ) -> None:
        path, _ = live_db
        source = connector(path)
        with source.dump() as dump:
            data = dump.stdout.read()
            dump.wait()
            dump.kill()  # finished already: a no-op
        assert dump.info == {
            "tool": "sqlite3-backup-api",
            "tool_version": sqlite3.sqlite_version,
            "format": "sqlite",
        }
        assert data.startswith(b"SQLite format 3\0")
        spool_dir = Path(tempfile.gettempdir())
        before = set(spool_dir.glob("sk-*"))
        assert SQLiteConnector.toc(io.BytesIO(data)) == sorted(EXPECTED)
        assert set(spool_dir.glob("sk-*")) <= before  # toc's temp copy left nothing behind

        target = tmp_path / "restored.db"
        source.restore(io.BytesIO(data), database=str(target))
        assert connector(target).table_row_counts() == EXPECTED
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    def test_restore_onto_the_live_original(self, live_db: tuple[Path, sqlite3.Connection]) -> None:
        path, writer = live_db
        source = connector(path)
        data = dump_bytes(source)
        writer.execute("DELETE FROM items WHERE id > 10")
        writer.commit()
        assert source.table_row_counts()["items"] == 10

        source.restore(io.BytesIO(data))
        assert source.table_row_counts() == EXPECTED
        # The connection that stayed open sees the restored data, not a stale WAL.
        assert writer.execute("SELECT count(*) FROM items").fetchone() == (1000,)
        with closing(sqlite3.connect(path)) as check:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    def test_restore_a_table_subset(
        self, live_db: tuple[Path, sqlite3.Connection], tmp_path: Path
    ) -> None:
        path, writer = live_db
        source = connector(path)
        data = dump_bytes(source)
        writer.execute("DELETE FROM items")
        writer.execute('DELETE FROM "audit log"')
        writer.commit()

        source.restore(io.BytesIO(data), tables=["items"])
        assert source.table_row_counts() == {"audit log": 0, "items": 1000, "empty": 0}
        indexes = writer.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
        assert ("items_name",) in indexes
        writer.execute("INSERT INTO items (name) VALUES ('new')")  # trigger and sequence came too
        writer.commit()
        assert writer.execute('SELECT max(item_id) FROM "audit log"').fetchone() == (1001,)

        with pytest.raises(ConnectorFailed, match="already exists"):
            source.restore(io.BytesIO(data), tables=["items"], clean=False)
        with pytest.raises(ConnectorFailed, match="not in the backup: nope"):
            source.restore(io.BytesIO(data), tables=["nope"])

    def test_truncated_backup_is_refused_and_the_target_untouched(
        self, live_db: tuple[Path, sqlite3.Connection]
    ) -> None:
        path, _ = live_db
        source = connector(path)
        data = dump_bytes(source)
        with pytest.raises(ConnectorFailed):
            source.restore(io.BytesIO(data[: len(data) // 2]))
        with pytest.raises(ConnectorFailed):
            SQLiteConnector.toc(io.BytesIO(data[: len(data) // 2]))
        assert source.table_row_counts() == EXPECTED
        assert not [p for p in path.parent.iterdir() if ".restore-" in p.name]

    def test_dump_of_a_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConnectorFailed, match="file does not exist"):
            connector(tmp_path / "gone.db").dump()
