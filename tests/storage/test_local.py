"""Local-only behaviour: temp-then-rename visibility, file modes, temp cleanup."""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path

import pytest

from sourcekeeper.core.errors import Unavailable
from sourcekeeper.storage.backends.local import LocalObjectStore


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "artifacts")


def test_object_appears_only_when_the_write_completes(store: LocalObjectStore) -> None:
    final = store.root / "backups" / "7" / "42.dump"
    with store.open_writer("backups/7/42.dump") as writer:
        writer.write(b"partial")
        temps = list(store.temp_dir.iterdir())
        assert len(temps) == 1
        assert stat.S_IMODE(temps[0].stat().st_mode) == 0o600
        assert not final.exists()
        assert store.list() == []  # .tmp/ is never listed
    assert final.read_bytes() == b"partial"
    assert list(store.temp_dir.iterdir()) == []


def test_files_are_private(store: LocalObjectStore) -> None:
    old_umask = os.umask(0o022)
    try:
        store.put("backups/1/2.dump", io.BytesIO(b"secret"))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((store.root / "backups/1/2.dump").stat().st_mode) == 0o600
    for directory in (store.root, store.root / "backups", store.root / "backups/1"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_cleanup_temp_removes_only_stale_files(store: LocalObjectStore) -> None:
    store.check()  # creates .tmp/
    stale, fresh = store.temp_dir / "crashed.part", store.temp_dir / "running.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    assert store.cleanup_temp(older_than_seconds=600) == 1
    assert not stale.exists()
    assert fresh.exists()
    assert store.list() == []


def test_cleanup_temp_without_temp_dir(store: LocalObjectStore) -> None:
    assert store.cleanup_temp(older_than_seconds=0) == 0


def test_unusable_root_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    store = LocalObjectStore(blocker / "artifacts")
    with pytest.raises(Unavailable, match="not usable"):
        store.check()
    with pytest.raises(Unavailable, match="not writable"):
        store.put("k", io.BytesIO(b"x"))


def test_from_url(tmp_path: Path) -> None:
    root = tmp_path / "with space"
    store = LocalObjectStore.from_url(root.as_uri())
    assert store.root == root
    assert store.describe() == root.as_uri()
    for bad in ("file://relative/dir", "http://x/y", "file:"):
        with pytest.raises(ValueError, match="file:///absolute/path"):
            LocalObjectStore.from_url(bad)
