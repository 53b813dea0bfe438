"""Delivery channels beyond the in-app copy: email (Apprise over SMTP) and webhooks (httpx)."""

from sourcekeeper.notifications.channels.base import Channel, Message, SendResult, public_target
from sourcekeeper.notifications.channels.email import EmailChannel, SmtpConfigError, SmtpSettings
from sourcekeeper.notifications.channels.webhook import WebhookChannel, WebhookFormat

__all__ = [
    "Channel",
    "EmailChannel",
    "Message",
    "SendResult",
    "SmtpConfigError",
    "SmtpSettings",
    "WebhookChannel",
    "WebhookFormat",
    "public_target",
]
