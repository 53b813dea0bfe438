"""PostgreSQL connector against a real PostgreSQL 15 server (servers_plugin's `pg_server`)."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers_plugin import DbServer, free_port

from sourcekeeper.core.errors import ConnectorFailed, InvalidInput, TargetExists
from sourcekeeper.datasources.connectors.base import ConnParams
from sourcekeeper.datasources.connectors.postgres import (
    PostgresConnector,
    check_dump_compatible,
    pg_tool,
)
from sourcekeeper.datasources.connectors.registry import connector_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump not installed"),
]

SEED = """
CREATE SCHEMA sales;
CREATE TABLE public.customers (id serial PRIMARY KEY, name text NOT NULL, photo bytea);
INSERT INTO public.customers (name, photo)
    SELECT 'customer ' || g, decode(md5(g::text), 'hex') FROM generate_series(1, 500) g;
CREATE TABLE public.orders (
    id bigserial PRIMARY KEY, customer_id int REFERENCES public.customers, amount numeric(10, 2));
INSERT INTO public.orders (customer_id, amount)
    SELECT 1 + g % 500, g / 7.0 FROM generate_series(1, 2000) g;
CREATE TABLE sales."Line Items" (id int, note text);
INSERT INTO sales."Line Items" SELECT g, repeat('x', g % 50) FROM generate_series(1, 300) g;
CREATE TABLE public.empty_table (id int);
"""
EXPECTED = {
    "public.customers": 500,
    "public.empty_table": 0,
    "public.orders": 2000,
    "sales.Line Items": 300,
}
CHECKSUM = "SELECT md5(string_agg(c::text, ',' ORDER BY c.id)) FROM public.customers c"


def params(server: DbServer, database: str, **overrides: object) -> ConnParams:
    values: dict[str, object] = {
        "engine": "postgresql",
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
def owner_role(pg_server: DbServer, unique: str) -> Iterator[str]:
    """A non-login role owning one table, to show restores keep owners."""
    role = f"sk_owner_{unique}"
    pg_server.execute(f"CREATE ROLE {role} NOLOGIN")
    yield role
    pg_server.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def source_db(pg_server: DbServer, owner_role: str, unique: str) -> Iterator[str]:
    name = f"sk_src_{unique}"
    pg_server.create_database(name)
    pg_server.execute(SEED + f'ALTER TABLE sales."Line Items" OWNER TO {owner_role};', name)
    yield name
    pg_server.drop_database(name)


@pytest.fixture
def new_db(pg_server: DbServer, source_db: str, unique: str) -> Iterator[Callable[[], str]]:
    """Factory for empty restore targets; dropped before the source and its role."""
    made: list[str] = []

    def make() -> str:
        name = f"sk_new_{unique}_{len(made)}"
        pg_server.create_database(name)
        made.append(name)
        return name

    yield make
    for name in made:
        pg_server.drop_database(name)


@pytest.fixture(scope="module")
def big_db(pg_server: DbServer) -> Iterator[str]:
    """A database whose dump is far larger than a pipe buffer, so pg_dump blocks until read."""
    name = "sk_big_pg"
    pg_server.drop_database(name)
    pg_server.create_database(name)
    pg_server.execute(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload"
        " FROM generate_series(1, 200000) g",
        name,
    )
    yield name
    pg_server.drop_database(name)


def dump_bytes(connector: PostgresConnector) -> bytes:
    with connector.dump() as dump:
        data = dump.stdout.read()
        dump.wait()
    return data


class TestConnection:
    def test_ok_reports_version_latency_and_no_ssl(
        self, pg_server: DbServer, source_db: str
    ) -> None:
        check = PostgresConnector(params(pg_server, source_db)).test_connection()
        assert check.ok, check.message
        assert check.server_version and check.server_version.startswith("15.")
        assert check.latency_ms is not None and 0 < check.latency_ms < 1000
        assert check.ssl is False
        assert check.database == source_db

    def test_closed_port_fails_fast_and_clearly(self, pg_server: DbServer) -> None:
        port = free_port()
        started = time.monotonic()
        check = PostgresConnector(params(pg_server, "postgres", port=port)).test_connection()
        assert time.monotonic() - started < 1.5
        assert not check.ok
        assert check.message == f"could not connect to 127.0.0.1:{port}: connection refused"
        assert check.latency_ms is None and check.server_version is None

    def test_black_holed_host_returns_within_timeout(
        self, pg_server: DbServer, black_hole_port: int
    ) -> None:
        connector = PostgresConnector(
            params(pg_server, "postgres", port=black_hole_port, connect_timeout=2.0)
        )
        started = time.monotonic()
        check = connector.test_connection()
        assert time.monotonic() - started < 2.0 + 1.0
        assert not check.ok
        assert "timed out" in check.message

    def test_silent_server_returns_within_timeout(
        self, pg_server: DbServer, silent_port: int
    ) -> None:
        connector = PostgresConnector(
            params(pg_server, "postgres", port=silent_port, connect_timeout=2.0)
        )
        started = time.monotonic()
        check = connector.test_connection()
        assert time.monotonic() - started < 2.0 + 1.5
        assert not check.ok
        assert check.message == f"could not connect to 127.0.0.1:{silent_port}: timed out after 2 s"

    def test_wrong_password_is_named_but_never_shown(self, pg_server: DbServer) -> None:
        wrong = "Wr0ng-pass-" + pg_server.password[:6]
        check = PostgresConnector(params(pg_server, "postgres", password=wrong)).test_connection()
        assert not check.ok
        assert "password authentication failed" in check.message
        assert wrong not in check.message and wrong not in repr(check)
        assert pg_server.password not in check.message

    def test_unknown_database(self, pg_server: DbServer, unique: str) -> None:
        check = PostgresConnector(params(pg_server, f"nope_{unique}")).test_connection()
        assert not check.ok
        assert check.message == f'database "nope_{unique}" does not exist'

    def test_registry_builds_the_postgres_connector(self, pg_server: DbServer) -> None:
        connector = connector_for(params(pg_server, "postgres"))
        assert isinstance(connector, PostgresConnector)
        assert connector.server_version().startswith("15.")


class TestCatalog:
    def test_tables_and_exact_row_counts(self, pg_server: DbServer, source_db: str) -> None:
        connector = PostgresConnector(params(pg_server, source_db))
        assert connector.list_tables() == sorted(EXPECTED)
        assert connector.table_row_counts() == EXPECTED

    def test_create_database_is_owned_by_the_login_role(
        self, pg_server: DbServer, unique: str
    ) -> None:
        user, password, name = f"sk_login_{unique}", f"pw-{unique}-'\"x", f"sk_made_{unique}"
        pg_server.create_user(user, password)
        pg_server.execute(f"ALTER ROLE {user} CREATEDB")
        connector = PostgresConnector(
            params(pg_server, "postgres", username=user, password=password)
        )
        try:
            assert not connector.database_exists(name)
            connector.create_database(name)
            assert connector.database_exists(name)
            owner = pg_server.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", params=[name]
            )
            assert owner == [(user,)]
            with pytest.raises(TargetExists):
                connector.create_database(name)
            connector.drop_database(name)
            assert not connector.database_exists(name)
        finally:
            pg_server.drop_database(name)
            pg_server.execute(f"DROP ROLE IF EXISTS {user}")


class TestDumpRestore:
    def test_round_trip_into_a_new_database(
        self, pg_server: DbServer, source_db: str, new_db: Callable[[], str], owner_role: str
    ) -> None:
        source = PostgresConnector(params(pg_server, source_db))
        with source.dump() as dump:
            data = dump.stdout.read()
            dump.wait()
        assert dump.info["tool"] == "pg_dump" and dump.info["format"] == "custom"
        assert dump.info["tool_version"].startswith("15.")
        assert data.startswith(b"PGDMP")
        assert PostgresConnector.toc(io.BytesIO(data)) == sorted(EXPECTED)

        target_name = new_db()
        source.restore(io.BytesIO(data), database=target_name)
        target = source.for_database(target_name)
        assert target.table_row_counts() == EXPECTED
        assert pg_server.execute(CHECKSUM, target_name) == pg_server.execute(CHECKSUM, source_db)
        owner = pg_server.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'Line Items'", target_name
        )
        assert owner == [(owner_role,)]  # no --no-owner: owners stay as in the backup

        # Restoring again with clean (the default) replaces rather than duplicates.
        source.restore(io.BytesIO(data), database=target_name)
        assert target.table_row_counts() == EXPECTED

    def test_restore_without_clean_onto_existing_objects_fails_clearly(
        self, pg_server: DbServer, source_db: str
    ) -> None:
        source = PostgresConnector(params(pg_server, source_db))
        data = dump_bytes(source)
        with pytest.raises(ConnectorFailed) as failure:
            source.restore(io.BytesIO(data), clean=False)
        assert "already exists" in failure.value.message
        assert pg_server.password not in failure.value.message
        assert source.table_row_counts() == EXPECTED  # single transaction: nothing changed

    def test_restore_a_table_subset(
        self, pg_server: DbServer, source_db: str, new_db: Callable[[], str]
    ) -> None:
        source = PostgresConnector(params(pg_server, source_db))
        data = dump_bytes(source)
        target_name = new_db()
        source.restore(
            io.BytesIO(data), database=target_name, tables=["public.customers", "sales.Line Items"]
        )
        assert source.for_database(target_name).table_row_counts() == {
            "public.customers": 500,
            "sales.Line Items": 300,
        }

    def test_parallel_restore_from_a_file(
        self, pg_server: DbServer, source_db: str, new_db: Callable[[], str], tmp_path: Path
    ) -> None:
        source = PostgresConnector(params(pg_server, source_db))
        path = tmp_path / "backup.dump"
        path.write_bytes(dump_bytes(source))
        with pytest.raises(InvalidInput):
            source.restore(io.BytesIO(path.read_bytes()), jobs=2)
        target_name = new_db()
        source.restore_file(path, database=target_name, jobs=2)
        assert source.for_database(target_name).table_row_counts() == EXPECTED

    def test_garbage_is_refused_without_secrets(
        self, pg_server: DbServer, new_db: Callable[[], str]
    ) -> None:
        connector = PostgresConnector(params(pg_server, new_db()))
        with pytest.raises(ConnectorFailed) as failure:
            connector.restore(io.BytesIO(b"this is not a dump " * 100))
        assert failure.value.message.startswith("pg_restore failed")
        assert "valid archive" in failure.value.message
        assert pg_server.password not in failure.value.message
        with pytest.raises(ConnectorFailed):
            PostgresConnector.toc(io.BytesIO(b"nope"))

    def test_dump_with_wrong_password_fails_before_starting(self, pg_server: DbServer) -> None:
        wrong = "Wr0ng-dump-pass"
        with pytest.raises(ConnectorFailed) as failure:
            PostgresConnector(params(pg_server, "postgres", password=wrong)).dump()
        assert "password authentication failed" in failure.value.message
        assert wrong not in failure.value.message

    def test_password_never_in_child_argv(self, pg_server: DbServer, big_db: str) -> None:
        connector = PostgresConnector(params(pg_server, big_db))
        with connector.dump() as dump:
            assert dump.pid is not None
            # The dump is megabytes and nobody reads yet: pg_dump is alive, blocked on the pipe.
            # Right after fork the child may not have exec'd yet: wait until it is pg_dump.
            deadline = time.monotonic() + 5
            argv = [b""]
            while not argv[0].endswith(b"pg_dump") and time.monotonic() < deadline:
                argv = Path(f"/proc/{dump.pid}/cmdline").read_bytes().split(b"\0")
                time.sleep(0.01)
            assert argv[0].endswith(b"pg_dump")
            assert b"-Fc" in argv and b"-Z0" in argv
            assert not any(pg_server.password.encode() in arg for arg in argv)
            size = sum(len(chunk) for chunk in iter(lambda: dump.stdout.read(1 << 20), b""))
            dump.wait()
        assert size > 1 << 20

    def test_kill_midway(self, pg_server: DbServer, big_db: str) -> None:
        connector = PostgresConnector(params(pg_server, big_db))
        with connector.dump() as dump:
            pid = dump.pid
            assert dump.stdout.read(64 * 1024)
            dump.kill()
            with pytest.raises(ConnectorFailed, match="cancelled"):
                dump.wait()
        assert not Path(f"/proc/{pid}").exists()  # killed and reaped
        # The server notices the closed connection and ends pg_dump's session.
        deadline = time.monotonic() + 10
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        )
        while pg_server.execute(query, params=[big_db]) != [(0,)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pg_server.execute(query, params=[big_db]) == [(0,)]


class TestToolVersions:
    def test_newer_server_is_refused_with_a_clear_message(self) -> None:
        with pytest.raises(ConnectorFailed) as failure:
            check_dump_compatible(160002, "16.2 (Debian 16.2-1)", "15.18")
        assert failure.value.message.startswith("server version 16.2 is newer than pg_dump 15.18")

    def test_same_or_older_servers_are_fine(self) -> None:
        check_dump_compatible(150018, "15.18", "15.18")
        check_dump_compatible(90624, "9.6.24", "15.18")

    def test_tools_come_from_one_directory(self) -> None:
        assert Path(pg_tool("pg_dump")).parent == Path(pg_tool("pg_restore")).parent
