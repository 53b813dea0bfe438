"""What a delivery channel gets and returns: plain data, no session or ORM row, so each channel
can be tested alone and a slow one never holds a database transaction."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Message:
    """One notification as a channel renders it."""

    notification_id: int
    title: str
    message: str
    type: str
    priority: str
    category: str
    source: str
    created_at: str  # ISO 8601 UTC with Z
    recipient: str  # username
    data_source_id: int | None = None
    data_source_name: str | None = None
    action_url: str | None = None  # absolute (public_url + path)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: str | None = None


@dataclass(frozen=True)
class SendResult:
    """Outcome of one attempt. `retryable` is False when trying again cannot help (a 404 hook,
    a malformed address), so the job stops instead of hammering a dead endpoint."""

    ok: bool
    error: str | None = None
    retryable: bool = True

    @classmethod
    def sent(cls) -> SendResult:
        return cls(ok=True)


class Channel(Protocol):
    name: str

    def send(self, message: Message, target: str) -> SendResult:
        """Deliver `message` to `target` (an address or URL) once; never raises."""
        ...


def subject_line(message: Message) -> str:
    """A title that says how urgent it is before anyone opens it."""
    urgent = f"[{message.priority.upper()}] " if message.priority in ("high", "critical") else ""
    return f"{urgent}{message.title}"


def details_lines(message: Message) -> list[str]:
    lines = []
    if message.data_source_name:
        lines.append(f"Data source: {message.data_source_name}")
    lines.append(
        f"Priority: {message.priority} · Category: {message.category} · Type: {message.type}"
    )
    lines.append(f"When: {message.created_at.replace('T', ' ').replace('Z', ' UTC')}")
    return lines


def public_target(url: str) -> str:
    """A webhook URL safe to log and show: scheme and host, then a fingerprint instead of the path
    and query, which often carry the secret (Slack's /services/T…/B…/<token>)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    fingerprint = hashlib.sha256(url.encode()).hexdigest()[:8]
    return f"{parts.scheme}://{host}/… #{fingerprint}"
