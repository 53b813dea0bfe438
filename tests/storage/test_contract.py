"""One contract, run against every backend: what the rest of the service may rely on."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from sourcekeeper.core.errors import NotFound
from sourcekeeper.storage.backends.base import ObjectStore, StoredObject
from sourcekeeper.storage.backends.local import LocalObjectStore
from sourcekeeper.storage.backends.s3 import PART_SIZE, S3ObjectStore

MiB = 1024 * 1024


@dataclass
class Backend:
    store: ObjectStore
    leftovers: Callable[[], list[str]]  # temp files / open multipart uploads a failed write left


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        local = LocalObjectStore(tmp_path / "artifacts")
        temp_dir = local.temp_dir
        return Backend(local, lambda: sorted(p.name for p in temp_dir.glob("*")))
    s3: S3ObjectStore = request.getfixturevalue("s3_store")

    def open_uploads() -> list[str]:
        answer = s3.client.list_multipart_uploads(Bucket=s3.bucket, Prefix=s3.prefix + "/")
        return [upload["Key"] for upload in answer.get("Uploads", [])]

    return Backend(s3, open_uploads)


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def read_all(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


class FailingStream(io.RawIOBase):
    """A source (think: a dump process) that dies after `fail_after` bytes."""

    def __init__(self, data: bytes, fail_after: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._pos >= self._fail_after:
            raise OSError("source died")
        end = min(self._fail_after, self._pos + (size if size >= 0 else len(self._data)))
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        return chunk


def test_round_trip_of_a_multipart_sized_stream(backend: Backend) -> None:
    data = payload(20 * MiB + 123)
    stored = backend.store.put("backups/7/42.dump.zst.age", io.BytesIO(data))

    assert stored == StoredObject("backups/7/42.dump.zst.age", len(data))
    digest = hashlib.sha256()
    with backend.store.open("backups/7/42.dump.zst.age") as stream:
        while chunk := stream.read(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert backend.leftovers() == []


def test_writer_accepts_uneven_chunks(backend: Backend) -> None:
    data = payload(PART_SIZE + 3 * MiB + 5, seed=3)
    cuts = [0, 1, 7, MiB, PART_SIZE + MiB, len(data)]  # tiny writes, then one larger than a part
    with backend.store.open_writer("reports/1.pdf") as writer:
        for start, end in zip(cuts, cuts[1:], strict=False):
            assert writer.write(data[start:end]) == end - start
        writer.write(b"")
    assert writer.bytes_written == len(data)
    assert read_all(backend.store, "reports/1.pdf") == data


def test_list_exists_size_and_delete(backend: Backend) -> None:
    store = backend.store
    for key, size in [
        ("backups/7/1", 3),
        ("backups/7/2", 5),
        ("backups/70/1", 1),
        ("reports/a", 2),
    ]:
        store.put(key, io.BytesIO(b"x" * size))

    assert store.list("backups/7/") == [
        StoredObject("backups/7/1", 3),
        StoredObject("backups/7/2", 5),
    ]
    # Prefixes are plain string prefixes, as in S3: "backups/7" also matches "backups/70/...".
    assert [o.key for o in store.list("backups/7")] == [
        "backups/7/1",
        "backups/7/2",
        "backups/70/1",
    ]
    assert [o.key for o in store.list()] == [
        "backups/7/1",
        "backups/7/2",
        "backups/70/1",
        "reports/a",
    ]
    assert store.list("nothing/") == []
    assert store.exists("backups/7/2")
    assert not store.exists("backups/7/3")
    assert not store.exists("backups/7")  # a "directory" is not an object
    assert store.size("backups/7/2") == 5

    assert store.delete("backups/7/2") is True
    assert store.delete("backups/7/2") is False
    assert not store.exists("backups/7/2")
    with pytest.raises(NotFound):
        store.size("backups/7/2")
    assert [o.key for o in store.list("backups/7/")] == ["backups/7/1"]


def test_put_replaces_an_existing_object(backend: Backend) -> None:
    backend.store.put("k/v", io.BytesIO(b"old"))
    backend.store.put("k/v", io.BytesIO(b"newer"))
    assert read_all(backend.store, "k/v") == b"newer"
    assert backend.store.size("k/v") == 5


def test_missing_key_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.store.open("backups/1/missing")
    with pytest.raises(NotFound):
        backend.store.size("backups/1/missing")
    assert backend.store.delete("backups/1/missing") is False


BAD_KEYS = [
    "",
    "/etc/passwd",
    "a//b",
    "a/../b",
    "..",
    "../x",
    "a/./b",
    "a/",
    ".tmp/x",
    "a\\b",
    "a\0b",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(backend: Backend, key: str) -> None:
    store = backend.store
    calls: list[Callable[[], Any]] = [
        lambda: store.put(key, io.BytesIO(b"x")),
        lambda: store.open_writer(key).__enter__(),
        lambda: store.open(key),
        lambda: store.delete(key),
        lambda: store.exists(key),
        lambda: store.size(key),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="storage key"):
            call()
    assert store.list() == []


@pytest.mark.parametrize("prefix", ["/abs", "../", "a//", ".tmp/"])
def test_bad_list_prefixes_are_refused(backend: Backend, prefix: str) -> None:
    with pytest.raises(ValueError, match="storage key"):
        backend.store.list(prefix)


@pytest.mark.parametrize(
    "fail_after", [0, 100_000, PART_SIZE + 2 * MiB], ids=["at-once", "small", "multipart"]
)
def test_interrupted_put_leaves_nothing(backend: Backend, fail_after: int) -> None:
    store = backend.store
    with pytest.raises(OSError, match="source died"):
        store.put("backups/3/9.dump", FailingStream(payload(fail_after + MiB), fail_after))

    assert not store.exists("backups/3/9.dump")
    assert store.list() == []
    assert backend.leftovers() == []


def test_interrupted_put_keeps_the_previous_version(backend: Backend) -> None:
    backend.store.put("reports/5.csv", io.BytesIO(b"complete"))
    with pytest.raises(OSError, match="source died"):
        backend.store.put("reports/5.csv", FailingStream(payload(2 * MiB), MiB))
    assert read_all(backend.store, "reports/5.csv") == b"complete"
    assert backend.leftovers() == []


def test_abort_leaves_nothing(backend: Backend) -> None:
    with backend.store.open_writer("backups/8/1.dump") as writer:
        writer.write(payload(PART_SIZE + MiB))
        writer.abort()
        assert writer.aborted
        with pytest.raises(ValueError, match="closed"):
            writer.write(b"more")

    assert not backend.store.exists("backups/8/1.dump")
    assert backend.store.list() == []
    assert backend.leftovers() == []


def test_closing_the_writer_early_still_commits_on_exit(backend: Backend) -> None:
    # Stream wrappers such as zstandard's stream_writer close their sink when they finish.
    def render(out: BinaryIO) -> None:  # a renderer's signature: the writer is a BinaryIO
        out.write(b"compressed bytes")
        out.close()

    with backend.store.open_writer("backups/9/1.dump") as writer:
        render(writer)
        assert not backend.store.exists("backups/9/1.dump")
    assert read_all(backend.store, "backups/9/1.dump") == b"compressed bytes"


def test_put_of_an_empty_stream(backend: Backend) -> None:
    assert backend.store.put("empty/0", io.BytesIO(b"")) == StoredObject("empty/0", 0)
    assert backend.store.exists("empty/0")
    assert backend.store.size("empty/0") == 0
    assert read_all(backend.store, "empty/0") == b""
    assert backend.store.list("empty/") == [StoredObject("empty/0", 0)]


def test_open_streams_in_pieces(backend: Backend) -> None:
    data = payload(3 * MiB, seed=11)
    backend.store.put("a/b", io.BytesIO(data))
    with backend.store.open("a/b") as stream:
        assert isinstance(stream, io.BufferedIOBase)  # full file API: read, readinto, read1
        first = stream.read(1000)
        buffer = bytearray(4096)
        count = stream.readinto(buffer)
        rest = stream.read()
    assert first + bytes(buffer[:count]) + rest == data


def test_check_passes_and_describe_has_a_location(backend: Backend) -> None:
    backend.store.check()
    location = backend.store.describe()
    assert location.startswith(("file:///", "s3://"))
    assert location in repr(backend.store)
