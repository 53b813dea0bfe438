"""The encryption keys: operator-supplied recipients (and the identity file restore then needs),
and failing closed when there is no key at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyrage
import pytest
from backup_support import (
    Worker,
    artifact_path,
    backup_ok,
    base,
    get_backup,
    restore_ok,
    wait_for,
)
from fastapi.testclient import TestClient
from pyrage import x25519
from support import Caller

from sourcekeeper.core.config import get_settings


def _verify(client: TestClient, admin: Caller, ds_id: int, backup_id: int) -> dict[str, Any]:
    before = get_backup(client, admin, ds_id, backup_id)["verified_at"]
    resp = client.post(f"{base(ds_id)}/backups/{backup_id}/verify", headers=admin.headers)
    assert resp.status_code == 202, resp.text
    return wait_for(
        lambda: get_backup(client, admin, ds_id, backup_id),
        lambda b: b["verified_at"] != before,
        what="verification",
    )


def test_operator_recipients_and_identity_file(
    client: TestClient,
    admin: Caller,
    worker: Worker,
    sqlite_source: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operator = x25519.Identity.generate()
    settings = get_settings()
    monkeypatch.setattr(settings, "backup_recipients", [str(operator.to_public())])
    monkeypatch.setattr(settings, "backup_identity_file", None)
    ds_id = sqlite_source["id"]
    backup = backup_ok(client, admin, ds_id)
    stored = artifact_path(backup["location"]).read_bytes()
    assert pyrage.decrypt(stored, [operator]).startswith(b"\x28\xb5\x2f\xfd")  # a zstd frame

    # The service holds no private key for these recipients: verify says what to configure.
    failed = _verify(client, admin, ds_id, backup["id"])
    assert failed["verification_status"] == "failed"
    assert "SOURCEKEEPER_BACKUP_IDENTITY_FILE" in failed["verification_error"]

    identity_file = tmp_path / "operator.key"
    identity_file.write_text(f"# operator key\n{operator}\n")
    identity_file.chmod(0o600)
    monkeypatch.setattr(settings, "backup_identity_file", identity_file)
    assert _verify(client, admin, ds_id, backup["id"])["verification_status"] == "verified"
    assert restore_ok(client, admin, ds_id, backup["id"])["verified"] is True


def test_invalid_recipient_refuses_to_back_up(
    client: TestClient,
    admin: Caller,
    sqlite_source: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(get_settings(), "backup_recipients", ["age1notakey"])
    resp = client.post(f"{base(sqlite_source['id'])}/backups", headers=admin.headers, json={})
    assert resp.status_code == 503
    assert "SOURCEKEEPER_BACKUP_RECIPIENTS" in resp.json()["error"]["message"]


def test_no_key_at_all_fails_closed(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    from sqlalchemy import delete, select

    from sourcekeeper.backups.models import Backup, BackupKey
    from sourcekeeper.core.db import session_scope

    with session_scope() as db:
        saved = [
            (k.id, k.recipient, k.identity_encrypted, k.created_at)
            for k in db.scalars(select(BackupKey))
        ]
        db.execute(delete(BackupKey))
    try:
        resp = client.post(f"{base(sqlite_source['id'])}/backups", headers=admin.headers, json={})
        assert resp.status_code == 503
        assert "never stored unencrypted" in resp.json()["error"]["message"]
        with session_scope() as db:
            assert (
                db.scalar(select(Backup.id).where(Backup.data_source_id == sqlite_source["id"]))
                is None
            )
    finally:
        with session_scope() as db:
            db.add_all(
                BackupKey(id=i, recipient=r, identity_encrypted=e, created_at=c)
                for i, r, e, c in saved
            )
