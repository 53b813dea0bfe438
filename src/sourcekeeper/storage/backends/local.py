"""Artifacts in a local directory (the embedded mode's default).

Writes go to a temp file under `<root>/.tmp/` and are renamed into place with `os.replace`, which
is atomic within one filesystem: readers see either no file or the complete one, and a crash leaves
only a temp file that `cleanup_temp` removes later. Files are 0600 and directories 0700 because
artifacts are backups of other people's databases.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from sourcekeeper.core.errors import NotFound, Unavailable
from sourcekeeper.storage.backends.base import (
    TEMP_DIR,
    ObjectStore,
    ObjectWriter,
    StoredObject,
    validate_key,
    validate_prefix,
)

DIR_MODE = 0o700


def _makedirs(path: Path) -> None:
    """Create `path` and missing parents as DIR_MODE (`mkdir(parents=True)` ignores the mode)."""
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)


def _fsync_dir(path: Path) -> None:
    """Persist a rename: without it a power cut can forget the new directory entry."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_prefix(key: str, final_path: Path) -> str:
    return f"{final_path.name[:64]}.{hashlib.sha256(key.encode()).hexdigest()[:16]}."


class _LocalWriter(ObjectWriter):
    def __init__(self, key: str, final_path: Path, temp_dir: Path) -> None:
        super().__init__(key)
        self._final_path = final_path
        _makedirs(temp_dir)
        # mkstemp creates the file 0600 whatever the umask; the key's basename helps when debugging,
        # the key's hash lets `discard_partial` find this write's leftovers after a crash.
        fd, name = tempfile.mkstemp(
            dir=temp_dir, prefix=_temp_prefix(key, final_path), suffix=".part"
        )
        self.temp_path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def _write(self, data: memoryview) -> None:
        self._file.write(data)

    def _commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        _makedirs(self._final_path.parent)
        os.replace(self.temp_path, self._final_path)
        _fsync_dir(self._final_path.parent)

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp_path.unlink()


class LocalObjectStore(ObjectStore):
    """Objects are files under `root`; the key is the relative path."""

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise ValueError(f"local storage root must be absolute: {root}")
        self.root = root
        self.temp_dir = root / TEMP_DIR

    @classmethod
    def from_url(cls, url: str) -> LocalObjectStore:
        """Build a store from `file:///absolute/path` (host empty or `localhost`)."""
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(f"local storage URL must look like file:///absolute/path, got {url!r}")
        return cls(Path(unquote(parts.path)))

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _new_writer(self, key: str) -> ObjectWriter:
        try:
            return _LocalWriter(key, self._path(key), self.temp_dir)
        except OSError as exc:
            raise Unavailable(
                f"local storage at {self.describe()} is not writable: {exc.strerror}"
            ) from exc

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"stored object {key!r} not found") from None

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        # Empty directories are left in place: pruning them races with a concurrent writer that has
        # just created the directory and is about to rename its file into it.
        return True

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            if path.is_file():
                return path.stat().st_size
        except OSError:
            pass
        raise NotFound(f"stored object {key!r} not found")

    def list(self, prefix: str = "") -> list[StoredObject]:
        validate_prefix(prefix)
        # Walk only the deepest directory the prefix names; the rest of the match is a string test.
        start = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        found: list[StoredObject] = []
        for dirpath, dirnames, filenames in os.walk(start):
            current = Path(dirpath)
            if current == self.root:
                dirnames[:] = [d for d in dirnames if d != TEMP_DIR]
            for name in filenames:
                path = current / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):  # deleted while we walked
                        found.append(StoredObject(key=key, size=path.stat().st_size))
        return sorted(found, key=lambda obj: obj.key)

    def check(self) -> None:
        try:
            _makedirs(self.temp_dir)
            with tempfile.TemporaryFile(dir=self.temp_dir) as probe:
                probe.write(b"ok")
        except OSError as exc:
            raise Unavailable(
                f"local storage at {self.describe()} is not usable: {exc.strerror or exc}"
            ) from exc

    def describe(self) -> str:
        return self.root.as_uri()

    def discard_partial(self, key: str) -> int:
        prefix = _temp_prefix(key, self._path(key))
        removed = 0
        try:
            entries = list(os.scandir(self.temp_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.name.startswith(prefix) and entry.name.endswith(".part"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def cleanup_temp(self, older_than_seconds: float) -> int:
        """Remove temp files left by writes that crashed; return how many were removed.

        Only files older than `older_than_seconds` go, so writes still in progress are safe as long
        as the threshold exceeds the longest pause between two writes of one artifact.
        """
        cutoff = time.time() - older_than_seconds
        removed = 0
        try:
            entries = list(os.scandir(self.temp_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed
