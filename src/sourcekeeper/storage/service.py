"""The one entry point to artifact storage: other domains call `get_store()` and nothing else here.

The store is chosen by `SOURCEKEEPER_STORAGE_URL` (default: a local directory under the data dir),
so the same code writes to disk in the embedded mode and to S3 when scaled out.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from sourcekeeper.core.config import Settings, get_settings
from sourcekeeper.storage.backends.base import ObjectStore, StoredObject, validate_key
from sourcekeeper.storage.backends.local import LocalObjectStore

__all__ = [
    "ObjectStore",
    "StoredObject",
    "get_store",
    "reset_store",
    "store_from_url",
    "validate_key",
]


def store_from_url(url: str, settings: Settings) -> ObjectStore:
    """Build the backend a storage URL names (`file:///dir` or `s3://bucket/prefix`)."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        return LocalObjectStore.from_url(url)
    if scheme == "s3":
        # Imported here: boto3 costs ~9 MB and start-up time in every process that never uses S3.
        from sourcekeeper.storage.backends.s3 import S3ObjectStore

        return S3ObjectStore.from_url(url, settings)
    raise ValueError(
        f"unsupported storage URL scheme {scheme!r}: use file:///path or s3://bucket/prefix"
    )


@lru_cache(maxsize=1)
def get_store() -> ObjectStore:
    """Return the process-wide store (one boto3 client is shared; it is thread-safe)."""
    settings = get_settings()
    return store_from_url(settings.resolved_storage_url, settings)


def reset_store() -> None:
    """Forget the cached store, so the next `get_store()` reads the settings again (tests)."""
    get_store.cache_clear()
