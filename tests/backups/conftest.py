"""Fixtures of the backup tests: a real huey consumer in this process, which a test can pause.

Module-scoped and drained before it stops: a consumer left running would take the jobs other
test modules queue and want to run (or inspect) themselves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from backup_support import Worker


@pytest.fixture(scope="module")
def worker(client: Any) -> Iterator[Worker]:
    running = Worker()
    try:
        yield running
    finally:
        running.drain()
        running.stop()
