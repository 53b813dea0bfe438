"""S3 for the storage tests: one moto server on a free loopback port for the whole session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from sourcekeeper.storage.backends.s3 import S3ObjectStore

BUCKET = "sourcekeeper-test"
DUMMY_KEY_ID = "AKIDSTORAGETEST"
DUMMY_SECRET = "storage-test-secret-do-not-log"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str) -> Any:
    """A client with dummy credentials; the env only keeps a developer's AWS profile out of it."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=moto_endpoint,
            region_name="us-east-1",
            aws_access_key_id=DUMMY_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET,
        )
        client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def s3_store(s3_client: Any, moto_endpoint: str) -> S3ObjectStore:
    """A store under a fresh prefix, so tests share the bucket without seeing each other."""
    return S3ObjectStore(
        BUCKET, f"t-{uuid.uuid4().hex[:12]}", client=s3_client, endpoint_url=moto_endpoint
    )
