"""Helpers shared by the connector tests: unreachable endpoints and unique database names."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def unique() -> str:
    """A fresh identifier-safe suffix, so tests never collide on the session-wide servers."""
    return secrets.token_hex(4)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that completes the TCP handshake (kernel backlog) but never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@pytest.fixture
def black_hole_port() -> Iterator[int]:
    """A port whose accept queue is full: Linux then drops SYNs, like a firewalled host."""
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        filler.connect(server.getsockname())
        yield server.getsockname()[1]
