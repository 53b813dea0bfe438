"""Helpers of the backup tests: API calls that wait for jobs, content fingerprints per engine, a
TCP gate standing in for a slow network link, and process lookups."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from servers_plugin import DbServer
from support import DATA_DIR, Caller


class Worker:
    """The embedded consumer the backup jobs run on (threads, polling the real SQLite queue)."""

    def __init__(self) -> None:
        self._consumer: Any = None
        self.start()

    def start(self) -> None:
        from sourcekeeper import tasks  # noqa: F401 - every task name must be known
        from sourcekeeper.jobs import queue

        # Short polling delays: the default backs off to 10 s between polls when idle.
        self._consumer = queue.EmbeddedConsumer(
            queue.huey,
            workers=2,
            worker_type="thread",
            periodic=False,
            initial_delay=0.05,
            backoff=1.1,
            max_delay=0.3,
        )
        self._consumer.start()

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until no job is queued (the jobs this module's tests queued have all run)."""
        from sourcekeeper.jobs import queue

        deadline = time.monotonic() + timeout
        while queue.queue_depth() and time.monotonic() < deadline:
            time.sleep(0.1)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No job of this process runs inside the block (queued jobs wait for the resume)."""
        self.stop()
        try:
            yield
        finally:
            self.start()


FINISHED = ("completed", "failed", "cancelled")
ARTIFACTS = DATA_DIR / "artifacts"


def base(ds_id: int) -> str:
    return f"/api/data-sources/{ds_id}"


def register_source(client: TestClient, caller: Caller, **body: Any) -> dict[str, Any]:
    resp = client.post("/api/data-sources", headers=caller.headers, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]["data_source"]


def start_backup(
    client: TestClient, caller: Caller, ds_id: int, body: Any = None
) -> dict[str, Any]:
    resp = client.post(
        f"{base(ds_id)}/backups", headers=caller.headers, json=body if body is not None else {}
    )
    assert resp.status_code == 202, resp.text
    return resp.json()["data"]["backup"]


def get_backup(client: TestClient, caller: Caller, ds_id: int, backup_id: int) -> dict[str, Any]:
    resp = client.get(f"{base(ds_id)}/backups/{backup_id}", headers=caller.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["backup"]


def wait_for(fetch: Any, done: Any, timeout: float = 90.0, what: str = "job") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = fetch()
        if done(current):
            return current  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not get there in {timeout} s: {current}")
        time.sleep(0.1)


def wait_backup(
    client: TestClient, caller: Caller, ds_id: int, backup_id: int, timeout: float = 90.0
) -> dict[str, Any]:
    return wait_for(
        lambda: get_backup(client, caller, ds_id, backup_id),
        lambda b: b["status"] in FINISHED,
        timeout,
        f"backup {backup_id}",
    )


def backup_ok(client: TestClient, caller: Caller, ds_id: int, body: Any = None) -> dict[str, Any]:
    backup = start_backup(client, caller, ds_id, body)
    done = wait_backup(client, caller, ds_id, backup["id"])
    assert done["status"] == "completed", done
    return done


def start_restore(
    client: TestClient,
    caller: Caller,
    ds_id: int,
    backup_id: int,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    resp = client.post(
        f"{base(ds_id)}/backups/{backup_id}/restore", headers=caller.headers, json=body or {}
    )
    assert resp.status_code == 202, resp.text
    return resp.json()["data"]["restore"]


def wait_restore(
    client: TestClient, caller: Caller, ds_id: int, restore_id: int, timeout: float = 120.0
) -> dict[str, Any]:
    def fetch() -> dict[str, Any]:
        resp = client.get(f"{base(ds_id)}/restores/{restore_id}", headers=caller.headers)
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]["restore"]  # type: ignore[no-any-return]

    return wait_for(fetch, lambda r: r["status"] in FINISHED, timeout, f"restore {restore_id}")


def restore_ok(
    client: TestClient,
    caller: Caller,
    ds_id: int,
    backup_id: int,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    restore = start_restore(client, caller, ds_id, backup_id, body)
    done = wait_restore(client, caller, ds_id, restore["id"])
    assert done["status"] == "completed", done
    return done


def export_identity(directory: Path) -> Path:
    """The service's age identities as a 0600 identity file, for `age -d -i`."""
    from sourcekeeper.backups import keys
    from sourcekeeper.core.db import session_scope

    with session_scope() as db:
        text = keys.export_identities(db)
    path = directory / "identity.txt"
    path.write_text(text)
    path.chmod(0o600)
    return path


def artifact_path(location: str) -> Path:
    return ARTIFACTS.joinpath(*location.split("/"))


def leftovers(backup_id: int) -> list[str]:
    """Temp files of unfinished writes of this backup's artifact in the local store."""
    temp = ARTIFACTS / ".tmp"
    if not temp.is_dir():
        return []
    return [p.name for p in temp.iterdir() if p.name.startswith(f"{backup_id}.")]


# ---- fingerprints: every table's ordered content, and the sequences ----------------------------


def _digest(rows: list[Any]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def pg_fingerprint(server: DbServer, database: str) -> dict[str, Any]:
    conn = server.connect(database)
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        out: dict[str, Any] = {}
        for schema, table in cur.fetchall():  # tables and views
            cur.execute(f'SELECT t::text FROM "{schema}"."{table}" t ORDER BY 1')
            out[f"{schema}.{table}"] = _digest(cur.fetchall())
        cur.execute("SELECT schemaname, sequencename FROM pg_sequences ORDER BY 1, 2")
        for schema, seq in cur.fetchall():
            cur.execute(f'SELECT last_value, is_called FROM "{schema}"."{seq}"')
            out[f"sequence {schema}.{seq}"] = cur.fetchone()
        return out
    finally:
        conn.close()


def my_fingerprint(server: DbServer, database: str) -> dict[str, Any]:
    conn = server.connect(database)
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT TABLE_NAME, TABLE_TYPE, AUTO_INCREMENT FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = %s ORDER BY 1",
            (database,),
        )
        out: dict[str, Any] = {}
        for name, kind, auto in cur.fetchall():
            if kind == "SEQUENCE":
                cur.execute(f"SELECT next_not_cached_value FROM `{name}`")
                out[f"sequence {name}"] = cur.fetchone()
                continue
            cur.execute(f"SELECT * FROM `{name}` ORDER BY 1")
            out[name] = _digest(list(cur.fetchall()))
            if kind == "BASE TABLE":
                out[f"auto_increment {name}"] = auto
        return out
    finally:
        conn.close()


def sqlite_fingerprint(path: Path | str) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        out: dict[str, Any] = {}
        names = conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name"
        ).fetchall()
        for (name,) in names:
            out[name] = _digest(conn.execute(f'SELECT * FROM "{name}" ORDER BY 1').fetchall())
        return out


# ---- processes ---------------------------------------------------------------------------------


def processes_with(needle: bytes) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains `needle`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---- a network link we can hold ----------------------------------------------------------------


class TcpGate:
    """A TCP forwarder to a local server that stands in for a slow network link.

    Once a connection has carried `hold_after` bytes from the server, further server bytes wait
    until `release()`: a dump larger than that is held mid-stream, deterministically, however
    fast this machine dumps.
    """

    def __init__(self, upstream_port: int, hold_after: int) -> None:
        self.upstream_port = upstream_port
        self.hold_after = hold_after
        self.held = threading.Event()
        self._released = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        carried = 0
        try:
            while data := src.recv(65536):
                if from_server and carried >= self.hold_after and not self._released.is_set():
                    self.held.set()
                    self._released.wait()
                dst.sendall(data)
                carried += len(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
