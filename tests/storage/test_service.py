"""The service picks the backend from settings and caches it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sourcekeeper.core.config import Settings
from sourcekeeper.storage import service
from sourcekeeper.storage.backends.local import LocalObjectStore
from sourcekeeper.storage.backends.s3 import S3ObjectStore


@pytest.fixture(autouse=True)
def _fresh_store() -> Iterator[None]:
    service.reset_store()
    yield
    service.reset_store()


def test_get_store_follows_settings_and_is_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path)
    monkeypatch.setattr(service, "get_settings", lambda: settings)

    store = service.get_store()
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path.resolve() / "artifacts"
    assert service.get_store() is store

    settings = Settings(data_dir=tmp_path, storage_url="s3://bucket/prefix")
    assert service.get_store() is store  # cached until reset
    service.reset_store()
    assert service.get_store().describe() == "s3://bucket/prefix"


def test_store_from_url_picks_the_backend(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert isinstance(service.store_from_url(tmp_path.as_uri(), settings), LocalObjectStore)
    assert isinstance(service.store_from_url("s3://b", settings), S3ObjectStore)
    with pytest.raises(ValueError, match="unsupported storage URL"):
        service.store_from_url("ftp://host/dir", settings)
