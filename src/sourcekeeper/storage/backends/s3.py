"""Artifacts in an S3-compatible bucket (the scaled-out mode), via boto3.

Writes are multipart uploads fed part by part, so memory stays at about one part whatever the
artifact size, and the object appears only when the upload is completed. A failed write aborts the
upload, which leaves nothing behind. A bucket lifecycle rule "AbortIncompleteMultipartUpload" is
still worth setting: it catches uploads orphaned by a worker killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from sourcekeeper.core.errors import NotFound, TooLarge, Unavailable
from sourcekeeper.storage.backends.base import (
    ObjectStore,
    ObjectWriter,
    StoredObject,
    validate_key,
    validate_prefix,
)

if TYPE_CHECKING:
    from sourcekeeper.core.config import Settings

log = logging.getLogger(__name__)

# S3 refuses parts under 5 MiB (except the last) and more than 10,000 parts per upload. Fixed
# 8 MiB parts would cap an artifact at ~78 GiB, so every 1,000 parts the size grows by 8 MiB:
# memory stays at 8 MiB for anything under ~7.8 GiB and the cap becomes ~430 GiB (80 MiB parts).
PART_SIZE = 8 * 1024 * 1024
PARTS_PER_STEP = 1000
MAX_PARTS = 10_000


def part_size(parts_done: int) -> int:
    """Size of the next part after `parts_done` full parts."""
    return PART_SIZE * (1 + parts_done // PARTS_PER_STEP)


READ_BUFFER_SIZE = 256 * 1024
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_UNREACHABLE = (BotoConnectionError, HTTPClientError, IncompleteReadError)
_NO_CREDENTIALS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


def _public_endpoint(endpoint_url: str | None) -> str:
    """The endpoint without any user:password@ part, safe to put in an error message."""
    if not endpoint_url:
        return "AWS S3"
    parts = urlsplit(endpoint_url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _BodyReader(io.RawIOBase):
    """Adapts botocore's StreamingBody (no readinto) so it can sit under a BufferedReader."""

    def __init__(self, body: Any, store: S3ObjectStore, key: str) -> None:
        self._body = body
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._store._translate(f"read {self._key!r}"):
            data = self._body.read(view.nbytes)
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class _S3Writer(ObjectWriter):
    def __init__(self, key: str, store: S3ObjectStore) -> None:
        super().__init__(key)
        self._store = store
        self._s3_key = store._s3_key(key)
        self._buffer = bytearray()
        self._upload_id: str | None = None  # started lazily: small objects need only one put_object
        self._parts: list[dict[str, Any]] = []

    def _write(self, data: memoryview) -> None:
        self._buffer += data
        while len(self._buffer) >= (size := part_size(len(self._parts))):
            self._upload_part(bytes(self._buffer[:size]))
            del self._buffer[:size]

    def _upload_part(self, body: bytes) -> None:
        client, bucket = self._store.client, self._store.bucket
        with self._store._translate(f"upload {self.key!r}"):
            if self._upload_id is None:
                created = client.create_multipart_upload(Bucket=bucket, Key=self._s3_key)
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            if number > MAX_PARTS:
                raise TooLarge(f"{self.key!r} is too large for one S3 multipart upload")
            answer = client.upload_part(
                Bucket=bucket,
                Key=self._s3_key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def _commit(self) -> None:
        client, bucket = self._store.client, self._store.bucket
        if self._upload_id is None:
            with self._store._translate(f"upload {self.key!r}"):
                client.put_object(Bucket=bucket, Key=self._s3_key, Body=bytes(self._buffer))
            self._buffer.clear()
            return
        if self._buffer:
            self._upload_part(bytes(self._buffer))  # the last part may be smaller than 5 MiB
            self._buffer.clear()
        with self._store._translate(f"complete upload of {self.key!r}"):
            client.complete_multipart_upload(
                Bucket=bucket,
                Key=self._s3_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )

    def _discard(self) -> None:
        self._buffer.clear()
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        try:
            self._store.client.abort_multipart_upload(
                Bucket=self._store.bucket, Key=self._s3_key, UploadId=upload_id
            )
        except (
            Exception
        ) as exc:  # the original error matters more; a lifecycle rule is the backstop
            log.warning("could not abort multipart upload of %s: %s", self.key, type(exc).__name__)


class S3ObjectStore(ObjectStore):
    """Objects live under `prefix/` in `bucket`; keys are the same relative keys as elsewhere."""

    def __init__(
        self, bucket: str, prefix: str = "", *, client: Any, endpoint_url: str | None = None
    ) -> None:
        if not bucket:
            raise ValueError("S3 storage needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self._endpoint = _public_endpoint(endpoint_url)

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> S3ObjectStore:
        """Build a store from `s3://bucket/optional/prefix` and the s3_* settings."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("S3 storage URL must look like s3://bucket/prefix")
        secret = settings.s3_secret_access_key
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(
                connect_timeout=settings.connect_timeout_seconds,
                read_timeout=60,
                retries={"mode": "standard", "max_attempts": 3},
                # S3-compatible servers (MinIO, moto, Ceph) on a custom endpoint expect path style.
                s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            ),
        )
        return cls(parts.netloc, parts.path, client=client, endpoint_url=settings.s3_endpoint_url)

    def _s3_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        """Turn botocore failures into Unavailable naming store and endpoint, never credentials."""
        try:
            yield
        except _UNREACHABLE as exc:
            self._unavailable(f"cannot reach the endpoint to {action} ({type(exc).__name__})", exc)
        except _NO_CREDENTIALS as exc:
            self._unavailable(f"has no usable credentials to {action}", exc)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                raise
            self._unavailable(f"refused to {action}: {_error_code(exc)}", exc)

    def _unavailable(self, what: str, exc: Exception) -> NoReturn:
        raise Unavailable(f"S3 storage {self.describe()} at {self._endpoint} {what}") from exc

    def _new_writer(self, key: str) -> ObjectWriter:
        return _S3Writer(key, self)

    def open(self, key: str) -> BinaryIO:
        s3_key = self._s3_key(key)
        try:
            with self._translate(f"read {key!r}"):
                body = self.client.get_object(Bucket=self.bucket, Key=s3_key)["Body"]
        except ClientError:
            raise NotFound(f"stored object {key!r} not found") from None
        return io.BufferedReader(_BodyReader(body, self, key), buffer_size=READ_BUFFER_SIZE)

    def _head(self, key: str) -> dict[str, Any] | None:
        s3_key = self._s3_key(key)
        try:
            with self._translate(f"look up {key!r}"):
                head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=s3_key)
                return head
        except ClientError:
            return None

    def delete(self, key: str) -> bool:
        # S3 deletes are silent about missing keys, so ask first to report whether it existed.
        existed = self._head(key) is not None
        if existed:
            with self._translate(f"delete {key!r}"):
                self.client.delete_object(Bucket=self.bucket, Key=self._s3_key(key))
        return existed

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise NotFound(f"stored object {key!r} not found")
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> list[StoredObject]:
        validate_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        found: list[StoredObject] = []
        with self._translate(f"list {prefix!r}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found.append(StoredObject(key=item["Key"][len(base) :], size=int(item["Size"])))
        return sorted(found, key=lambda obj: obj.key)

    def discard_partial(self, key: str) -> int:
        s3_key = self._s3_key(key)
        aborted = 0
        with self._translate(f"list unfinished uploads of {key!r}"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=s3_key
            )
            uploads = [u for page in pages for u in page.get("Uploads", []) if u["Key"] == s3_key]
        for upload in uploads:
            with self._translate(f"abort an unfinished upload of {key!r}"):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=s3_key, UploadId=upload["UploadId"]
                )
            aborted += 1
        return aborted

    def check(self) -> None:
        try:
            with self._translate("open the bucket"):
                self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:  # head_bucket answers a bare 404 when the bucket is missing
            self._unavailable("does not exist (bucket not found)", exc)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
