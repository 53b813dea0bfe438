"""MySQL/MariaDB connector against a real MariaDB server (servers_plugin's `mariadb_server`)."""

from __future__ import annotations

import io
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers_plugin import DbServer, free_port

from sourcekeeper.core.errors import ConnectorFailed, TargetExists
from sourcekeeper.datasources.connectors.base import ConnParams
from sourcekeeper.datasources.connectors.mysql import MySQLConnector
from sourcekeeper.datasources.connectors.registry import CONNECTORS, connector_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("mariadb-dump") is None and shutil.which("mysqldump") is None,
        reason="mariadb-dump not installed",
    ),
]

SEED = """
CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, photo BLOB);
INSERT INTO customers (name, photo)
    SELECT CONCAT('customer ', seq), UNHEX(MD5(seq)) FROM seq_1_to_500;
CREATE TABLE orders (
    id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id INT, amount DECIMAL(10, 2),
    FOREIGN KEY (customer_id) REFERENCES customers (id));
INSERT INTO orders (customer_id, amount) SELECT 1 + seq % 500, seq / 7 FROM seq_1_to_2000;
CREATE TABLE `odd ``name` (id INT, note TEXT);
INSERT INTO `odd ``name` SELECT seq, REPEAT('x', seq % 50) FROM seq_1_to_300;
CREATE TABLE empty_table (id INT);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100;
CREATE TRIGGER round_amount BEFORE INSERT ON orders FOR EACH ROW SET NEW.amount = ROUND(NEW.amount);
CREATE PROCEDURE count_orders() SELECT COUNT(*) FROM orders;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM empty_table;
"""
EXPECTED = {"customers": 500, "empty_table": 0, "odd `name": 300, "orders": 2000}
CHECKSUM = "SELECT MD5(GROUP_CONCAT(id, name, HEX(photo) ORDER BY id SEPARATOR ',')) FROM customers"
OBJECTS = (
    "SELECT (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()),"
    " (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()),"
    " (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()),"
    " (SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE())"
)


def params(server: DbServer, database: str, **overrides: object) -> ConnParams:
    values: dict[str, object] = {
        "engine": "mariadb",
        "host": server.host,
        "port": server.port,
        "database": database,
        "username": server.superuser,
        "password": server.password,
        "connect_timeout": 3.0,
    }
    values.update(overrides)
    return ConnParams(**values)  # type: ignore[arg-type]


@pytest.fixture
def source_db(mariadb_server: DbServer, unique: str) -> Iterator[str]:
    name = f"sk_src_{unique}"
    mariadb_server.create_database(name)
    mariadb_server.execute(SEED, name)
    yield name
    mariadb_server.drop_database(name)


@pytest.fixture
def new_db(mariadb_server: DbServer, unique: str) -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        name = f"sk_new_{unique}_{len(made)}"
        mariadb_server.create_database(name)
        made.append(name)
        return name

    yield make
    for name in made:
        mariadb_server.drop_database(name)


@pytest.fixture(scope="module")
def big_db(mariadb_server: DbServer) -> Iterator[str]:
    """A database whose dump is far larger than a pipe buffer, so the dump blocks until read."""
    name = "sk_big_my"
    mariadb_server.drop_database(name)
    mariadb_server.create_database(name)
    mariadb_server.execute(
        "CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(64)) AS"
        " SELECT seq AS id, CONCAT(MD5(seq), MD5(seq * 7)) AS payload FROM seq_1_to_200000",
        name,
    )
    yield name
    mariadb_server.drop_database(name)


def dump_bytes(connector: MySQLConnector) -> bytes:
    with connector.dump() as dump:
        data = dump.stdout.read()
        dump.wait()
    return data


class TestConnection:
    def test_ok_reports_version_latency_and_no_ssl(
        self, mariadb_server: DbServer, source_db: str
    ) -> None:
        check = MySQLConnector(params(mariadb_server, source_db)).test_connection()
        assert check.ok, check.message
        assert check.server_version and "MariaDB" in check.server_version
        assert check.latency_ms is not None and 0 < check.latency_ms < 1000
        assert check.ssl is False
        assert check.database == source_db

    def test_closed_port_fails_fast_and_clearly(self, mariadb_server: DbServer) -> None:
        port = free_port()
        started = time.monotonic()
        check = MySQLConnector(params(mariadb_server, "x", port=port)).test_connection()
        assert time.monotonic() - started < 1.5
        assert not check.ok
        assert check.message == f"could not connect to 127.0.0.1:{port}: connection refused"

    def test_black_holed_host_returns_within_timeout(
        self, mariadb_server: DbServer, black_hole_port: int
    ) -> None:
        connector = MySQLConnector(
            params(mariadb_server, "x", port=black_hole_port, connect_timeout=1.5)
        )
        started = time.monotonic()
        check = connector.test_connection()
        assert time.monotonic() - started < 1.5 + 1.0
        assert not check.ok
        assert "timed out" in check.message

    def test_silent_server_returns_within_timeout(
        self, mariadb_server: DbServer, silent_port: int
    ) -> None:
        connector = MySQLConnector(
            params(mariadb_server, "x", port=silent_port, connect_timeout=1.5)
        )
        started = time.monotonic()
        check = connector.test_connection()
        assert time.monotonic() - started < 1.5 + 1.0
        assert not check.ok
        assert "timed out" in check.message

    def test_wrong_password_is_named_but_never_shown(self, mariadb_server: DbServer) -> None:
        wrong = "Wr0ng-pass-" + mariadb_server.password[:6]
        check = MySQLConnector(params(mariadb_server, "", password=wrong)).test_connection()
        assert not check.ok
        assert "password authentication failed" in check.message
        assert wrong not in check.message and wrong not in repr(check)
        assert mariadb_server.password not in check.message

    def test_unknown_database(self, mariadb_server: DbServer, unique: str) -> None:
        check = MySQLConnector(params(mariadb_server, f"nope_{unique}")).test_connection()
        assert not check.ok
        assert check.message == f"database 'nope_{unique}' does not exist"

    def test_registry_shares_one_class_for_mysql_and_mariadb(
        self, mariadb_server: DbServer
    ) -> None:
        assert CONNECTORS["mysql"] is CONNECTORS["mariadb"] is MySQLConnector
        connector = connector_for(params(mariadb_server, "", engine="mysql"))
        assert "MariaDB" in connector.server_version()


class TestCatalog:
    def test_tables_and_exact_row_counts(self, mariadb_server: DbServer, source_db: str) -> None:
        connector = MySQLConnector(params(mariadb_server, source_db))
        assert connector.list_tables() == sorted(EXPECTED)
        assert connector.table_row_counts() == EXPECTED

    def test_create_and_drop_database(self, mariadb_server: DbServer, unique: str) -> None:
        name = f"sk_made_{unique}"
        connector = MySQLConnector(params(mariadb_server, ""))
        try:
            assert not connector.database_exists(name)
            connector.create_database(name)
            assert connector.database_exists(name)
            with pytest.raises(TargetExists):
                connector.create_database(name)
            connector.drop_database(name)
            assert not connector.database_exists(name)
        finally:
            mariadb_server.drop_database(name)


class TestDumpRestore:
    def test_round_trip_into_a_new_database(
        self, mariadb_server: DbServer, source_db: str, new_db: Callable[[], str]
    ) -> None:
        source = MySQLConnector(params(mariadb_server, source_db))
        with source.dump() as dump:
            data = dump.stdout.read()
            dump.wait()
        assert dump.info["tool"] in ("mariadb-dump", "mysqldump")
        assert dump.info["format"] == "sql" and dump.info["tool_version"]
        assert MySQLConnector.toc(io.BytesIO(data)) == sorted(EXPECTED)

        target_name = new_db()
        source.restore(io.BytesIO(data), database=target_name)
        assert source.for_database(target_name).table_row_counts() == EXPECTED
        checksum = mariadb_server.execute(CHECKSUM, target_name)
        assert checksum == mariadb_server.execute(CHECKSUM, source_db)
        # Routines, triggers, events and views came along.
        assert mariadb_server.execute(OBJECTS, target_name) == [(1, 1, 1, 1)]

        source.restore(io.BytesIO(data), database=target_name)  # clean: replaces, no duplicates
        assert source.for_database(target_name).table_row_counts() == EXPECTED

    def test_restore_a_table_subset(
        self, mariadb_server: DbServer, source_db: str, new_db: Callable[[], str]
    ) -> None:
        source = MySQLConnector(params(mariadb_server, source_db))
        data = dump_bytes(source)
        target_name = new_db()
        source.restore(io.BytesIO(data), database=target_name, tables=["customers", "odd `name"])
        counts = source.for_database(target_name).table_row_counts()
        assert counts == {"customers": 500, "odd `name": 300}

    def test_restore_without_clean_onto_existing_tables_fails_clearly(
        self, mariadb_server: DbServer, source_db: str
    ) -> None:
        source = MySQLConnector(params(mariadb_server, source_db))
        data = dump_bytes(source)
        with pytest.raises(ConnectorFailed) as failure:
            source.restore(io.BytesIO(data), clean=False)
        assert "already exists" in failure.value.message
        assert mariadb_server.password not in failure.value.message
        assert source.table_row_counts() == EXPECTED

    def test_truncated_dump_is_reported_by_toc(
        self, mariadb_server: DbServer, source_db: str
    ) -> None:
        data = dump_bytes(MySQLConnector(params(mariadb_server, source_db)))
        with pytest.raises(ConnectorFailed, match="incomplete"):
            MySQLConnector.toc(io.BytesIO(data[: len(data) // 2]))

    def test_wrong_password_fails_before_starting(self, mariadb_server: DbServer) -> None:
        wrong = "Wr0ng-dump-pass"
        with pytest.raises(ConnectorFailed) as failure:
            MySQLConnector(params(mariadb_server, "mysql", password=wrong)).dump()
        assert "password authentication failed" in failure.value.message
        assert wrong not in failure.value.message

    def test_awkward_password_reaches_the_tools(
        self, mariadb_server: DbServer, source_db: str, new_db: Callable[[], str], unique: str
    ) -> None:
        """Quotes, backslash, '#' and spaces survive the option file's quoting."""
        user, password = f"sk_u_{unique}", f"we\"ird\\pa ss#w0rd'{unique} "
        mariadb_server.create_user(user, password)
        mariadb_server.execute(f"GRANT ALL ON *.* TO '{user}'@'%'")
        try:
            connector = MySQLConnector(
                params(mariadb_server, source_db, username=user, password=password)
            )
            assert connector.test_connection().ok
            target_name = new_db()
            connector.restore(io.BytesIO(dump_bytes(connector)), database=target_name)
            assert connector.for_database(target_name).table_row_counts() == EXPECTED
        finally:
            mariadb_server.execute(f"DROP USER IF EXISTS '{user}'@'%'")

    def test_password_never_in_child_argv(self, mariadb_server: DbServer, big_db: str) -> None:
        connector = MySQLConnector(params(mariadb_server, big_db))
        with connector.dump() as dump:
            assert dump.pid is not None
            argv = Path(f"/proc/{dump.pid}/cmdline").read_bytes().split(b"\0")
            assert argv[1].startswith(b"--defaults-extra-file=")  # must be the first option
            assert not any(mariadb_server.password.encode() in arg for arg in argv)
            option_file = Path(argv[1].split(b"=", 1)[1].decode())
            assert stat.S_IMODE(option_file.stat().st_mode) == 0o600
            size = sum(len(chunk) for chunk in iter(lambda: dump.stdout.read(1 << 20), b""))
            dump.wait()
        assert size > 1 << 20
        assert not option_file.exists()  # removed once the dump ended

    def test_kill_midway(self, mariadb_server: DbServer, big_db: str) -> None:
        connector = MySQLConnector(params(mariadb_server, big_db))
        with connector.dump() as dump:
            pid = dump.pid
            assert dump.stdout.read(64 * 1024)
            dump.kill()
            with pytest.raises(ConnectorFailed, match="cancelled"):
                dump.wait()
        assert not Path(f"/proc/{pid}").exists()
        query = (
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
            " WHERE DB = %s AND ID <> CONNECTION_ID()"
        )
        deadline = time.monotonic() + 10
        while mariadb_server.execute(query, params=[big_db]) != [(0,)]:
            assert time.monotonic() < deadline, "the dump's session outlived the kill"
            time.sleep(0.1)
