"""SQLite round trips through the API, the encryption of the stored artifact, and a damaged
artifact that must fail restore and verify without touching the target."""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from backup_support import (
    Worker,
    artifact_path,
    backup_ok,
    base,
    export_identity,
    get_backup,
    register_source,
    restore_ok,
    sqlite_fingerprint,
    start_restore,
    wait_for,
    wait_restore,
)
from fastapi.testclient import TestClient
from support import Caller

MARKER = "plaintext-marker-" + secrets.token_hex(6)


def make_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            PRAGMA foreign_keys = ON;
            CREATE TABLE customers (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                                    balance NUMERIC, joined TEXT, avatar BLOB, prefs TEXT);
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL
                                 REFERENCES customers(id), total REAL, note TEXT);
            CREATE INDEX ix_orders_customer ON orders (customer_id);
            CREATE VIEW big_spenders AS
                SELECT c.name, sum(o.total) AS spent FROM customers c
                JOIN orders o ON o.customer_id = c.id GROUP BY c.name;
            """
        )
        conn.executemany(
            "INSERT INTO customers (name, balance, joined, avatar, prefs) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    "Zoë Ångström ✓",
                    "1234.56",
                    "2026-11-25T09:30:00+01:00",
                    bytes(range(256)),
                    '{"theme": "dark", "tags": ["a", "b"]}',
                ),
                ("李小龍", "-0.01", "1999-12-31T23:59:59Z", b"\x00\xff" * 100, "{}"),
                (MARKER, None, None, None, None),
            ],
        )
        conn.executemany(
            "INSERT INTO orders (customer_id, total, note) VALUES (?, ?, ?)",
            [(1 + i % 3, i * 1.5, f"order {i} ☕") for i in range(200)],
        )


def mutate(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM orders WHERE id % 2 = 0")
        conn.execute("UPDATE customers SET name = 'changed' WHERE id = 1")
        conn.execute("INSERT INTO customers (name) VALUES ('late')")
        conn.execute("DROP VIEW big_spenders")


@pytest.fixture
def source(client: TestClient, admin: Caller, sqlite_dir: Path) -> dict[str, Any]:
    path = sqlite_dir / f"shop-{secrets.token_hex(4)}.db"
    make_db(path)
    return register_source(
        client, admin, name=f"shop-{path.stem}", source_type="sqlite", database_name=str(path)
    )


def test_round_trip_to_every_target(
    client: TestClient, admin: Caller, worker: Worker, sqlite_dir: Path, source: dict[str, Any]
) -> None:
    ds_id, path = source["id"], Path(source["database_name"])
    original = sqlite_fingerprint(path)
    backup = backup_ok(client, admin, ds_id)
    assert backup["metadata"]["tables"] == 2
    mutate(path)
    assert sqlite_fingerprint(path) != original

    # Onto the original, after a safety backup of what is there now.
    done = restore_ok(client, admin, ds_id, backup["id"])
    assert done["target"] == "original" and done["verified"] is True
    assert done["verification"] == {"tables_checked": 2, "row_counts_match": True, "mismatches": []}
    assert sqlite_fingerprint(path) == original
    safety = get_backup(client, admin, ds_id, done["safety_backup_id"])
    assert safety["trigger"] == "pre_restore" and safety["status"] == "completed"

    # Into a new file inside the allowed directory.
    new_path = sqlite_dir / f"copy-{secrets.token_hex(3)}.db"
    done = restore_ok(
        client, admin, ds_id, backup["id"], {"target": "new", "target_database": str(new_path)}
    )
    assert done["target"] == "new" and done["safety_backup_id"] is None and done["verified"]
    assert sqlite_fingerprint(new_path) == original

    # Onto another registered SQLite source.
    other_path = sqlite_dir / f"other-{secrets.token_hex(3)}.db"
    sqlite3.connect(other_path).close()
    other = register_source(
        client,
        admin,
        name=f"other-{other_path.stem}",
        source_type="sqlite",
        database_name=str(other_path),
    )
    done = restore_ok(
        client,
        admin,
        ds_id,
        backup["id"],
        {"targetDataSourceId": other["id"], "verify": None, "clean": None},
    )
    assert done["target"] == "source" and done["target_data_source_id"] == other["id"]
    assert sqlite_fingerprint(other_path) == original
    # The restore is listed under both sources; the safety backup belongs to the target.
    for where in (ds_id, other["id"]):
        listed = client.get(f"{base(where)}/restores", headers=admin.headers).json()["data"]
        assert done["id"] in [r["id"] for r in listed["restores"]]
    assert get_backup(client, admin, other["id"], done["safety_backup_id"])["status"] == "completed"

    # A subset of tables.
    mutate(path)
    done = restore_ok(client, admin, ds_id, backup["id"], {"tables": ["orders"]})
    assert done["tables"] == ["orders"] and done["verification"]["tables_checked"] == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 200
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 4  # left alone

    verified = client.post(f"{base(ds_id)}/backups/{backup['id']}/verify", headers=admin.headers)
    assert verified.status_code == 202
    assert verified.json()["data"]["backup"]["status"] == "completed"
    after = wait_for(
        lambda: get_backup(client, admin, ds_id, backup["id"]),
        lambda b: b["verification_status"] != "unverified",
        what="verification",
    )
    assert after["verification_status"] == "verified" and after["verified_at"]
    assert after["status"] == "completed" and after["verification_error"] is None


def test_restore_targets_are_validated(
    client: TestClient,
    admin: Caller,
    worker: Worker,
    sqlite_dir: Path,
    source: dict[str, Any],
    pg_server: Any,
) -> None:
    ds_id = source["id"]
    backup = backup_ok(client, admin, ds_id)
    url = f"{base(ds_id)}/backups/{backup['id']}/restore"

    def post(body: dict[str, Any]) -> Any:
        return client.post(url, headers=admin.headers, json=body)

    outside = post({"target": "new", "target_database": "/etc/new.db"})
    assert outside.status_code == 422
    assert outside.json()["error"]["details"][0]["loc"] == ["body", "target_database"]
    exists = post({"target": "new", "target_database": source["database_name"]})
    assert exists.status_code == 409 and exists.json()["error"]["code"] == "target_exists"
    assert post({"target": "new"}).status_code == 422
    assert post({"target": "original", "target_database": "x.db"}).status_code == 422
    assert post({"target": "elsewhere"}).status_code == 422
    assert post({"tables": ["nope"]}).status_code == 422
    assert post({"clean": "yes"}).status_code == 422
    pg = register_source(
        client,
        admin,
        name=f"pg-{secrets.token_hex(3)}",
        source_type="postgresql",
        host=pg_server.host,
        port=pg_server.port,
        database_name="postgres",
        username="postgres",
    )
    engine = post({"target_data_source_id": pg["id"]})
    assert engine.status_code == 422 and "same engine" in engine.json()["error"]["message"]


@pytest.mark.skipif(shutil.which("age") is None, reason="the age CLI is not installed")
def test_artifact_is_encrypted_and_opens_only_with_the_key(
    client: TestClient, admin: Caller, worker: Worker, source: dict[str, Any], tmp_path: Path
) -> None:
    backup = backup_ok(client, admin, source["id"])
    stored = artifact_path(backup["location"]).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert MARKER.encode() not in stored and b"SQLite format 3" not in stored

    identity = export_identity(tmp_path)
    pipe = subprocess.run(
        f"age -d -i {identity} {artifact_path(backup['location'])} | zstd -dc",
        shell=True,
        capture_output=True,
        check=True,
    )
    assert pipe.stdout.startswith(b"SQLite format 3") and MARKER.encode() in pipe.stdout
    assert len(pipe.stdout) == backup["original_size_bytes"]

    stranger = tmp_path / "stranger.txt"
    subprocess.run(["age-keygen", "-o", str(stranger)], capture_output=True, check=True)
    wrong = subprocess.run(
        ["age", "-d", "-i", str(stranger), str(artifact_path(backup["location"]))],
        capture_output=True,
    )
    assert wrong.returncode != 0 and not wrong.stdout


def test_damaged_artifact_fails_restore_and_verify_and_leaves_the_target(
    client: TestClient, admin: Caller, worker: Worker, source: dict[str, Any]
) -> None:
    ds_id, path = source["id"], Path(source["database_name"])
    backup = backup_ok(client, admin, ds_id)
    mutate(path)
    before = sqlite_fingerprint(path)
    artifact = artifact_path(backup["location"])
    raw = bytearray(artifact.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    artifact.write_bytes(bytes(raw))

    restore = start_restore(client, admin, ds_id, backup["id"])
    failed = wait_restore(client, admin, ds_id, restore["id"])
    assert failed["status"] == "failed"
    assert "checksum mismatch" in failed["error_message"]
    assert "the target was not touched" in failed["error_message"]
    assert sqlite_fingerprint(path) == before

    # The restore already marked the backup as failing verification; verify says so again.
    marked = get_backup(client, admin, ds_id, backup["id"])
    assert marked["verification_status"] == "failed"
    client.post(f"{base(ds_id)}/backups/{backup['id']}/verify", headers=admin.headers)
    after = wait_for(
        lambda: get_backup(client, admin, ds_id, backup["id"]),
        lambda b: b["verified_at"] != marked["verified_at"],
        what="verification",
    )
    assert after["status"] == "completed" and after["verification_status"] == "failed"
    assert "checksum mismatch" in after["verification_error"]

    notes = client.get(
        f"/api/notifications?data_source_id={ds_id}&category=backup", headers=admin.headers
    ).json()["notifications"]
    assert any(
        n["title"].startswith(f"Restore of '{source['name']}' failed: checksum mismatch")
        for n in notes
    )
