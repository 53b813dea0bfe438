"""The throwaway servers really enforce passwords and let tests manage databases and users."""

from __future__ import annotations

import secrets
import socket

import psycopg
import pymysql
import pytest
import sqlalchemy as sa
from servers_plugin import DbServer, RedisServer, free_port

pytestmark = pytest.mark.integration

LOGIN_ERRORS = (psycopg.OperationalError, pymysql.err.OperationalError)


@pytest.fixture(params=["pg_server", "mariadb_server"])
def server(request: pytest.FixtureRequest) -> DbServer:
    """Run each test once per database engine."""
    server: DbServer = request.getfixturevalue(request.param)
    return server


def _refused(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "password authentication failed" in text or "access denied" in text


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_superuser_connects_over_tcp_with_password(server: DbServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.execute("SELECT 1") == [(1,)]
    engine = sa.create_engine(server.url())
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 2")).scalar_one() == 2
    finally:
        engine.dispose()


def test_wrong_password_is_refused(server: DbServer) -> None:
    with pytest.raises(LOGIN_ERRORS) as info:
        server.connect(password="not-" + server.password).close()
    assert _refused(info.value), info.value


def test_create_and_drop_database(server: DbServer) -> None:
    name = f"sk_test_{secrets.token_hex(4)}"
    server.create_database(name)
    try:
        server.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, note VARCHAR(20))", database=name)
        server.execute("INSERT INTO t VALUES (%s, %s)", database=name, params=[1, "héllo"])
        assert server.execute("SELECT id, note FROM t", database=name) == [(1, "héllo")]
    finally:
        server.drop_database(name)
    listing = (
        "SELECT datname FROM pg_database"
        if server.engine == "postgresql"
        else "SELECT schema_name FROM information_schema.schemata"
    )
    assert (name,) not in server.execute(listing)
    server.drop_database(name)  # idempotent


def test_created_user_logs_in_only_with_its_password(server: DbServer) -> None:
    user, password = f"sk_user_{secrets.token_hex(4)}", "p'w\\" + secrets.token_hex(8)
    server.create_user(user, password)
    server.connect(user=user, password=password).close()
    with pytest.raises(LOGIN_ERRORS) as info:
        server.connect(user=user, password=password + "x").close()
    assert _refused(info.value), info.value
    engine = sa.create_engine(server.url(user=user, password=password))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_server_runs_from_its_own_temp_dir(server: DbServer) -> None:
    assert server.base_dir.is_dir()
    assert server.pid > 0
    assert server.socket.startswith(str(server.base_dir))
    assert server.log_file.exists()


def test_redis_answers_ping(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    with socket.create_connection((redis_server.host, redis_server.port), timeout=5) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert sock.recv(16) == b"+PONG\r\n"
