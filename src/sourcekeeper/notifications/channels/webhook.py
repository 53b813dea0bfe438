"""Webhooks: a Slack-compatible `{"text": ...}` or a generic JSON document of the notification.

Plain httpx rather than Apprise here, for three reasons checked against Apprise 2.3: its Slack
plugin only posts to hooks.slack.com (not to Mattermost, Rocket.Chat or a self-hosted receiver that
speak the same payload); its `json://` plugin sends its own fixed document (version/title/message/
type, extras only as string constants), so it cannot carry the notification's fields; and it
reports a bare failure, while the delivery log needs the HTTP status to tell a dead hook (4xx, stop)
from a struggling one (5xx, retry).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Literal

import httpx

from sourcekeeper.core.logging import redact_text
from sourcekeeper.notifications.channels.base import (
    Message,
    SendResult,
    details_lines,
    subject_line,
)

WebhookFormat = Literal["slack", "generic"]
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
USER_AGENT = "sourcekeeper-notifications/1.0"
# 408 and 429 are the receiver asking us to come back later; other 4xx will not get better.
_RETRYABLE_4XX = {408, 425, 429}


def slack_payload(message: Message) -> dict[str, Any]:
    """Slack's incoming-webhook shape (Mattermost, Rocket.Chat and Discord's /slack take it too)."""
    lines = [f"*{_escape(subject_line(message))}*", _escape(message.message)]
    lines.append("_" + _escape(" · ".join(details_lines(message))) + "_")
    if message.action_url:
        lines.append(f"<{message.action_url}|Open in sourcekeeper>")
    return {"text": "\n".join(lines)}


def generic_payload(message: Message) -> dict[str, Any]:
    """The notification as the API shows it, under `notification`, with the event name beside it."""
    body = asdict(message)
    body["id"] = body.pop("notification_id")
    return {
        "event": "notification.created",
        "recipient": body.pop("recipient"),
        "notification": body,
    }


def _escape(text: str) -> str:
    """Slack treats &, < and > as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WebhookChannel:
    name = "webhook"

    def __init__(self, fmt: WebhookFormat, client: httpx.Client | None = None) -> None:
        self.format = fmt
        self._client = client

    def payload(self, message: Message) -> dict[str, Any]:
        return slack_payload(message) if self.format == "slack" else generic_payload(message)

    def send(self, message: Message, target: str) -> SendResult:
        body = json.dumps(self.payload(message), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "X-Sourcekeeper-Event": "notification.created",
            "X-Sourcekeeper-Notification": str(message.notification_id),
        }
        try:
            # No redirects: a hook that bounces us elsewhere is treated as misconfigured.
            if self._client is not None:
                resp = self._client.post(target, content=body, headers=headers)
            else:
                with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
                    resp = client.post(target, content=body, headers=headers)
        except httpx.TimeoutException:
            return SendResult(ok=False, error="the webhook did not answer in time")
        except httpx.HTTPError as exc:
            # The exception text can contain the URL; only its class and reason are kept.
            return SendResult(
                ok=False,
                error=redact_text(
                    f"could not reach the webhook: {type(exc).__name__}: {_reason(exc)}"
                ),
            )
        if 200 <= resp.status_code < 300:
            return SendResult.sent()
        reason = resp.reason_phrase or ""
        retryable = resp.status_code >= 500 or resp.status_code in _RETRYABLE_4XX
        return SendResult(
            ok=False,
            retryable=retryable,
            error=f"the webhook answered HTTP {resp.status_code} {reason}".strip(),
        )


def _reason(exc: Exception) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.split(" for url ", 1)[0][:300]
