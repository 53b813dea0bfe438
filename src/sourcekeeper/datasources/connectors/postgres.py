"""PostgreSQL: psycopg 3 for queries, the native pg_dump/pg_restore for dumps (users trust them)."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from sourcekeeper.core.errors import ConnectorFailed, InvalidInput, TargetExists

from .base import (
    ConnectionCheck,
    Connector,
    DumpProcess,
    SubprocessDump,
    as_connector_error,
    clean_env,
    describe_unexpected,
    find_tool,
    probe_tcp,
    run_tool,
)

DEFAULT_PORT = 5432
APPLICATION_NAME = "sourcekeeper"
# connection_properties passed on to libpq. Anything else is ignored: keys such as `passfile`,
# `service` or `sslpassword` would read server files or put a secret in a tool's argv.
LIBPQ_OPTIONS = frozenset(
    {
        "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir", "sslsni",
        "channel_binding", "gssencmode", "target_session_attrs", "options",
        "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
        "tcp_user_timeout",
    }
)  # fmt: skip

USER_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp)'
  AND NOT EXISTS (  -- tables created by extensions are not the user's data and pg_dump skips them
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@lru_cache
def pg_tool(name: str) -> str:
    """Path of a PostgreSQL client tool: the newest /usr/lib/postgresql/<N>/bin wins, then PATH.

    Debian's /usr/bin wrappers pick a version by cluster; the newest binary reads every older
    server, and using one directory keeps pg_dump and pg_restore of the same version.
    """
    base = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in base.glob("*/bin") if p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
        reverse=True,
    )
    found = find_tool(name, dirs=versions)
    if found is None:
        raise ConnectorFailed(f"{name} is not installed (install the postgresql-client package)")
    return found


@lru_cache
def tool_version(path: str) -> str:
    """`15.18` from `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`."""
    out = run_tool([path, "--version"], env=clean_env(("PG",))).decode("utf-8", "replace")
    match = re.search(r"\)\s+(\d+(?:\.\d+)*)", out)
    return match.group(1) if match else out.strip()


def check_dump_compatible(
    server_version_num: int, server_version: str, pg_dump_version: str
) -> None:
    """Refuse early and clearly when the server is newer than pg_dump (pg_dump would abort)."""
    server_major = server_version_num // 10000  # 90624 -> 9, 150018 -> 15
    tool_major = int(pg_dump_version.split(".")[0])
    if server_major > tool_major:
        raise ConnectorFailed(
            f"server version {server_version.split()[0]} is newer than pg_dump {pg_dump_version}; "
            f"install the PostgreSQL {server_major} client tools (postgresql-client-{server_major})"
        )


def _explain_tool_error(tool: str, stderr: str) -> str | None:
    """Turn libpq's connection prose in a tool's stderr into the short message the driver gives."""
    if "server version mismatch" in stderr:
        versions = re.search(r"server version: ([\d.]+).*?version: ([\d.]+)", stderr)
        if versions:
            return f"server version {versions.group(1)} is newer than {tool} {versions.group(2)}"
    if "FATAL:" in stderr:
        return f"{tool} could not connect: " + stderr.split("FATAL:", 1)[1].split(" | ")[0].strip()
    # The error line, not the multi-line "Command was: ..." echo that follows it.
    errors = [line for line in stderr.split(" | ") if f"{tool}: error: " in line]
    if errors:
        return f"{tool} failed: " + errors[-1].split(f"{tool}: error: ", 1)[1]
    return None


def _qualified(schema: str, table: str) -> str:
    return f"{schema}.{table}"


def _parse_toc(listing: str) -> list[str]:
    """Tables from `pg_restore -l` lines such as `215; 1259 16386 TABLE public orders alice`."""
    tables = set()
    for line in listing.splitlines():
        match = re.match(r"^\d+;\s+\d+\s+\d+\s+TABLE (.*)$", line)
        if not match or match.group(1).startswith("DATA "):
            continue
        parts = match.group(1).split(" ")
        if len(parts) >= 3:  # schema, name (may contain spaces), owner
            tables.add(_qualified(parts[0], " ".join(parts[1:-1])))
    return sorted(tables)


class PostgresConnector(Connector):
    """A PostgreSQL database reached over libpq."""

    engine = "postgresql"

    # -- connections --------------------------------------------------------------------------

    def _conninfo(self, database: str | None = None) -> str:
        """libpq conninfo without the password: safe to show in a tool's argv."""
        p = self.params
        kwargs: dict[str, Any] = {
            "dbname": database or p.database,
            "application_name": APPLICATION_NAME,
            "connect_timeout": self._libpq_timeout(),
        }
        if p.host:
            kwargs["host"] = p.host
        if p.port:
            kwargs["port"] = p.port
        if p.username:
            kwargs["user"] = p.username
        kwargs.update({k: v for k, v in p.options.items() if k in LIBPQ_OPTIONS})
        return make_conninfo(**kwargs)

    def _libpq_timeout(self) -> int:
        """libpq takes whole seconds and treats anything below 2 as 2."""
        return max(2, math.ceil(self.params.connect_timeout))

    def _tool_env(self) -> dict[str, str]:
        # PGPASSWORD reaches only the child (its environ is private to our uid), never argv.
        extra = {"PGPASSWORD": self.params.password} if self.params.password else {}
        return clean_env(("PG",), **extra)

    def _tcp_target(self) -> tuple[str, int] | None:
        host = self.params.host
        if not host or host.startswith(("/", "@")) or "," in host:
            return None  # unix socket or several hosts: leave it to libpq
        return host, self.params.port or DEFAULT_PORT

    def _describe(self, exc: psycopg.Error) -> str:
        """A short, password-free sentence from libpq's multi-line connection error."""
        text = str(exc).strip()
        target = self._tcp_target()
        where = f"{target[0]}:{target[1]}" if target else (self.params.host or "local socket")
        if "FATAL:" in text:
            text = text.split("FATAL:", 1)[1].strip()
        elif "timeout expired" in text:
            text = f"could not connect to {where}: timed out after {self._libpq_timeout()} s"
        elif "Connection refused" in text:
            text = f"could not connect to {where}: connection refused"
        elif text.startswith("connection failed: "):
            text = text.removeprefix("connection failed: ")
        return self.params.redact(text.splitlines()[0] if text else type(exc).__name__)

    @contextmanager
    def _connect(
        self, database: str | None = None, *, autocommit: bool = False
    ) -> Iterator[psycopg.Connection[Any]]:
        """A short-lived connection; every driver error leaves as ConnectorFailed."""
        try:
            conn = psycopg.connect(
                self._conninfo(database), password=self.params.password, autocommit=autocommit
            )
        except psycopg.Error as exc:
            raise as_connector_error(exc, self.params, self._describe(exc)) from exc
        try:
            with conn:
                yield conn
        except psycopg.Error as exc:
            raise as_connector_error(exc, self.params, self._describe(exc)) from exc

    # -- queries ------------------------------------------------------------------------------

    def test_connection(self) -> ConnectionCheck:
        p = self.params
        fail = ConnectionCheck(False, None, None, p.database, None, "")
        target = self._tcp_target()
        if target and (reason := probe_tcp(*target, p.connect_timeout)):
            fail.message = reason
            return fail
        try:
            with self._connect() as conn:
                started = time.perf_counter()
                conn.execute("SELECT 1").fetchone()
                latency = (time.perf_counter() - started) * 1000
                version = self._version(conn)
                row = conn.execute(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                ).fetchone()
                ssl = bool(row[0]) if row and row[0] is not None else conn.pgconn.ssl_in_use
        except ConnectorFailed as exc:
            fail.message = exc.message
            return fail
        except Exception as exc:  # a check must answer, whatever went wrong
            fail.message = describe_unexpected(exc, p)
            return fail
        where = f"{target[0]}:{target[1]}" if target else (p.host or "local socket")
        return ConnectionCheck(
            True, round(latency, 3), version, p.database, ssl,
            f"connected to PostgreSQL {version} at {where}, database {p.database!r}",
        )  # fmt: skip

    @staticmethod
    def _version(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else ""

    def server_version(self) -> str:
        with self._connect() as conn:
            return self._version(conn)

    def _tables(self, conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
        return [(str(s), str(t)) for s, t in conn.execute(USER_TABLES).fetchall()]

    def list_tables(self) -> list[str]:
        with self._connect() as conn:
            return [_qualified(s, t) for s, t in self._tables(conn)]

    def table_row_counts(self) -> dict[str, int]:
        with self._connect() as conn:
            # One snapshot for all tables, so the counts describe a single moment.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            counts: dict[str, int] = {}
            for schema, table in self._tables(conn):
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
                row = conn.execute(query).fetchone()
                counts[_qualified(schema, table)] = int(row[0]) if row else 0
            return counts

    def database_exists(self, name: str) -> bool:
        with self._connect() as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            return row is not None

    def create_database(self, name: str) -> None:
        # Issued from the source's own database: connecting to template1 would block the copy of
        # template1 that CREATE DATABASE makes. The creator, i.e. the login role, becomes the owner.
        with self._connect(autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                raise TargetExists(f"database {name!r} already exists")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        maintenance = "postgres" if name == self.params.database else None
        with self._connect(maintenance, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # -- dump and restore ---------------------------------------------------------------------

    def dump(self) -> DumpProcess:
        """pg_dump of a snapshot exported by a transaction we hold open for the whole dump, in
        which rows are counted meanwhile: the counts describe exactly the dumped data."""
        pg_dump = pg_tool("pg_dump")
        version = tool_version(pg_dump)
        try:
            conn = psycopg.connect(self._conninfo(), password=self.params.password)
        except psycopg.Error as exc:
            raise as_connector_error(exc, self.params, self._describe(exc)) from exc
        try:
            server = self._version(conn)
            check_dump_compatible(conn.info.server_version, server, version)
            conn.rollback()  # SET TRANSACTION must open the transaction the snapshot comes from
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            snapshot = str(row[0]) if row else ""
            argv = [
                pg_dump, "-Fc", "-Z0", "--no-password", f"--snapshot={snapshot}",
                f"--dbname={self._conninfo()}",
            ]  # fmt: skip
            info = {
                "tool": "pg_dump",
                "tool_version": version,
                "format": "custom",
                "server_version": server,
            }
            return _SnapshotDump(
                argv,
                conn=conn,
                connector=self,
                env=self._tool_env(),
                info=info,
                secrets=(self.params.password,),
                explain=lambda err: _explain_tool_error("pg_dump", err),
            )
        except psycopg.Error as exc:
            conn.close()
            raise as_connector_error(exc, self.params, self._describe(exc)) from exc
        except BaseException:
            conn.close()
            raise

    def _restore_argv(
        self, database: str | None, tables: list[str] | None, clean: bool, jobs: int
    ) -> list[str]:
        argv = [
            pg_tool("pg_restore"),
            "--no-password",
            f"--dbname={self._conninfo(database)}",
            "--exit-on-error",
        ]
        # Owners stay as in the backup (no --no-owner): restoring the original keeps its grants.
        if jobs > 1:
            argv.append(f"--jobs={jobs}")
        else:
            argv.append("--single-transaction")  # all or nothing
        if clean:
            argv += ["--clean", "--if-exists"]
        schemas: set[str] = set()
        for name in tables or []:
            schema, _, table = name.rpartition(".")
            if schema:
                schemas.add(schema)
            argv.append(f"--table={table}")
        # pg_restore matches -t by bare name; -n narrows to the schemas asked for.
        argv += [f"--schema={s}" for s in sorted(schemas)]
        return argv

    def _ensure_schemas(self, database: str | None, tables: list[str] | None) -> None:
        """pg_restore -t restores only the tables, not their schemas: a fresh target needs them."""
        schemas = sorted({t.rpartition(".")[0] for t in tables or []} - {""})
        if schemas:
            with self._connect(database, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
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
        if jobs > 1:
            raise InvalidInput(
                "parallel restore needs a seekable file: use restore_file(path, jobs=N)"
            )
        self._ensure_schemas(database, tables)
        run_tool(
            self._restore_argv(database, tables, clean, 1),
            env=self._tool_env(),
            stdin=stream,
            secrets=(self.params.password,),
            explain=lambda err: _explain_tool_error("pg_restore", err),
            cancel=cancel,
        )

    def restore_file(
        self,
        path: str | os.PathLike[str],
        *,
        database: str | None = None,
        tables: list[str] | None = None,
        clean: bool = True,
        jobs: int = 1,
        cancel: threading.Event | None = None,
    ) -> None:
        """Restore from a dump file; with jobs > 1 pg_restore loads tables in parallel."""
        self._ensure_schemas(database, tables)
        run_tool(
            [*self._restore_argv(database, tables, clean, jobs), os.fspath(path)],
            env=self._tool_env(),
            secrets=(self.params.password,),
            explain=lambda err: _explain_tool_error("pg_restore", err),
            cancel=cancel,
        )

    @staticmethod
    def toc(stream: BinaryIO) -> list[str]:
        listing = run_tool([pg_tool("pg_restore"), "-l"], env=clean_env(("PG",)), stdin=stream)
        return _parse_toc(listing.decode("utf-8", "replace"))


class _SnapshotDump(SubprocessDump):
    """pg_dump reading the snapshot `conn` exported; a thread counts rows in that transaction.

    The exporting transaction stays open until pg_dump has ended, so the snapshot stays valid
    however late pg_dump imports it. Counting uses one savepoint per table: a table we may not
    read would otherwise abort the transaction and, with it, the exported snapshot.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        conn: psycopg.Connection[Any],
        connector: PostgresConnector,
        **kwargs: Any,
    ) -> None:
        self._conn = conn
        self._connector = connector
        self._counts: dict[str, int] = {}
        self._complete = False
        self._stopped = False
        super().__init__(argv, **kwargs)
        self._counter = threading.Thread(target=self._count, name="pg-snapshot-counts", daemon=True)
        self._counter.start()

    def _count(self) -> None:
        try:
            for schema, table in self._connector._tables(self._conn):
                with self._conn.transaction():
                    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
                    row = self._conn.execute(query).fetchone()
                    self._counts[_qualified(schema, table)] = int(row[0]) if row else 0
            self._complete = True
        except Exception:  # counts are optional: the dump's own outcome decides the backup's
            self._complete = False

    def _stop_counting(self, *, cancel: bool) -> None:
        if self._stopped:
            return
        self._stopped = True
        if cancel and self._counter.is_alive():
            with suppress(Exception):
                self._conn.cancel_safe(timeout=5)
        self._counter.join()
        with suppress(Exception):
            self._conn.close()
        self.row_counts = dict(self._counts) if self._complete else None

    def wait(self) -> None:
        try:
            super().wait()
        except BaseException:
            self._stop_counting(cancel=True)
            raise
        self._stop_counting(cancel=False)

    def close(self) -> None:
        super().close()
        self._stop_counting(cancel=True)
