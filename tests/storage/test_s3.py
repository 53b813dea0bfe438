"""S3-only behaviour: real multipart uploads; failures name the endpoint but never secrets."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest
from pydantic import SecretStr

from sourcekeeper.core.config import Settings
from sourcekeeper.core.errors import Unavailable
from sourcekeeper.storage.backends.s3 import MAX_PARTS, PART_SIZE, S3ObjectStore, part_size
from sourcekeeper.storage.service import store_from_url

SECRET = "s3cr3t-value-that-must-not-leak"


def settings_for(endpoint: str) -> Settings:
    return Settings(
        s3_endpoint_url=endpoint,
        s3_access_key_id="AKIDEXAMPLE",
        s3_secret_access_key=SecretStr(SECRET),
        connect_timeout_seconds=1.0,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_uploads(store: S3ObjectStore) -> list[Any]:
    answer = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix + "/")
    return list(answer.get("Uploads", []))


def test_large_objects_go_up_in_parts(s3_store: S3ObjectStore) -> None:
    s3_store.put("big", io.BytesIO(b"\1" * (2 * PART_SIZE + 1)))
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=f"{s3_store.prefix}/big")
    assert head["ETag"].strip('"').endswith("-3")  # multipart ETags end in -<number of parts>


def test_small_objects_use_one_request(s3_store: S3ObjectStore) -> None:
    s3_store.put("small", io.BytesIO(b"abc"))
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=f"{s3_store.prefix}/small")
    assert "-" not in head["ETag"]


def test_an_unfinished_upload_is_invisible_then_aborted(s3_store: S3ObjectStore) -> None:
    with s3_store.open_writer("backups/1/1.dump") as writer:
        writer.write(b"\0" * (PART_SIZE + 1))
        assert len(open_uploads(s3_store)) == 1  # the part is already uploaded...
        assert s3_store.list() == []  # ...but nothing is visible yet
        writer.abort()
    assert open_uploads(s3_store) == []


def test_keys_live_under_the_url_prefix(s3_store: S3ObjectStore) -> None:
    s3_store.put("a/b", io.BytesIO(b"x"))
    listed = s3_store.client.list_objects_v2(Bucket=s3_store.bucket, Prefix=s3_store.prefix)
    assert [item["Key"] for item in listed["Contents"]] == [f"{s3_store.prefix}/a/b"]
    assert s3_store.describe() == f"s3://{s3_store.bucket}/{s3_store.prefix}"


def test_from_url_talks_to_the_configured_endpoint(
    moto_endpoint: str, s3_store: S3ObjectStore
) -> None:
    store = store_from_url(
        f"s3://{s3_store.bucket}/{s3_store.prefix}/", settings_for(moto_endpoint)
    )
    assert isinstance(store, S3ObjectStore)
    store.check()
    store.put("via-url", io.BytesIO(b"ok"))
    assert s3_store.exists("via-url")
    assert SECRET not in repr(store)
    assert SECRET not in store.describe()


def test_missing_bucket_is_unavailable(moto_endpoint: str) -> None:
    store = store_from_url("s3://no-such-bucket/p", settings_for(moto_endpoint))
    with pytest.raises(Unavailable, match="no-such-bucket.*does not exist"):
        store.check()


def test_unreachable_endpoint_is_unavailable_without_secrets() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = store_from_url("s3://bucket/p", settings_for(endpoint.replace("//", "//user:pw@")))
    for call in (store.check, lambda: store.put("k", io.BytesIO(b"x")), lambda: store.open("k")):
        with pytest.raises(Unavailable) as caught:
            call()
        message = caught.value.message
        assert endpoint in message
        for secret in (SECRET, "AKIDEXAMPLE", "pw@"):
            assert secret not in message


def test_part_size_grows_so_huge_artifacts_fit_in_10000_parts() -> None:
    assert part_size(0) == part_size(999) == PART_SIZE
    assert part_size(1000) == 2 * PART_SIZE
    assert sum(part_size(n) for n in range(MAX_PARTS)) > 400 * 1024**3
    assert max(part_size(n) for n in range(MAX_PARTS)) <= 80 * 1024**2
