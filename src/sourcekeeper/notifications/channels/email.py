"""Email through Apprise's SMTP plugin (MIME, STARTTLS/implicit TLS, login and well-known-provider
quirks are its job, not ours).

`SOURCEKEEPER_SMTP_URL` takes one of three schemes, so the transport security is always explicit:
`smtp://` plain SMTP (a local relay, default port 25), `smtp+starttls://` upgrades with STARTTLS
(default 587), `smtps://` implicit TLS (default 465); user and password in the URL are
percent-encoded, and `?from=` sets the sender (default `sourcekeeper@localhost`), e.g.
`smtp+starttls://alerts%40example.org:secret@mail.example.org?from=alerts@example.org`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

import apprise

from sourcekeeper.core.logging import redact_text
from sourcekeeper.notifications.channels.base import (
    Message,
    SendResult,
    details_lines,
    subject_line,
)

_MODES = {"smtp": ("insecure", 25), "smtp+starttls": ("starttls", 587), "smtps": ("ssl", 465)}
DEFAULT_FROM = "sourcekeeper@localhost"
CONNECT_TIMEOUT_SECONDS = 10


class SmtpConfigError(ValueError):
    """The SMTP URL cannot be used; raised when it is parsed, with a message naming the problem."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    mode: str  # Apprise's secure mode: insecure | starttls | ssl
    username: str | None
    password: str | None
    sender: str

    @classmethod
    def from_url(cls, url: str) -> SmtpSettings:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _MODES:
            raise SmtpConfigError(
                f"SMTP URL scheme must be one of {', '.join(_MODES)}, not {scheme or 'none'!r}"
            )
        if not parts.hostname:
            raise SmtpConfigError("SMTP URL has no host")
        mode, default_port = _MODES[scheme]
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            mode=mode,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            sender=(query.get("from") or [DEFAULT_FROM])[0],
        )

    def apprise_url(self, to: str) -> str:
        login = ""
        if self.username:
            login = quote(self.username, safe="")
            if self.password:
                login += ":" + quote(self.password, safe="")
            login += "@"
        return (
            f"mailto://{login}{self.host}:{self.port}?smtp={quote(self.host, safe='')}"
            f"&from={quote(self.sender, safe='')}&to={quote(to, safe='')}"
            f"&mode={self.mode}&format=text&cto={CONNECT_TIMEOUT_SECONDS}"
        )


def render_body(message: Message) -> str:
    lines = [message.message, "", *details_lines(message)]
    if message.action_url:
        lines.append(f"Open: {message.action_url}")
    lines += [
        "",
        "You receive this email because email delivery is enabled in your sourcekeeper "
        "notification preferences; change them under Notifications → Preferences.",
    ]
    return "\n".join(lines)


class EmailChannel:
    name = "email"

    def __init__(self, smtp: SmtpSettings) -> None:
        self.smtp = smtp

    def send(self, message: Message, target: str) -> SendResult:
        asset = apprise.AppriseAsset(app_id="sourcekeeper", app_desc="sourcekeeper notifications")
        sender = apprise.Apprise(asset=asset)
        if not sender.add(self.smtp.apprise_url(target)):
            return SendResult(
                ok=False,
                retryable=False,
                error=f"cannot send email to {target!r}: the address or the SMTP "
                "settings were rejected",
            )
        result = sender.notify(
            title=subject_line(message),
            body=render_body(message),
            body_format=apprise.NotifyFormat.TEXT,
            log_level=logging.WARNING,
        )
        if result:
            return SendResult.sent()
        # Apprise keeps what its plugin logged during this call (per call, so threads don't mix).
        reasons = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
        reason = "; ".join(dict.fromkeys(reasons)) or "the SMTP server did not accept the message"
        secrets = [s for s in (self.smtp.password,) if s]
        text = redact_text(reason)
        for secret in secrets:
            text = text.replace(secret, "***")
        return SendResult(ok=False, error=f"email not sent: {text}"[:1000])
