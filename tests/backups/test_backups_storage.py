"""`discard_partial`, added to the object stores for the reaper: what a writer killed mid-write
left behind goes, complete objects stay. Local directory and S3 (moto's server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from sourcekeeper.storage.backends.local import LocalObjectStore
from sourcekeeper.storage.backends.s3 import S3ObjectStore

KEY = "backups/3/17.dump.zst.age"


def test_local_store_removes_only_the_keys_own_temp_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("backups/3/other.dump.zst.age", _Bytes(b"complete"))
    writers = []
    for key in (KEY, KEY, "backups/4/17.dump.zst.age"):  # the last: same name, other key
        context = store.open_writer(key)
        writer = context.__enter__()
        writer.write(b"partial")
        writers.append((context, writer))
    assert len(os.listdir(store.temp_dir)) == 3
    assert store.discard_partial(KEY) == 2
    assert len(os.listdir(store.temp_dir)) == 1
    assert [o.key for o in store.list("backups/")] == ["backups/3/other.dump.zst.age"]
    for _, writer in writers:
        writer.abort()


@pytest.fixture(scope="module")
def s3_store() -> Iterator[S3ObjectStore]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_CONFIG_FILE", "/nonexistent")
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="AKIDBACKUPTEST",
                aws_secret_access_key="backup-test-secret",
            )
            client.create_bucket(Bucket="backups-test")
        yield S3ObjectStore("backups-test", "p", client=client, endpoint_url=endpoint)
    finally:
        server.stop()


def test_s3_store_aborts_the_keys_unfinished_uploads(s3_store: S3ObjectStore) -> None:
    client: Any = s3_store.client
    for key in (KEY, "backups/3/17.dump.zst.age.other"):
        client.create_multipart_upload(Bucket="backups-test", Key=f"p/{key}")
    s3_store.put("backups/3/done.dump.zst.age", _Bytes(b"complete"))
    assert s3_store.discard_partial(KEY) == 1
    left = client.list_multipart_uploads(Bucket="backups-test").get("Uploads", [])
    assert [u["Key"] for u in left] == ["p/backups/3/17.dump.zst.age.other"]
    assert s3_store.exists("backups/3/done.dump.zst.age")


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int, /) -> bytes:
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk
