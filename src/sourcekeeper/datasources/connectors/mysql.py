"""MySQL and MariaDB: PyMySQL for queries, mariadb-dump and the mariadb client for dumps."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, BinaryIO

import pymysql
import pymysql.cursors

from sourcekeeper.core.errors import ConnectorFailed, TargetExists

from .base import (
    COPY_CHUNK,
    ConnectionCheck,
    Connector,
    DumpProcess,
    SubprocessDump,
    as_connector_error,
    clean_env,
    describe_unexpected,
    find_tool,
    run_tool,
    write_secret_file,
)

DEFAULT_PORT = 3306
TABLE_TYPES = ("BASE TABLE", "SYSTEM VERSIONED")
# Inherited MYSQL_PWD / MYSQL_HOST must never pick credentials for a child.
ENV_PREFIXES = ("MYSQL_", "MARIADB_")
SECTION = re.compile(
    rb"^-- (Table structure for table|Dumping data for table"
    rb"|Temporary table structure for view|Final view structure for view) `((?:[^`]|``)+)`"
)
GLOBAL_SECTION = re.compile(rb"^-- Dumping (events|routines) for database ")
CREATE_TABLE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)`")
DROP_TABLE = re.compile(rb"^(DROP TABLE IF EXISTS `|/\*!50001 DROP VIEW IF EXISTS `)")


def quote_ident(name: str) -> str:
    """A MySQL identifier in backticks (doubling any backtick), safe for any name."""
    return "`" + name.replace("`", "``") + "`"


def _unquote(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("``", "`")


def _cnf_value(value: str) -> str:
    """Quote a value for a MySQL option file; the client unescapes these sequences."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def _ssl_mode(options: dict[str, str]) -> str | None:
    """connection_properties may say ssl_mode=REQUIRED (MySQL) or sslmode=require (libpq style)."""
    raw = options.get("ssl_mode") or options.get("sslmode")
    if not raw:
        return None
    mode = raw.strip().lower().replace("-", "_")
    aliases = {"disable": "disabled", "prefer": "preferred", "require": "required",
               "verify_full": "verify_identity"}  # fmt: skip
    return aliases.get(mode, mode)


@lru_cache
def client_tools() -> tuple[str, str]:
    """(dump tool, client) preferring MariaDB's names, falling back to MySQL's."""
    dump = find_tool("mariadb-dump", "mysqldump")
    client = find_tool("mariadb", "mysql")
    if dump is None or client is None:
        raise ConnectorFailed(
            "mariadb-dump / mariadb client is not installed (install mariadb-client)"
        )
    return dump, client


@lru_cache
def tool_version(path: str) -> str:
    """`10.11.19-MariaDB` from `mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for ...`."""
    out = run_tool([path, "--version"], env=clean_env(ENV_PREFIXES)).decode("utf-8", "replace")
    match = re.search(r"Distrib ([^\s,]+)", out) or re.search(r"Ver ([^\s,]+)", out)
    return match.group(1) if match else out.strip()


def _explain_tool_error(tool: str, stderr: str) -> str | None:
    """The server's error line rather than the echo of the failing statement around it."""
    if "Access denied" in stderr and "using password" in stderr:
        return (
            f"{tool} could not connect: password authentication failed ({_between_quotes(stderr)})"
        )
    errors = [part for part in stderr.split(" | ") if part.startswith("ERROR ")]
    return f"{tool} failed: {errors[-1]}" if errors else None


def _between_quotes(text: str) -> str:
    match = re.search(r'"([^"]*)"', text)
    return match.group(1) if match else text


def _filtered(stream: BinaryIO, tables: list[str] | None, clean: bool) -> Iterator[bytes]:
    """The dump's lines, keeping only the chosen tables' sections and, without `clean`, no DROPs.

    mariadb-dump heads every table and view with a `-- Table structure for table` style comment;
    the header before the first section (session settings) is always kept. Events and routines
    belong to no table, so a table subset leaves them out.
    """
    wanted = set(tables) if tables is not None else None
    keep = True
    buffer: list[bytes] = []
    size = 0
    for line in stream:
        if wanted is not None:
            if match := SECTION.match(line):
                keep = _unquote(match.group(2)) in wanted
            elif GLOBAL_SECTION.match(line):
                keep = False
        if not keep or (not clean and DROP_TABLE.match(line)):
            continue
        buffer.append(line)
        size += len(line)
        if size >= COPY_CHUNK:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


class MySQLConnector(Connector):
    """A MySQL or MariaDB database (the two share a wire protocol and client tools)."""

    engine = "mysql"

    # -- connections --------------------------------------------------------------------------

    def _tcp_target(self) -> tuple[str, int] | None:
        if not self.params.host or self.params.options.get("unix_socket"):
            return None
        return self.params.host, self.params.port or DEFAULT_PORT

    def _where(self) -> str:
        target = self._tcp_target()
        return f"{target[0]}:{target[1]}" if target else "local socket"

    def _driver_kwargs(self, database: str | None) -> dict[str, Any]:
        p = self.params
        kwargs: dict[str, Any] = {
            "user": p.username,
            "password": p.password or "",
            "database": database,
            "connect_timeout": p.connect_timeout,
            "read_timeout": max(p.connect_timeout, 30.0),
            "write_timeout": max(p.connect_timeout, 30.0),
            "charset": "utf8mb4",
            "autocommit": True,
        }
        if socket_path := p.options.get("unix_socket"):
            kwargs["unix_socket"] = socket_path
        else:
            kwargs.update(host=p.host or "localhost", port=p.port or DEFAULT_PORT)
        mode = _ssl_mode(p.options)
        if mode == "disabled":
            kwargs["ssl_disabled"] = True
        elif mode or p.options.get("ssl_ca"):
            ssl: dict[str, Any] = {"check_hostname": mode == "verify_identity"}
            for key in ("ca", "cert", "key"):
                if value := p.options.get(f"ssl_{key}"):
                    ssl[key] = value
            kwargs["ssl"] = ssl
        return kwargs

    def _describe(self, exc: BaseException) -> str:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if code == 1045:
            text = f"password authentication failed for user {self.params.username!r} ({text})"
        elif code == 1049:
            text = f"database {self.params.database!r} does not exist"
        elif code == 2013 and "timed out" in text:
            text = f"could not connect to {self._where()}: no reply from the server (timed out)"
        elif code == 2003:
            text = self._describe_unreachable(text)
        return self.params.redact(text)

    def _describe_unreachable(self, text: str) -> str:
        """PyMySQL's 2003 wraps the socket error: name it the way probe_tcp does for PostgreSQL."""
        where = self._where()
        if "timed out" in text:
            return (
                f"could not connect to {where}: timed out after {self.params.connect_timeout:g} s"
            )
        if "Connection refused" in text or "Errno 111" in text:
            return f"could not connect to {where}: connection refused"
        if "Name or service not known" in text or "Temporary failure in name resolution" in text:
            return f"could not resolve host {self.params.host!r}"
        inner = re.search(r"\((?:\[Errno -?\d+\] )?(.*)\)$", text)
        return f"could not connect to {where}: {(inner.group(1) if inner else text).lower()}"

    @contextmanager
    def _connect(
        self, *, use_database: bool = True, timeout: float | None = None
    ) -> Iterator[pymysql.Connection]:
        """A short-lived connection, to the source's database or (for CREATE/DROP) to none."""
        kwargs = self._driver_kwargs(self.params.database if use_database else None)
        if timeout is not None:  # test_connection: a silent server must not stall the check
            kwargs["read_timeout"] = kwargs["write_timeout"] = timeout
        try:
            conn = pymysql.connect(**kwargs)
        except pymysql.Error as exc:
            raise as_connector_error(exc, self.params, self._describe(exc)) from exc
        try:
            with conn:
                self._require_ssl(conn)
                yield conn
        except pymysql.Error as exc:
            raise as_connector_error(exc, self.params, self._describe(exc)) from exc

    def _require_ssl(self, conn: pymysql.Connection) -> None:
        # PyMySQL silently stays in clear text when the server has no TLS: "required" must fail.
        if _ssl_mode(self.params.options) in (
            "required",
            "verify_ca",
            "verify_identity",
        ) and not self._ssl(conn):
            raise ConnectorFailed(f"{self._where()} does not offer SSL, which ssl_mode requires")

    @staticmethod
    def _scalar(conn: pymysql.Connection, query: str, args: Any = None) -> Any:
        with conn.cursor() as cur:
            cur.execute(query, args)
            row = cur.fetchone()
            return row[0] if row else None

    @staticmethod
    def _ssl(conn: pymysql.Connection) -> bool:
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            row = cur.fetchone()
            return bool(row and row[1])

    # -- queries ------------------------------------------------------------------------------

    def test_connection(self) -> ConnectionCheck:
        p = self.params
        fail = ConnectionCheck(False, None, None, p.database, None, "")
        # No separate TCP probe here, unlike PostgreSQL: MySQL counts a connection closed before
        # the handshake against max_connect_errors and would end up blocking our host. PyMySQL's
        # own connect_timeout is already a socket-level limit.
        try:
            with self._connect(timeout=p.connect_timeout) as conn:
                started = time.perf_counter()
                self._scalar(conn, "SELECT 1")
                latency = (time.perf_counter() - started) * 1000
                version = str(self._scalar(conn, "SELECT VERSION()"))
                ssl = self._ssl(conn)
        except ConnectorFailed as exc:
            fail.message = exc.message
            return fail
        except Exception as exc:  # a check must answer, whatever went wrong
            fail.message = describe_unexpected(exc, p)
            return fail
        return ConnectionCheck(
            True, round(latency, 3), version, p.database, ssl,
            f"connected to {version} at {self._where()}, database {p.database!r}",
        )  # fmt: skip

    def server_version(self) -> str:
        with self._connect() as conn:
            return str(self._scalar(conn, "SELECT VERSION()"))

    def _tables(self, conn: pymysql.Connection) -> list[str]:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT TABLE_NAME FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE IN %s ORDER BY TABLE_NAME",
                (TABLE_TYPES,),
            )
            return [str(row[0]) for row in cur.fetchall()]

    def list_tables(self) -> list[str]:
        with self._connect() as conn:
            return self._tables(conn)

    def table_row_counts(self) -> dict[str, int]:
        with self._connect() as conn:
            tables = self._tables(conn)
            with conn.cursor() as cur:
                # One InnoDB snapshot for all tables, so the counts describe a single moment.
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                counts: dict[str, int] = {}
                for table in tables:
                    cur.execute(f"SELECT COUNT(*) FROM {quote_ident(table)}")
                    row = cur.fetchone()
                    counts[table] = int(row[0]) if row else 0
                cur.execute("COMMIT")
            return counts

    def database_exists(self, name: str) -> bool:
        with self._connect(use_database=False) as conn:
            query = "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s"
            return self._scalar(conn, query, (name,)) is not None

    def create_database(self, name: str) -> None:
        with self._connect(use_database=False) as conn:
            if self._scalar(
                conn, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,)
            ):
                raise TargetExists(f"database {name!r} already exists")
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {quote_ident(name)} CHARACTER SET utf8mb4")

    def drop_database(self, name: str) -> None:
        with self._connect(use_database=False) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")

    # -- dump and restore ---------------------------------------------------------------------

    def _options_file(self) -> tuple[str, Callable[[], None]]:
        """A 0600 [client] option file carrying the login, so no secret appears in argv."""
        p = self.params
        lines = ["[client]"]
        if p.username:
            lines.append(f"user={_cnf_value(p.username)}")
        if p.password:
            lines.append(f"password={_cnf_value(p.password)}")
        if socket_path := p.options.get("unix_socket"):
            lines.append(f"socket={_cnf_value(socket_path)}")
        else:
            # protocol=TCP: the client would take "localhost" to mean the local socket.
            lines += [
                f"host={_cnf_value(p.host or 'localhost')}",
                f"port={p.port or DEFAULT_PORT}",
                "protocol=TCP",
            ]
        mode = _ssl_mode(p.options)
        if mode == "disabled":
            lines.append("skip-ssl")
        elif mode or p.options.get("ssl_ca"):
            lines.append("ssl")
            for key in ("ca", "cert", "key"):
                if value := p.options.get(f"ssl_{key}"):
                    lines.append(f"ssl-{key}={_cnf_value(value)}")
            if mode in ("verify_ca", "verify_identity"):
                lines.append("ssl-verify-server-cert")
        path, remove = write_secret_file("\n".join(lines) + "\n", prefix="sk-mysql-")
        return f"--defaults-extra-file={path}", remove

    def dump(self) -> DumpProcess:
        dump_tool, _ = client_tools()
        version = tool_version(dump_tool)
        server = self.server_version()  # fails early, with the driver's clearer message
        defaults, remove = self._options_file()
        argv = [
            dump_tool, defaults,  # --defaults-extra-file must come first
            "--single-transaction", "--routines", "--triggers", "--events", "--hex-blob",
            "--default-character-set=utf8mb4", "--", self.params.database,
        ]  # fmt: skip
        name = dump_tool.rsplit("/", 1)[-1]
        return SubprocessDump(
            argv,
            env=clean_env(ENV_PREFIXES),
            info={"tool": name, "tool_version": version, "format": "sql", "server_version": server},
            secrets=(self.params.password,),
            cleanup=remove,
            explain=lambda err: _explain_tool_error(name, err),
        )

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
        """Pipe the SQL dump into the client; `jobs` is ignored (one session replays the script)."""
        _, client = client_tools()
        defaults, remove = self._options_file()
        argv = [client, defaults, "--binary-mode", "--batch", "--max-allowed-packet=1G",
                f"--connect-timeout={max(1, round(self.params.connect_timeout))}",
                f"--database={database or self.params.database}"]  # fmt: skip
        source: BinaryIO | Iterator[bytes] = stream
        if tables is not None or not clean:
            source = _filtered(stream, tables, clean)
        name = client.rsplit("/", 1)[-1]
        try:
            run_tool(
                argv,
                env=clean_env(ENV_PREFIXES),
                stdin=source,
                secrets=(self.params.password,),
                explain=lambda err: _explain_tool_error(name, err),
                cancel=cancel,
            )
        finally:
            remove()

    @staticmethod
    def toc(stream: BinaryIO) -> list[str]:
        """Tables from the dump's CREATE TABLE lines; a dump missing its last line is truncated."""
        tables: set[str] = set()
        completed = False
        for line in stream:
            if match := CREATE_TABLE.match(line):
                tables.add(_unquote(match.group(1)))
            elif line.startswith(b"-- Dump completed"):
                completed = True
        if not completed:
            raise ConnectorFailed(
                "the SQL dump is incomplete: its closing 'Dump completed' line is missing"
            )
        return sorted(tables)
