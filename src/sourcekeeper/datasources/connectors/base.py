"""What every connector offers, plus the child-process plumbing they share.

Connectors are the only code that speaks to a data source. They take plain `ConnParams` and byte
streams, never a Session or ORM row, and turn every failure into `ConnectorFailed` with a message a
user can act on and that never contains the password.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO, ClassVar, Self, cast

from sourcekeeper.core.errors import ConnectorFailed

ENGINES: tuple[str, ...] = ("postgresql", "mysql", "mariadb", "sqlite")
COPY_CHUNK = 1024 * 1024
MAX_LINE = 500


@dataclass(frozen=True)
class ConnParams:
    """Everything needed to reach one database; built by the service after decrypting."""

    engine: str
    host: str | None
    port: int | None
    database: str  # a file path for sqlite
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict)  # connection_properties, e.g. sslmode
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unsupported engine {self.engine!r}; expected one of {ENGINES}")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")

    def with_database(self, database: str) -> ConnParams:
        """The same login pointed at another database (restore targets, verification)."""
        return dataclasses.replace(self, database=database)

    def redact(self, text: str) -> str:
        """Remove the password from any text that may reach a user or a log."""
        return redact(text, self.password)


@dataclass
class ConnectionCheck:
    """Outcome of `test_connection`, shaped like the test-connection reply of the API."""

    ok: bool
    latency_ms: float | None
    server_version: str | None
    database: str
    ssl: bool | None
    message: str


def redact(text: str, *secrets: str | None) -> str:
    """Replace each secret by `***`; even a short password must not leak into a message."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def probe_tcp(host: str, port: int, timeout: float) -> str | None:
    """Open and close one TCP connection; return a human reason when that fails, else None.

    Drivers report refused or black-holed hosts in long, engine-specific prose (or only after their
    own, coarser timeout); one plain socket gives a short message within `timeout`.
    """
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"could not resolve host {host!r}"
    except TimeoutError:
        return f"could not connect to {where}: timed out after {timeout:g} s"
    except OSError as exc:
        reasons = {
            errno.ECONNREFUSED: "connection refused",
            errno.EHOSTUNREACH: "no route to host",
            errno.ENETUNREACH: "network unreachable",
            errno.ECONNRESET: "connection reset",
        }
        reason = reasons.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
        return f"could not connect to {where}: {reason}"


def find_tool(*names: str, dirs: Iterable[Path] = ()) -> str | None:
    """First of `names` found in `dirs` (in order), then on PATH."""
    for directory in dirs:
        for name in names:
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def clean_env(drop_prefixes: tuple[str, ...], **extra: str) -> dict[str, str]:
    """The service's environment without inherited client settings (a stray PGPASSWORD or
    MYSQL_PWD must not pick the credentials), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}
    env.update(extra)
    return env


def write_secret_file(content: str, prefix: str) -> tuple[Path, Callable[[], None]]:
    """Write `content` to a fresh 0600 file in a 0700 directory; return it and its remover.

    Used for client option files, so a password reaches a child process without argv (`ps`).
    """
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    path = directory / "client.cnf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)

    def remove() -> None:
        shutil.rmtree(directory, ignore_errors=True)

    return path, remove


class _StderrTail:
    """Drains a child's stderr in a thread (so it never blocks on a full pipe), keeps the tail."""

    def __init__(self, pipe: IO[bytes], max_lines: int = 40) -> None:
        self.max_lines = max_lines
        self.lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in pipe:
                # Tools may echo a failing statement: keep the gist, not a multi-megabyte INSERT.
                line = raw[:MAX_LINE].decode("utf-8", "replace").strip()
                if line:
                    self.lines.append(line)

    def text(self, secrets: Iterable[str | None], last: int = 4) -> str:
        self._thread.join(timeout=5)
        return redact(" | ".join(list(self.lines)[-last:]), *secrets)


def _failure(
    tool: str,
    returncode: int,
    stderr: _StderrTail,
    secrets: Iterable[str | None],
    explain: Callable[[str], str | None] | None,
) -> str:
    """The engine's reading of the whole stderr tail if it has one, else the last few lines."""
    hint = explain(stderr.text(secrets, last=stderr.max_lines)) if explain else None
    return hint or _exit_message(tool, returncode, stderr.text(secrets))


def _exit_message(tool: str, returncode: int, stderr: str) -> str:
    if returncode < 0:
        status = f"was stopped by signal {-returncode}"
    else:
        status = f"failed (exit {returncode})"
    stderr = re.sub(rf"(?:^|(?<=\| ))\S*{re.escape(tool)}: ", "", stderr)  # each line repeats it
    return f"{tool} {status}: {stderr}" if stderr else f"{tool} {status}"


class DumpProcess(ABC):
    """A running dump: read `stdout` to EOF, then `wait()`; `kill()` cancels.

    Use it as a context manager: leaving the block stops the dump if still running and removes
    temporary files, without raising.
    """

    stdout: BinaryIO
    info: dict[str, str]
    pid: int | None = None
    # Exact rows per table as of the data in this dump, when the engine can count in the dump's
    # own snapshot (PostgreSQL, SQLite); set by the time `wait()` returns, else None.
    row_counts: dict[str, int] | None = None

    @abstractmethod
    def kill(self) -> None: ...

    @abstractmethod
    def wait(self) -> None:
        """Block until the dump has ended; raise ConnectorFailed unless it succeeded."""

    @abstractmethod
    def close(self) -> None:
        """Stop if running and release pipes and temporary files; never raises."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SubprocessDump(DumpProcess):
    """A dump tool's process whose stdout is the dump."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        info: dict[str, str],
        secrets: Iterable[str | None] = (),
        cleanup: Callable[[], None] | None = None,
        explain: Callable[[str], str | None] | None = None,
    ) -> None:
        self.info = info
        self._tool = info.get("tool", Path(argv[0]).name)
        self._secrets = tuple(secrets)
        self._cleanup = cleanup
        self._explain = explain
        self._killed = False
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            self._run_cleanup()
            raise ConnectorFailed(f"could not start {self._tool}: {exc.strerror or exc}") from exc
        self.pid = self._proc.pid
        self.stdout = cast(BinaryIO, self._proc.stdout)
        self._stderr = _StderrTail(cast(IO[bytes], self._proc.stderr))

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._killed = True
            self._proc.kill()

    def wait(self) -> None:
        try:
            returncode = self._proc.wait()
        finally:
            self._run_cleanup()
        if self._killed:
            raise ConnectorFailed(f"{self._tool} was cancelled")
        if returncode != 0:
            raise ConnectorFailed(
                _failure(self._tool, returncode, self._stderr, self._secrets, self._explain)
            )

    def close(self) -> None:
        self.kill()
        self._proc.wait()
        self.stdout.close()
        self._run_cleanup()

    def _run_cleanup(self) -> None:
        if self._cleanup is not None:
            cleanup, self._cleanup = self._cleanup, None
            cleanup()


class FileDump(DumpProcess):
    """A dump that is already complete on disk (SQLite): stdout is the file, kill is a no-op."""

    def __init__(self, fh: BinaryIO, info: dict[str, str]) -> None:
        self.stdout = fh
        self.info = info

    def kill(self) -> None:
        """Nothing runs any more: the copy finished before `dump()` returned."""

    def wait(self) -> None:
        """The copy already succeeded, or `dump()` would have raised."""

    def close(self) -> None:
        self.stdout.close()


def run_tool(
    argv: list[str],
    *,
    env: dict[str, str],
    stdin: BinaryIO | Iterable[bytes] | None = None,
    secrets: Iterable[str | None] = (),
    explain: Callable[[str], str | None] | None = None,
    cancel: threading.Event | None = None,
) -> bytes:
    """Run a client tool to completion, feeding `stdin` from a stream; return its stdout.

    If reading `stdin` raises (e.g. the caller's stream signals a cancel), the tool is killed and
    the exception propagates. Setting `cancel` kills the tool too, even while it is blocked (on a
    lock, say) and reads nothing; it then raises ConnectorFailed "... was cancelled". A non-zero
    exit becomes ConnectorFailed with stderr's last lines.
    """
    tool = Path(argv[0]).name
    secrets = tuple(secrets)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise ConnectorFailed(f"could not start {tool}: {exc.strerror or exc}") from exc
    stderr = _StderrTail(cast(IO[bytes], proc.stderr))
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(cast(IO[bytes], proc.stdout).read()))
    reader.start()
    if cancel is not None:
        threading.Thread(target=_kill_on_cancel, args=(proc, cancel), daemon=True).start()
    try:
        if stdin is not None:
            _feed(cast(IO[bytes], proc.stdin), stdin)
    except BaseException:
        proc.kill()
        proc.wait()
        reader.join()
        raise
    returncode = proc.wait()
    reader.join()
    if cancel is not None and cancel.is_set():
        raise ConnectorFailed(f"{tool} was cancelled")
    if returncode != 0:
        raise ConnectorFailed(_failure(tool, returncode, stderr, secrets, explain))
    return out[0] if out else b""


def _kill_on_cancel(proc: subprocess.Popen[bytes], cancel: threading.Event) -> None:
    while proc.poll() is None:
        if cancel.wait(0.2):
            with suppress(ProcessLookupError):
                proc.kill()
            return


def _feed(pipe: IO[bytes], source: BinaryIO | Iterable[bytes]) -> None:
    """Copy `source` into a child's stdin; a child that stops reading early is not our error
    (pg_restore -l stops after the TOC); its exit code tells whether it failed."""
    chunks: Iterator[bytes]
    if hasattr(source, "read"):
        reader = cast(BinaryIO, source)
        chunks = iter(lambda: reader.read(COPY_CHUNK), b"")
    else:
        chunks = iter(source)
    try:
        for chunk in chunks:
            pipe.write(chunk)
    except BrokenPipeError:
        pass
    finally:
        with suppress(BrokenPipeError):
            pipe.close()


@contextmanager
def spooled(stream: BinaryIO, suffix: str = "") -> Iterator[Path]:
    """The stream copied to a private temp file, removed afterwards (for readers needing a path)."""
    fd, name = tempfile.mkstemp(prefix="sk-spool-", suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            shutil.copyfileobj(stream, fh, COPY_CHUNK)
        yield path
    finally:
        path.unlink(missing_ok=True)


class Connector(ABC):
    """One data source behind one engine; each method opens what it needs and closes it again."""

    engine: ClassVar[str]

    def __init__(self, params: ConnParams) -> None:
        self.params = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    def for_database(self, database: str) -> Self:
        """The same connector pointed at another database (restore verification)."""
        return type(self)(self.params.with_database(database))

    @abstractmethod
    def test_connection(self) -> ConnectionCheck:
        """Connect once; never raises for an unreachable or misconfigured source."""

    @abstractmethod
    def server_version(self) -> str: ...

    @abstractmethod
    def list_tables(self) -> list[str]:
        """User tables, sorted: `schema.table` for PostgreSQL, `table` for MySQL and SQLite."""

    @abstractmethod
    def table_row_counts(self) -> dict[str, int]:
        """Exact `count(*)` per user table (keys as in `list_tables`), to verify restores."""

    @abstractmethod
    def database_exists(self, name: str) -> bool: ...

    @abstractmethod
    def create_database(self, name: str) -> None:
        """Create an empty database owned by the login; TargetExists if it is already there."""

    @abstractmethod
    def drop_database(self, name: str) -> None:
        """Drop a database if it exists."""

    @abstractmethod
    def dump(self) -> DumpProcess:
        """Start a consistent dump of `params.database`."""

    @abstractmethod
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
        """Load a dump made by `dump()` into `database` (default: the source's own); setting
        `cancel` stops the load."""

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
        """Like `restore` from a file on disk; engines that can restore in parallel override it."""
        with open(path, "rb") as fh:
            self.restore(fh, database=database, tables=tables, clean=clean, jobs=1, cancel=cancel)

    @staticmethod
    @abstractmethod
    def toc(stream: BinaryIO) -> list[str]:
        """Tables contained in a dump of this engine, named as in `list_tables`, sorted."""


def as_connector_error(
    exc: BaseException, params: ConnParams, text: str | None = None
) -> ConnectorFailed:
    """Wrap a driver error with a redacted message, keeping the original as the cause."""
    error = ConnectorFailed(params.redact(text if text is not None else str(exc)))
    error.__cause__ = exc
    return error


def describe_unexpected(exc: BaseException, params: ConnParams) -> str:
    """Message for an exception a connector did not anticipate (still redacted)."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return params.redact(f"unexpected error: {detail}")
