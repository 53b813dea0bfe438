"""The object-store contract every backend honours, plus the parts they share.

Artifacts are written through `open_writer`, a streaming writer that makes an object visible only
once it is complete: a backup that fails or is cancelled half-way never leaves a partial object that
a "completed" row could point at. Everything else (`put`, key checks) is built on top of it here so
backends only implement the storage-specific primitives.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

# put() copies in 1 MiB reads: large enough to be fast, small enough to keep memory flat.
COPY_CHUNK_SIZE = 1024 * 1024
TEMP_DIR = ".tmp"  # reserved top-level segment: in-flight local writes live there


class Readable(Protocol):
    """What `put` needs from a source: files, pipes, BytesIO and zstd/age readers all fit."""

    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative key; raise ValueError otherwise.

    Keys map to file paths in the local backend, so anything that could escape the root or alias
    another key (absolute paths, `..`, `.`, empty segments, backslashes) is refused everywhere, and
    both backends accept exactly the same keys.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("storage key must be a non-empty string")
    _check_segments(key, allow_trailing_slash=False)
    return key


def validate_prefix(prefix: str) -> str:
    """Return `prefix` if it is "" or a key-like prefix (a trailing "/" is allowed)."""
    if prefix:
        _check_segments(prefix, allow_trailing_slash=True)
    return prefix


def _check_segments(value: str, *, allow_trailing_slash: bool) -> None:
    if value.startswith("/"):
        raise ValueError(f"storage key must be relative: {value!r}")
    if "\\" in value or "\x00" in value:
        raise ValueError(f"storage key contains a forbidden character: {value!r}")
    segments = value.split("/")
    if allow_trailing_slash and len(segments) > 1 and segments[-1] == "":
        segments = segments[:-1]
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"storage key has an empty, '.' or '..' segment: {value!r}")
    if segments[0] == TEMP_DIR:
        raise ValueError(f"storage keys may not start with the reserved {TEMP_DIR!r}: {value!r}")


class ObjectWriter(io.BufferedIOBase, BinaryIO):
    """A write-only stream that becomes an object only if its `open_writer` block exits cleanly.

    `close()` only stops further writes: stream wrappers (zstandard's `stream_writer`, for one)
    close their sink when they finish, and that must not publish or lose the object. Publishing
    is the context manager's job; `abort()` discards everything at once (used on cancel).
    It is a `BinaryIO` (as typeshed's BytesIO is) so it can be passed to any `out: BinaryIO`.
    """

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.bytes_written = 0
        self._finished = False  # committed or discarded: nothing more may happen
        self._committed = False

    @property
    def aborted(self) -> bool:
        return self._finished and not self._committed

    @property
    def name(self) -> str:
        return self.key

    @property
    def mode(self) -> str:
        return "wb"

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError(f"write to a closed storage writer for {self.key!r}")
        view = memoryview(data).cast("B")
        if view.nbytes:
            self._write(view)
            self.bytes_written += view.nbytes
        return view.nbytes

    def abort(self) -> None:
        """Discard everything written so far; the key is left as it was before the writer opened."""
        if not self._finished:
            self._finished = True
            self.close()
            self._discard()

    def _finish(self) -> None:
        """Publish the object (called by `ObjectStore.open_writer` on a clean exit)."""
        if self._finished:
            return
        self._finished = True
        self.close()
        try:
            self._commit()
        except BaseException:
            self._discard()
            raise
        self._committed = True

    @abstractmethod
    def _write(self, data: memoryview) -> None:
        """Store `data` (never empty); may buffer."""

    @abstractmethod
    def _commit(self) -> None:
        """Make the written bytes visible under the key, atomically."""

    @abstractmethod
    def _discard(self) -> None:
        """Remove every trace of the write (temp file, multipart upload). Must not raise."""


class ObjectStore(ABC):
    """Where artifacts live. Keys are relative, '/'-separated, and validated by `validate_key`."""

    @contextmanager
    def open_writer(self, key: str) -> Iterator[ObjectWriter]:
        """Yield a writer; the object appears under `key` only if the block exits without error."""
        writer = self._new_writer(validate_key(key))
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer._finish()

    def put(self, key: str, stream: Readable) -> StoredObject:
        """Copy `stream` to `key` in bounded chunks; on any error nothing is stored."""
        with self.open_writer(key) as writer:
            while chunk := stream.read(COPY_CHUNK_SIZE):
                writer.write(chunk)
        return StoredObject(key=key, size=writer.bytes_written)

    @abstractmethod
    def _new_writer(self, key: str) -> ObjectWriter:
        """Start a write to an already validated key."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Return a streaming reader for `key`; raise NotFound if it does not exist."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete `key`; return whether it existed (deleting a missing key is not an error)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Return whether a complete object is stored under `key`."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[StoredObject]:
        """Return the complete objects whose key starts with `prefix` (a string match), sorted."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Return the size in bytes of `key`; raise NotFound if it does not exist."""

    @abstractmethod
    def check(self) -> None:
        """Raise Unavailable with a clear, credential-free message if the store cannot be used."""

    @abstractmethod
    def describe(self) -> str:
        """Return the store's location without credentials, e.g. `file:///srv/a` or `s3://b/p`."""

    def discard_partial(self, key: str) -> int:
        """Remove what an interrupted write to `key` left behind (a process killed mid-write
        cannot abort its own writer); return how many leftovers went. Never touches a complete
        object. Only call it when no write to `key` can still be running."""
        validate_key(key)
        return 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
