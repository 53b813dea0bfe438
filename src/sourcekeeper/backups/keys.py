"""The age X25519 keys backups are encrypted to (API.md §1, BACKUP_RECIPIENTS).

Two modes:
- the operator configures `SOURCEKEEPER_BACKUP_RECIPIENTS` (age public keys): the service can write
  backups but cannot read them unless `SOURCEKEEPER_BACKUP_IDENTITY_FILE` names the matching
  identity file, which restore and verify then need;
- otherwise the service generates one identity on first start and keeps its secret half in
  `backup_keys`, encrypted with the master key.

Every stored identity stays usable for decryption, so backups written before a second identity
appeared (two processes starting at once) remain readable. With no recipient at all, nothing is
written: the service fails closed rather than store a backup in clear.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from pyrage import x25519
from sqlalchemy import select
from sqlalchemy.orm import Session

from sourcekeeper.backups.models import BackupKey
from sourcekeeper.core.config import get_settings
from sourcekeeper.core.crypto import decrypt_secret, encrypt_secret
from sourcekeeper.core.errors import Unavailable
from sourcekeeper.core.logging import register_secret

log = structlog.get_logger("sourcekeeper.backups.keys")

ENCRYPTION = "age-x25519"
_CONTEXT = "backup_key"


class KeyUnavailable(Unavailable):
    """No usable key: backups are refused (fail closed), restores cannot decrypt."""


def _parse_recipient(text: str) -> x25519.Recipient:
    try:
        return x25519.Recipient.from_str(text.strip())
    except Exception as exc:  # pyrage raises its own RecipientError; the message is enough
        raise KeyUnavailable(
            f"SOURCEKEEPER_BACKUP_RECIPIENTS holds an invalid age X25519 public key ({text[:12]}…)"
        ) from exc


def configured_recipients() -> list[str]:
    """Recipients from the settings, validated; empty when the service keeps its own key."""
    return [str(_parse_recipient(r)) for r in get_settings().backup_recipients]


def ensure_identity(db: Session) -> str | None:
    """Create the service's identity on first start unless the operator supplies recipients;
    return the public key backups are written to."""
    configured = configured_recipients()
    if configured:
        return configured[0]
    existing = _stored(db)
    if existing:
        return existing[0].recipient
    identity = x25519.Identity.generate()
    secret = str(identity)
    register_secret(secret)
    recipient = str(identity.to_public())
    db.add(
        BackupKey(recipient=recipient, identity_encrypted=encrypt_secret(secret, context=_CONTEXT))
    )
    db.flush()
    log.info("backup_identity_created", recipient=recipient)
    return recipient


def _stored(db: Session) -> list[BackupKey]:
    return list(db.scalars(select(BackupKey).order_by(BackupKey.id)))


def recipients(db: Session) -> list[str]:
    """The public keys a new backup is encrypted to; KeyUnavailable when there is none."""
    configured = configured_recipients()
    if configured:
        return configured
    stored = _stored(db)
    if not stored:
        raise KeyUnavailable(
            "No backup encryption key is configured or stored, so no backup is written "
            "(backups are never stored unencrypted): restart the service to generate one, or set "
            "SOURCEKEEPER_BACKUP_RECIPIENTS"
        )
    # The oldest key is the current one: every process agrees on it even after a start-up race.
    return [stored[0].recipient]


def _read_identity_file(path: Path) -> list[x25519.Identity]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyUnavailable(
            f"cannot read SOURCEKEEPER_BACKUP_IDENTITY_FILE {str(path)!r}: {exc.strerror or exc}"
        ) from exc
    found: list[x25519.Identity] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        register_secret(line)
        try:
            found.append(x25519.Identity.from_str(line))
        except Exception as exc:  # never echo the line: it is a secret key
            raise KeyUnavailable(
                f"SOURCEKEEPER_BACKUP_IDENTITY_FILE {str(path)!r} holds a line that is not an "
                "age X25519 identity (AGE-SECRET-KEY-1…)"
            ) from exc
    return found


def identities(db: Session) -> list[x25519.Identity]:
    """Every identity that may open a backup: the operator's file, then the stored ones."""
    settings = get_settings()
    found: list[x25519.Identity] = []
    if settings.backup_identity_file is not None:
        found += _read_identity_file(settings.backup_identity_file)
    for row in _stored(db):
        secret = decrypt_secret(row.identity_encrypted, context=_CONTEXT)
        register_secret(secret)
        found.append(x25519.Identity.from_str(secret))
    if not found:
        if settings.backup_recipients:
            raise KeyUnavailable(
                "Backups are encrypted to SOURCEKEEPER_BACKUP_RECIPIENTS, whose private keys this "
                "service does not hold: set SOURCEKEEPER_BACKUP_IDENTITY_FILE to the age identity "
                "file to restore or verify"
            )
        raise KeyUnavailable("No backup identity is stored, so no backup can be decrypted")
    return found


def missing_identity_hint() -> str:
    """Why an artifact may not decrypt: written to operator recipients whose key we lack."""
    settings = get_settings()
    if settings.backup_recipients and settings.backup_identity_file is None:
        return (
            "; backups are encrypted to SOURCEKEEPER_BACKUP_RECIPIENTS: set "
            "SOURCEKEEPER_BACKUP_IDENTITY_FILE to the matching age identity file"
        )
    return ""


def export_identities(db: Session) -> str:
    """The stored identities as an age identity file, for restoring with the `age` CLI alone."""
    lines = ["# sourcekeeper backup identities: keep this file secret (age -d -i <file>)"]
    for row in _stored(db):
        secret = decrypt_secret(row.identity_encrypted, context=_CONTEXT)
        register_secret(secret)
        lines += [f"# public key: {row.recipient}", secret]
    return "\n".join(lines) + "\n"
