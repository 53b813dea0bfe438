"""Secrets at rest: AES-GCM with the master key (from config, else a 0600 key file in DATA_DIR)."""

from __future__ import annotations

import base64
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sourcekeeper.core.config import get_settings

_PREFIX = "v1:"


def _load_or_create_key_file(path: Path) -> bytes:
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = AESGCM.generate_key(bit_length=256)
    # O_EXCL: two processes starting together must not each write a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return base64.b64decode(path.read_text().strip())
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(key).decode())
    return key


@lru_cache
def master_key() -> bytes:
    settings = get_settings()
    if settings.master_key is not None:
        key = base64.b64decode(settings.master_key.get_secret_value())
    else:
        key = _load_or_create_key_file(settings.resolved_data_dir / "master.key")
    if len(key) != 32:
        raise ValueError("SOURCEKEEPER_MASTER_KEY must be 32 bytes, base64-encoded")
    return key


def encrypt_secret(plaintext: str, *, context: str = "") -> str:
    """Encrypt a short secret; `context` binds it to its row so ciphertexts can't be swapped."""
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(master_key()).encrypt(nonce, plaintext.encode(), context.encode())
    return _PREFIX + base64.b64encode(nonce + sealed).decode()


def decrypt_secret(token: str, *, context: str = "") -> str:
    raw = base64.b64decode(token.removeprefix(_PREFIX))
    return AESGCM(master_key()).decrypt(raw[:12], raw[12:], context.encode()).decode()


def hash_token(token: str) -> str:
    """Tokens are high-entropy, so a plain SHA-256 is the right lookup hash (no salt needed)."""
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"
