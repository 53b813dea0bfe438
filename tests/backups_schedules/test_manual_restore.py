"""docs/restore-without-sourcekeeper.md works: its fenced commands, run verbatim with bash on
artifacts made through the API, restore the data with only age, zstd and the database tools."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import LiveService
from servers_plugin import DbServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "restore-without-sourcekeeper.md"
TOOLS = ("age", "zstd", "sha256sum", "bash")


def doc_block(first_line: str) -> str:
    """The ```bash block of the page whose first line is `first_line`."""
    blocks = re.findall(r"^```bash\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    found = [b for b in blocks if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"expected one block starting with {first_line!r} in {DOC}"
    return found[0]


def run_doc(first_line: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a block exactly as written, with the variables it names set as the page tells."""
    script = doc_block(first_line)
    names = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", script))
    missing = names - set(env) - {"PWD"}
    assert not missing, f"the test does not provide {missing} used by {first_line!r}"
    return subprocess.run(
        ["bash", "-e", "-c", script],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def identity(live_service: LiveService, tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"manual restore needs {', '.join(missing)}")
    out = tmp_path_factory.mktemp("identity") / "sourcekeeper-identity.txt"
    result = live_service.sourcekeeper("keys", "export-identity")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(re.fullmatch(r"AGE-SECRET-KEY-1[0-9A-Z]+", line) for line in lines)
    # nothing but comments and keys: stdout is the identity file itself (logs go to stderr)
    assert all(line.startswith(("#", "AGE-SECRET-KEY-1")) for line in lines), lines
    out.write_text(result.stdout)
    out.chmod(0o600)
    return out


def backup_and_download(live: LiveService, source_id: int, dest: Path) -> dict[str, Any]:
    """Back up through the API and fetch the artifact as an operator would (download route)."""
    started = live.api("POST", f"/api/data-sources/{source_id}/backups", json={})["backup"]
    backup = live.wait_job(f"/api/data-sources/{source_id}/backups/{started['id']}", "backup")
    assert backup["status"] == "completed", backup
    with httpx.stream(
        "GET",
        f"{live.url}/api/data-sources/{source_id}/backups/{backup['id']}/download",
        headers={"Authorization": f"Bearer {live.token}"},
        timeout=60,
    ) as resp:
        assert resp.status_code == 200
        with open(dest, "wb") as fh:
            for chunk in resp.iter_bytes():
                fh.write(chunk)
    # the same bytes as the stored object the page tells operators to copy
    stored = live.data_dir / "artifacts" / backup["location"]
    assert stored.read_bytes() == dest.read_bytes()
    return backup


def check_artifact(env: dict[str, str], cwd: Path, checksum: str) -> None:
    result = run_doc("# Check the artifact", env | {"CHECKSUM": checksum}, cwd)
    assert result.returncode == 0, result.stderr
    assert ": OK" in result.stdout
    wrong = run_doc("# Check the artifact", env | {"CHECKSUM": "0" * 64}, cwd)
    assert wrong.returncode != 0 and "FAILED" in wrong.stdout + wrong.stderr


# ---- PostgreSQL ----------------------------------------------------------------------------------

PG_SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, city text, balance numeric(12,2),
                        joined timestamptz NOT NULL, tags text[], profile jsonb, photo bytea);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id),
                     total numeric(10,2), placed timestamptz DEFAULT now());
CREATE INDEX orders_customer ON orders (customer_id);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
INSERT INTO customers (name, city, balance, joined, tags, profile, photo)
SELECT 'Zoë ' || g || ' Łukasz 東京 ✓', (ARRAY['Paris','Kraków','São Paulo'])[1 + g % 3],
       g * 3.25, timestamptz '2024-03-01 10:00+01' + g * interval '1 hour',
       ARRAY['vip', 'tag' || g], jsonb_build_object('n', g, 'ok', g % 2 = 0),
       decode(md5(g::text), 'hex')
FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, total) SELECT 1 + g % 300, g * 1.5 FROM generate_series(1, 2000) g;
"""


def pg_fingerprint(server: DbServer, database: str) -> dict[str, Any]:
    rows = {}
    for table in ("customers", "orders"):
        data = server.execute(
            f"SELECT md5(string_agg(t::text, '|' ORDER BY id)), count(*) FROM {table} t",
            database=database,
        )
        rows[table] = data[0]
    rows["view"] = server.execute("SELECT count(*) FROM big_orders", database=database)[0]
    rows["seq"] = server.execute("SELECT last_value FROM orders_id_seq", database=database)[0]
    return rows


@pytest.mark.integration
def test_postgresql_restore_with_age_zstd_and_pg_restore(
    live_service: LiveService, identity: Path, pg_server: DbServer, tmp_path: Path
) -> None:
    name = f"manual_src_{secrets.token_hex(3)}"
    pg_server.create_database(name)
    pg_server.execute(PG_SCHEMA, database=name)
    ds = live_service.api(
        "POST",
        "/api/data-sources",
        json={
            "name": name,
            "source_type": "postgresql",
            "host": pg_server.host,
            "port": pg_server.port,
            "database_name": name,
            "username": pg_server.superuser,
            "password": pg_server.password,
        },
    )["data_source"]
    artifact = tmp_path / "backup.dump.zst.age"
    backup = backup_and_download(live_service, ds["id"], artifact)
    assert "Kraków".encode() not in artifact.read_bytes()  # encrypted: nothing readable
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == backup["checksum_sha256"]
    env = {"IDENTITY": str(identity), "ARTIFACT": str(artifact)}
    check_artifact(env, tmp_path, backup["checksum_sha256"])

    target = f"manual_dst_{secrets.token_hex(3)}"
    pg_env = {
        "PGHOST": pg_server.host,
        "PGPORT": str(pg_server.port),
        "PGUSER": pg_server.superuser,
        "PGPASSWORD": pg_server.password,
        "TARGET_DB": target,
    }
    result = run_doc("# PostgreSQL: restore into a new database", env | pg_env, tmp_path)
    assert result.returncode == 0, result.stderr
    try:
        assert pg_fingerprint(pg_server, target) == pg_fingerprint(pg_server, name)
    finally:
        pg_server.drop_database(target)
        pg_server.drop_database(name)


# ---- SQLite --------------------------------------------------------------------------------------


def test_sqlite_restore_with_age_and_zstd(
    live_service: LiveService, identity: Path, tmp_path: Path
) -> None:
    live_service.sqlite_dir.mkdir(parents=True, exist_ok=True)
    path = live_service.sqlite_dir / f"manual-{secrets.token_hex(4)}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, blob BLOB)")
        conn.executemany(
            "INSERT INTO notes (body, blob) VALUES (?, ?)",
            [(f"note {i} — ünïcode", bytes([i % 256]) * 10) for i in range(1000)],
        )
    ds = live_service.api(
        "POST",
        "/api/data-sources",
        json={"name": path.stem, "source_type": "sqlite", "database_name": str(path)},
    )["data_source"]
    artifact = tmp_path / "backup.db.zst.age"
    backup = backup_and_download(live_service, ds["id"], artifact)
    env = {"IDENTITY": str(identity), "ARTIFACT": str(artifact)}
    check_artifact(env, tmp_path, backup["checksum_sha256"])
    target = tmp_path / "restored.db"
    result = run_doc("# SQLite: restore to a file", env | {"TARGET_FILE": str(target)}, tmp_path)
    assert result.returncode == 0, result.stderr

    def dump(p: Path) -> list[Any]:
        with sqlite3.connect(p) as conn:
            return conn.execute("SELECT * FROM notes ORDER BY id").fetchall()

    assert dump(target) == dump(path)
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ---- MariaDB -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_mariadb_restore_with_age_zstd_and_the_mariadb_client(
    live_service: LiveService, identity: Path, mariadb_server: DbServer, tmp_path: Path
) -> None:
    if shutil.which("mariadb") is None:
        pytest.skip("the mariadb client is not installed")
    name = f"manual_src_{secrets.token_hex(3)}"
    mariadb_server.create_database(name)
    mariadb_server.execute(
        "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, label VARCHAR(100), "
        "price DECIMAL(10,2), seen DATETIME(6), data JSON, raw VARBINARY(32));"
        "INSERT INTO items (label, price, seen, data, raw) VALUES "
        + ",".join(
            f"('ítem {i} ✓', {i}.25, '2025-01-0{1 + i % 9} 10:00:00.12345{i % 10}', "
            f"'{{\"n\": {i}}}', UNHEX(MD5('{i}')))"
            for i in range(200)
        ),
        database=name,
    )
    ds = live_service.api(
        "POST",
        "/api/data-sources",
        json={
            "name": name,
            "source_type": "mariadb",
            "host": mariadb_server.host,
            "port": mariadb_server.port,
            "database_name": name,
            "username": mariadb_server.superuser,
            "password": mariadb_server.password,
        },
    )["data_source"]
    artifact = tmp_path / "backup.sql.zst.age"
    backup = backup_and_download(live_service, ds["id"], artifact)
    env = {"IDENTITY": str(identity), "ARTIFACT": str(artifact)}
    check_artifact(env, tmp_path, backup["checksum_sha256"])
    mycnf = tmp_path / "my.cnf"
    mycnf.write_text(
        f"[client]\nhost={mariadb_server.host}\nport={mariadb_server.port}\n"
        f"user={mariadb_server.superuser}\npassword={mariadb_server.password}\n"
    )
    mycnf.chmod(0o600)
    target = f"manual_dst_{secrets.token_hex(3)}"
    result = run_doc(
        "# MariaDB: restore into a new database",
        env | {"MYCNF": str(mycnf), "TARGET_DB": target},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr

    def fingerprint(db: str) -> list[tuple[Any, ...]]:
        return mariadb_server.execute(
            "SET SESSION group_concat_max_len = 10000000; "
            "SELECT COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS('|', id, label, price, seen, data, "
            "HEX(raw)) ORDER BY id SEPARATOR ';')) FROM items",
            database=db,
        )

    try:
        assert fingerprint(target) == fingerprint(name)
        assert fingerprint(target)[0][0] == 200
    finally:
        mariadb_server.drop_database(target)
        mariadb_server.drop_database(name)
