"""Throwaway PostgreSQL 15, MariaDB and Redis servers for the test session.

Loaded as a pytest plugin (``pytest_plugins = ["servers_plugin"]``). Each server is started lazily,
once per session, on a free loopback port inside its own temporary directory, and stopped by the
PID we started. Three layers make sure none outlives the run: the fixture finalizer (normal end and
Ctrl-C), an ``atexit`` hook (exits that skip teardown), and a watchdog process that stops whatever
is left when the test process vanishes without running Python cleanup (SIGTERM, SIGKILL,
``os._exit`` from pytest-timeout's thread method).

When a server binary is missing the fixture skips, unless ``SOURCEKEEPER_TEST_REQUIRE_SERVERS=1``
(set by ``scripts/test``), where it fails: CI must never pass by skipping the integration tests.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

import pytest

__all__ = [
    "DbServer",
    "RedisServer",
    "ServerStartError",
    "free_port",
    "mariadb_server",
    "pg_server",
    "redis_server",
]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REQUIRE_ENV = "SOURCEKEEPER_TEST_REQUIRE_SERVERS"
HOST = "127.0.0.1"
# mariadbd lives in /usr/sbin, which a non-root PATH on Debian does not include.
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
_BIND_ERRORS = ("address already in use", "could not bind", "bind on tcp/ip port")
_START_ATTEMPTS = 3  # a free port can be taken between probing and binding; retry on a new one

# fmt: off
_INITDB_OPTS = ["-U", "postgres", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"]
# Durability is worthless for throwaway data; these make tests several times faster.
_PG_SPEED_OPTS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
_INSTALL_DB_OPTS = ["--auth-root-authentication-method=normal", "--skip-test-db",
                    "--skip-name-resolve"]
_MARIADBD_OPTS = ["--skip-name-resolve", "--max-connections=300",
                  "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
                  "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=0",
                  "--innodb-doublewrite=0"]
# fmt: on

Engine = Literal["postgresql", "mariadb"]


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the tail of its log."""


def free_port(host: str = HOST) -> int:
    """Return a TCP port free on ``host`` right now (fixed ports collide on shared machines)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Server handles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DbServer:
    """A running PostgreSQL or MariaDB server owned by this test session."""

    engine: Engine
    host: str
    port: int
    superuser: str
    password: str
    pid: int
    base_dir: Path
    socket: str  # PostgreSQL: the socket directory; MariaDB: the socket file

    @property
    def default_database(self) -> str | None:
        """Where a connection lands without a database: ``postgres``, or none on MariaDB.

        MariaDB needs no database to log in, and a fresh user has no right to ``mysql``.
        """
        return "postgres" if self.engine == "postgresql" else None

    @property
    def log_file(self) -> Path:
        """The server's log, worth reading when a test against it fails oddly."""
        return self.base_dir / ("postgresql.log" if self.engine == "postgresql" else "mariadb.err")

    def url(
        self, database: str | None = None, *, user: str | None = None, password: str | None = None
    ) -> str:
        """Return a SQLAlchemy URL over TCP (superuser unless ``user`` is given)."""
        scheme = "postgresql" if self.engine == "postgresql" else "mysql+pymysql"
        name = quote(user or self.superuser, safe="")
        secret = quote(self.password if password is None else password, safe="")
        db = database or self.default_database
        path = f"/{quote(db, safe='')}" if db else ""
        return f"{scheme}://{name}:{secret}@{self.host}:{self.port}{path}"

    def connect(
        self, database: str | None = None, *, user: str | None = None, password: str | None = None
    ) -> Any:
        """Open an autocommit driver connection over TCP (psycopg 3 or PyMySQL)."""
        user = user or self.superuser
        password = self.password if password is None else password
        database = database or self.default_database
        if self.engine == "postgresql":
            import psycopg

            return psycopg.connect(
                host=self.host,
                port=self.port,
                user=user,
                password=password,
                dbname=database,
                autocommit=True,
                connect_timeout=10,
            )
        import pymysql
        from pymysql.constants import CLIENT

        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=user,
            password=password,
            database=database,
            autocommit=True,
            connect_timeout=10,
            charset="utf8mb4",
            client_flag=CLIENT.MULTI_STATEMENTS,
        )

    def execute(
        self, sql: str, database: str | None = None, params: Sequence[Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run SQL as the superuser in autocommit mode; return the rows of the last result set.

        Several statements separated by ``;`` are allowed when ``params`` is None.
        """
        conn = self.connect(database)
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            rows: list[tuple[Any, ...]] = []
            while True:
                if cur.description is not None:
                    rows = [tuple(r) for r in cur.fetchall()]
                if not cur.nextset():
                    return rows
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        """Create an empty database (UTF-8 everywhere)."""
        if self.engine == "postgresql":
            self.execute(f"CREATE DATABASE {_pg_ident(name)} ENCODING 'UTF8' TEMPLATE template0")
        else:
            self.execute(f"CREATE DATABASE {_my_ident(name)} CHARACTER SET utf8mb4")

    def drop_database(self, name: str) -> None:
        """Drop a database if it exists, disconnecting any session still using it."""
        if self.engine == "postgresql":
            self.execute(f"DROP DATABASE IF EXISTS {_pg_ident(name)} WITH (FORCE)")
        else:
            self.execute(f"DROP DATABASE IF EXISTS {_my_ident(name)}")

    def create_user(self, name: str, password: str) -> None:
        """Create a login user with a password; grant it what the test needs with ``execute``.

        On MariaDB the account is ``name@'%'`` so it is reachable over TCP from 127.0.0.1.
        """
        if self.engine == "postgresql":
            self.execute(f"CREATE ROLE {_pg_ident(name)} LOGIN PASSWORD {_pg_string(password)}")
        else:
            self.execute(f"CREATE USER {_my_string(name)}@'%' IDENTIFIED BY {_my_string(password)}")


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server owned by this test session."""

    host: str
    port: int
    pid: int
    base_dir: Path

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0."""
        return f"redis://{self.host}:{self.port}/0"


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _my_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _pg_string(value: str) -> str:
    """Quote a PostgreSQL literal (standard_conforming_strings is on: backslash is plain)."""
    return "'" + value.replace("'", "''") + "'"


def _my_string(value: str) -> str:
    """Quote a MariaDB literal (the default sql_mode treats backslash as an escape)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------
# Process bookkeeping: stop by PID, never by name, whatever way the session ends
# --------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """Return (state, start time) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def _pid_alive(pid: int, start_time: str | None = None) -> bool:
    """True while ``pid`` runs (zombies count as gone) and is the process we started."""
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_time is None or stat[1] == start_time


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _watchdog_main() -> None:
    """Separate process: on EOF of stdin (test process gone) stop every server still registered."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    entries: dict[int, dict[str, Any]] = {}
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["op"] == "add":
            entries[msg["pid"]] = msg
        else:
            entries.pop(msg["pid"], None)
    live = [e for e in entries.values() if _pid_alive(e["pid"], e["start"])]
    for e in live:
        _kill(e["pid"], e["sig"])
    for e in live:
        if not _wait_gone(e["pid"], 15):
            _kill(e["pid"], signal.SIGKILL)
            _wait_gone(e["pid"], 5)
    for e in entries.values():
        shutil.rmtree(e["dir"], ignore_errors=True)


class _Reaper:
    """Tracks started servers; stops them from atexit and through the watchdog process."""

    def __init__(self) -> None:
        self._stops: dict[int, Callable[[], None]] = {}
        self._watchdog: subprocess.Popen[str] | None = None
        self._atexit_registered = False
        self._closed = False

    def register(self, pid: int, sig: int, base_dir: Path, stop: Callable[[], None]) -> None:
        """Remember a started server, and the signal that shuts it down cleanly."""
        self._stops[pid] = stop
        if not self._atexit_registered:
            atexit.register(self.stop_all)
            self._atexit_registered = True
        stat = _proc_stat(pid)
        self._tell(
            {
                "op": "add",
                "pid": pid,
                "sig": int(sig),
                "dir": str(base_dir),
                "start": stat[1] if stat else None,
            }
        )

    def forget(self, pid: int) -> None:
        """The server was stopped by its finalizer."""
        self._stops.pop(pid, None)
        self._tell({"op": "del", "pid": pid})

    def stop(self, pid: int) -> None:
        """Stop one server now (fixture finalizer path)."""
        stop = self._stops.get(pid)
        if stop is not None:
            stop()

    def stop_all(self) -> None:
        """Stop every server still registered, then let the watchdog exit (atexit path)."""
        for pid, stop in list(self._stops.items()):
            with contextlib.suppress(Exception):
                stop()
            self._stops.pop(pid, None)
        self._closed = True
        watchdog = self._watchdog
        if watchdog is not None and watchdog.stdin is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                watchdog.stdin.close()  # EOF: it stops anything we failed to stop, then exits
                watchdog.wait(30)

    def _tell(self, msg: dict[str, Any]) -> None:
        if self._closed:
            return
        try:
            if self._watchdog is None or self._watchdog.poll() is not None:
                # Own session: a Ctrl-C to the test run's process group must not reach it.
                self._watchdog = subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), "--watchdog"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    text=True,
                )
            stdin: IO[str] | None = self._watchdog.stdin
            assert stdin is not None
            stdin.write(json.dumps(msg) + "\n")
            stdin.flush()
        except (OSError, ValueError):
            pass  # the finalizer and atexit still stop the servers


_reaper = _Reaper()


# --------------------------------------------------------------------------------------------
# Starting servers
# --------------------------------------------------------------------------------------------


def _missing_or_skip(what: str, missing: list[str]) -> None:
    """Skip (or fail under SOURCEKEEPER_TEST_REQUIRE_SERVERS=1) when binaries are missing."""
    if not missing:
        return
    reason = f"{what} test server unavailable: missing {', '.join(missing)}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(
            f"{reason} ({REQUIRE_ENV}=1); install the Debian packages (scripts/test does, as root)",
            pytrace=False,
        )
    pytest.skip(reason)


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SBIN_PATH)


def _as_owner(owner: str, argv: list[str]) -> list[str]:
    """Run as the service user when we are root (initdb and mariadbd refuse or dislike root)."""
    return ["runuser", "-u", owner, "--", *argv] if os.geteuid() == 0 else argv


def _make_base_dir(prefix: str, owner: str | None) -> Path:
    # Unix socket paths are limited to ~107 bytes: a long TMPDIR would break them.
    parent = tempfile.gettempdir()
    if len(parent) > 60 or " " in parent:  # a space would also split pg_ctl's -o options
        parent = "/tmp"
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    if owner and os.geteuid() == 0:
        shutil.chown(base, owner, owner)
    return base


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _run(argv: list[str], cwd: Path, what: str, log: Path) -> None:
    """Run a setup command; on failure raise with its output and the log tail."""
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if res.returncode != 0:
        raise ServerStartError(
            f"{what} failed (exit {res.returncode}): {' '.join(argv)}\n"
            f"{res.stdout}{res.stderr}\n--- {log} ---\n{_log_tail(log)}"
        )


def _is_bind_error(log: Path) -> bool:
    return any(m in _log_tail(log, 20).lower() for m in _BIND_ERRORS)


def _require_user(name: str) -> None:
    if os.geteuid() != 0:
        return
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError as exc:
        raise ServerStartError(
            f"system user {name!r} does not exist (install the package)"
        ) from exc


def start_postgres(timeout: float = 30.0) -> DbServer:
    """initdb a fresh PostgreSQL 15 cluster with scram-sha-256 auth and start it."""
    initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
    missing = [str(p) for p in (initdb, pg_ctl, PG_BIN / "postgres") if not p.exists()]
    if os.geteuid() == 0 and not _which("runuser"):
        missing.append("runuser")
    _missing_or_skip("PostgreSQL 15", missing)
    _require_user("postgres")

    base = _make_base_dir("sk-pg-", "postgres")
    data, log = base / "data", base / "postgresql.log"
    password = secrets.token_urlsafe(24)
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    try:
        # Password auth on TCP and socket alike, so a wrong password really fails.
        argv = [str(initdb), "-D", str(data), f"--pwfile={pwfile}", *_INITDB_OPTS]
        _run(_as_owner("postgres", argv), base, "initdb", log)
        pwfile.unlink()
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            opts = f"-c listen_addresses={HOST} -p {port} -k {base} {_PG_SPEED_OPTS}"
            argv = [str(pg_ctl), "-D", str(data), "-l", str(log), "-w", "-t", str(int(timeout))]
            argv += ["-o", opts, "start"]
            try:
                _run(_as_owner("postgres", argv), base, "pg_ctl start", log)
                break
            except ServerStartError:
                if attempt + 1 < _START_ATTEMPTS and _is_bind_error(log):
                    continue
                raise
        pid = int((data / "postmaster.pid").read_text().split()[0])
    except BaseException:
        with contextlib.suppress(subprocess.TimeoutExpired):
            _stop_pg_dir(data)
        shutil.rmtree(base, ignore_errors=True)
        raise
    server = DbServer("postgresql", HOST, port, "postgres", password, pid, base, str(base))

    def stop() -> None:
        _stop_pg(server)

    _reaper.register(pid, signal.SIGINT, base, stop)  # SIGINT = PostgreSQL "fast" shutdown
    try:
        server.execute("SELECT 1")
    except BaseException:
        stop()
        raise
    return server


def _stop_pg_dir(data: Path) -> None:
    if (data / "postmaster.pid").exists():
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "20", "stop"]
        subprocess.run(
            _as_owner("postgres", argv),
            cwd=data.parent,
            capture_output=True,
            timeout=60,
            check=False,
        )


def _stop_pg(server: DbServer) -> None:
    """pg_ctl stop -m fast on our data dir, then make sure our postmaster PID is really gone."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        _stop_pg_dir(server.base_dir / "data")
    if not _wait_gone(server.pid, 10):
        _kill(server.pid, signal.SIGKILL)
        _wait_gone(server.pid, 5)
    shutil.rmtree(server.base_dir, ignore_errors=True)
    _reaper.forget(server.pid)


def start_mariadb(timeout: float = 60.0) -> DbServer:
    """mariadb-install-db a fresh datadir, start mariadbd, give root a password over TCP."""
    install_db, mariadbd = _which("mariadb-install-db"), _which("mariadbd")
    missing = [n for n, p in (("mariadb-install-db", install_db), ("mariadbd", mariadbd)) if not p]
    _missing_or_skip("MariaDB", missing)
    assert install_db and mariadbd
    import pymysql

    _require_user("mysql")
    as_root = os.geteuid() == 0
    user_opt = ["--user=mysql"] if as_root else []
    base = _make_base_dir("sk-my-", "mysql")
    data, log, sock = base / "data", base / "mariadb.err", base / "mysqld.sock"
    proc: subprocess.Popen[bytes] | None = None
    try:
        # --no-defaults must come first, or /etc/mysql config leaks in.
        argv = [install_db, "--no-defaults", *user_opt, f"--datadir={data}", *_INSTALL_DB_OPTS]
        _run(argv, base, "mariadb-install-db", log)
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            argv = [mariadbd, "--no-defaults", *user_opt, f"--datadir={data}", f"--port={port}"]
            argv += [f"--bind-address={HOST}", f"--socket={sock}", f"--log-error={log}"]
            argv += [f"--pid-file={base / 'mariadbd.pid'}", *_MARIADBD_OPTS]
            proc = _spawn(argv, base)
            if _wait_mariadb(proc, sock, timeout):
                break
            if attempt + 1 < _START_ATTEMPTS and proc.poll() is not None and _is_bind_error(log):
                continue
            raise _not_ready("mariadbd", proc, timeout, log)  # the except below stops it
        assert proc is not None
        password = secrets.token_urlsafe(24)
        _secure_mariadb(sock, password)
    except BaseException:
        if proc is not None:
            _terminate(proc)
        shutil.rmtree(base, ignore_errors=True)
        raise
    server = DbServer("mariadb", HOST, port, "root", password, proc.pid, base, str(sock))
    running = proc

    def stop() -> None:
        _terminate(running)
        shutil.rmtree(base, ignore_errors=True)
        _reaper.forget(running.pid)

    _reaper.register(proc.pid, signal.SIGTERM, base, stop)
    try:
        server.execute("SELECT 1")
    except pymysql.MySQLError:
        stop()
        raise
    return server


def _wait_mariadb(proc: subprocess.Popen[bytes], sock: Path, timeout: float) -> bool:
    """Poll the socket until root (still passwordless) can log in, or the server died."""
    import pymysql

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if sock.exists():
            try:
                pymysql.connect(
                    unix_socket=str(sock), user="root", password="", connect_timeout=2
                ).close()
                return True
            except pymysql.MySQLError:
                pass
        time.sleep(0.05)
    return False


def _secure_mariadb(sock: Path, password: str) -> None:
    """Keep root only at localhost (socket) and 127.0.0.1 (TCP), both with ``password``."""
    import pymysql

    conn = pymysql.connect(unix_socket=str(sock), user="root", password="", autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT User, Host FROM mysql.global_priv")
        for user, host in cur.fetchall():
            if user == "" or (user == "root" and host not in ("localhost", "127.0.0.1")):
                cur.execute(f"DROP USER {_my_string(user)}@{_my_string(host)}")
        pw = _my_string(password)
        cur.execute(f"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY {pw}")
        cur.execute(f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY {pw}")
        cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
        cur.execute(f"ALTER USER 'root'@'localhost' IDENTIFIED BY {pw}")
    finally:
        conn.close()


def _not_ready(what: str, proc: subprocess.Popen[Any], timeout: float, log: Path) -> Exception:
    code = proc.poll()
    how = f"exited with code {code}" if code is not None else f"not ready after {timeout:.0f}s"
    return ServerStartError(f"{what} {how}\n--- {log} ---\n{_log_tail(log)}")


def _spawn(argv: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start a server in the foreground as our child; its output goes to its own log file.

    Not inheriting our stdout matters: a server holding a CI pipe open would hang the run.
    """
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _terminate(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM a child we started and reap it; SIGKILL if it does not go in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_redis(timeout: float = 20.0) -> RedisServer:
    """Start a non-persistent redis-server in the foreground (so its PID is our child's)."""
    binary = _which("redis-server")
    _missing_or_skip("Redis", [] if binary else ["redis-server"])
    assert binary
    base = _make_base_dir("sk-redis-", None)
    log = base / "redis.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            argv = [binary, "--port", str(port), "--bind", HOST, "--dir", str(base)]
            argv += ["--logfile", str(log), "--save", "", "--appendonly", "no", "--daemonize", "no"]
            proc = _spawn(argv, base)
            if _wait_redis(proc, port, timeout):
                break
            if attempt + 1 < _START_ATTEMPTS and proc.poll() is not None and _is_bind_error(log):
                continue
            raise _not_ready("redis-server", proc, timeout, log)  # the except below stops it
    except BaseException:
        if proc is not None:
            _terminate(proc)
        shutil.rmtree(base, ignore_errors=True)
        raise
    assert proc is not None
    server = RedisServer(HOST, port, proc.pid, base)
    running = proc

    def stop() -> None:
        _terminate(running)
        shutil.rmtree(base, ignore_errors=True)
        _reaper.forget(running.pid)

    _reaper.register(proc.pid, signal.SIGTERM, base, stop)
    return server


def redis_ping(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send an inline PING over a raw socket (redis-py is not a dependency)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _wait_redis(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if redis_ping(HOST, port, 0.5):
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[DbServer]:
    """A fresh PostgreSQL 15 cluster; superuser ``postgres`` with a random password."""
    server = start_postgres()
    try:
        yield server
    finally:
        _reaper.stop(server.pid)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[DbServer]:
    """A fresh MariaDB server; ``root`` with a random password over TCP 127.0.0.1."""
    server = start_mariadb()
    try:
        yield server
    finally:
        _reaper.stop(server.pid)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A fresh non-persistent redis-server on a free loopback port."""
    server = start_redis()
    try:
        yield server
    finally:
        _reaper.stop(server.pid)


if __name__ == "__main__" and sys.argv[1:] == ["--watchdog"]:
    _watchdog_main()
