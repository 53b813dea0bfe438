"""Delivery by email (a real SMTP server: aiosmtpd) and webhooks (a real HTTP receiver), retries
and the delivery log. The task function is called directly instead of through the queue."""

from __future__ import annotations

import email
import json
import threading
from collections.abc import Callable, Iterator
from email.message import Message as EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from notification_helpers import emit, grant
from servers_plugin import free_port

from sourcekeeper.core.config import get_settings
from sourcekeeper.core.db import session_scope
from sourcekeeper.notifications import service as notifications_service
from sourcekeeper.notifications import tasks as notifications_tasks
from sourcekeeper.notifications.channels import WebhookChannel

URL = "/api/notifications"


class SmtpSink:
    """Collects every message the SMTP server accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                email.message_from_bytes(envelope.content),
            )
        )
        return "250 OK"


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


class Receiver:
    """An HTTP server in this process; `script[path]` lists the statuses to answer, in order
    (the last one repeats)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.script: dict[str, list[int]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"null")
                receiver.requests.append((self.path, dict(self.headers), body))
                plan = receiver.script.get(self.path, [200])
                status = plan.pop(0) if len(plan) > 1 else plan[0]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hits(self, path: str) -> list[tuple[str, dict[str, str], Any]]:
        return [r for r in self.requests if r[0] == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()


@pytest.fixture
def smtp_configured(monkeypatch: pytest.MonkeyPatch, smtp: tuple[SmtpSink, int]) -> SmtpSink:
    sink, port = smtp
    monkeypatch.setattr(
        get_settings(), "smtp_url", f"smtp://127.0.0.1:{port}?from=sourcekeeper@example.org"
    )
    return sink


@pytest.fixture
def retries(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], int]]:
    """Retries the task would queue (with their delay), captured instead of queued."""
    queued: list[tuple[dict[str, Any], int]] = []
    monkeypatch.setattr(
        notifications_tasks,
        "schedule_retry",
        lambda kwargs, *, delay: queued.append((kwargs, delay)),
    )
    return queued


@pytest.fixture
def subscriber(
    client: TestClient,
    admin: Any,
    make_caller: Callable[[str], Any],
    new_source: Callable[[], dict[str, Any]],
) -> Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]]:
    """A user granted on a fresh source, with the given preferences saved."""

    def make(prefs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        user, src = make_caller("data_analyst"), new_source()
        grant(client, admin.headers, src["id"], user.id)
        resp = client.put(f"{URL}/preferences", headers=user.headers, json=prefs)
        assert resp.status_code == 200, resp.text
        return user, src

    return make


def deliveries(client: TestClient, user: Any, nid: int) -> list[dict[str, Any]]:
    resp = client.get(f"{URL}/{nid}/deliveries", headers=user.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["deliveries"]


def run_until_done(retries: list[tuple[dict[str, Any], int]], nid: int) -> list[int]:
    """Run the task, then every retry it queues; returns the delays asked for."""
    notifications_tasks.deliver.call_local(notification_ids=[nid])
    delays = []
    while retries:
        kwargs, delay = retries.pop(0)
        delays.append(delay)
        notifications_tasks.deliver.call_local(**kwargs)
    return delays


def test_email_and_both_webhook_formats_arrive(
    client: TestClient,
    smtp_configured: SmtpSink,
    receiver: Receiver,
    retries: list[Any],
    subscriber: Callable[..., Any],
) -> None:
    user, src = subscriber(
        {
            "email_enabled": True,
            "webhooks": [
                {"url": f"{receiver.base}/ok/slack", "format": "slack"},
                {"url": f"{receiver.base}/ok/generic?token=s3cr3t", "format": "generic"},
                {"url": f"{receiver.base}/ok/disabled", "enabled": False},
            ],
        }
    )
    nid = emit(
        data_source_id=src["id"],
        event_type="backup.failed",
        category="backup",
        type="error",
        priority="high",
        title=f"Backup of '{src['name']}' failed",
        message=f"Backup of '{src['name']}' failed: password authentication failed",
        action_url=f"/data-sources/{src['id']}/backups/1",
        tags=["nightly"],
    )[user.id]
    before = len(smtp_configured.messages)

    run_until_done(retries, nid)

    sent = smtp_configured.messages[before:]
    assert len(sent) == 1
    mail_from, rcpt, msg = sent[0]
    assert (mail_from, rcpt) == ("sourcekeeper@example.org", [f"{user.username}@example.org"])
    assert msg["Subject"] == f"[HIGH] Backup of '{src['name']}' failed"
    text = msg.get_payload(decode=True).decode()
    assert "password authentication failed" in text
    assert f"http://127.0.0.1:8080/data-sources/{src['id']}/backups/1" in text

    slack = receiver.hits("/ok/slack")
    assert len(slack) == 1
    assert set(slack[0][2]) == {"text"}
    assert f"Backup of '{src['name']}' failed" in slack[0][2]["text"]
    generic = receiver.hits("/ok/generic?token=s3cr3t")
    assert len(generic) == 1
    headers, payload = generic[0][1], generic[0][2]
    assert headers["X-Sourcekeeper-Notification"] == str(nid)
    assert payload["event"] == "notification.created"
    assert payload["recipient"] == user.username
    note = payload["notification"]
    assert (note["id"], note["category"], note["priority"], note["data_source_id"]) == (
        nid,
        "backup",
        "high",
        src["id"],
    )
    assert note["tags"] == ["nightly"] and note["created_at"].endswith("Z")
    assert receiver.hits("/ok/disabled") == []

    log = deliveries(client, user, nid)
    assert sorted((d["channel"], d["status"], d["attempt"]) for d in log) == [
        ("email", "sent", 1),
        ("webhook", "sent", 1),
        ("webhook", "sent", 1),
    ]
    assert all("s3cr3t" not in d["target"] and "/ok/" not in d["target"] for d in log)
    assert retries == []


def test_preferences_decide_what_leaves_the_app(
    client: TestClient,
    smtp_configured: SmtpSink,
    receiver: Receiver,
    subscriber: Callable[..., Any],
) -> None:
    user, src = subscriber(
        {
            "min_priority": "high",
            "categories": ["security"],
            "webhooks": [{"url": f"{receiver.base}/ok/prefs"}],
        }
    )
    low = emit(data_source_id=src["id"], category="security", priority="medium")[user.id]
    other = emit(data_source_id=src["id"], category="backup", priority="critical")[user.id]
    wanted = emit(data_source_id=src["id"], category="security", priority="critical")[user.id]
    with session_scope() as db:
        plan = notifications_service.plan_delivery(db, notification_ids=[low, other, wanted])
    assert [(p.notification_id, p.channel) for p in plan] == [(wanted, "webhook")]
    # In-app copies exist whatever the preferences say.
    listed = client.get(URL, headers=user.headers).json()
    assert {low, other, wanted} <= {n["id"] for n in listed["notifications"]}


def test_failing_receiver_is_retried_logged_and_in_app_copy_kept(
    client: TestClient,
    smtp_configured: SmtpSink,
    receiver: Receiver,
    retries: list[Any],
    subscriber: Callable[..., Any],
) -> None:
    receiver.script["/fail"] = [500]
    user, src = subscriber(
        {"email_enabled": True, "webhooks": [{"url": f"{receiver.base}/fail", "format": "slack"}]}
    )
    nid = emit(data_source_id=src["id"], priority="critical", type="error")[user.id]
    mails_before = len(smtp_configured.messages)

    delays = run_until_done(retries, nid)

    assert delays == list(notifications_service.RETRY_DELAYS_SECONDS)
    assert len(receiver.hits("/fail")) == notifications_service.MAX_ATTEMPTS
    # The email went out once; retries only repeat the target that failed.
    assert len(smtp_configured.messages) == mails_before + 1
    hooks = [d for d in deliveries(client, user, nid) if d["channel"] == "webhook"]
    assert [(d["attempt"], d["status"]) for d in hooks] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "retrying"),
        (4, "retrying"),
        (5, "failed"),
    ]
    assert all(d["error"] == "the webhook answered HTTP 500 Internal Server Error" for d in hooks)
    note = client.get(f"{URL}/{nid}", headers=user.headers)
    assert note.status_code == 200 and note.json()["notification"]["read_at"] is None


def test_flaky_receiver_succeeds_on_retry(
    client: TestClient, receiver: Receiver, retries: list[Any], subscriber: Callable[..., Any]
) -> None:
    receiver.script["/flaky"] = [503, 200]
    user, src = subscriber({"webhooks": [{"url": f"{receiver.base}/flaky"}]})
    nid = emit(data_source_id=src["id"])[user.id]
    assert run_until_done(retries, nid) == [30]
    assert [(d["attempt"], d["status"]) for d in deliveries(client, user, nid)] == [
        (1, "retrying"),
        (2, "sent"),
    ]


def test_client_errors_and_unreachable_hooks(
    client: TestClient, receiver: Receiver, retries: list[Any], subscriber: Callable[..., Any]
) -> None:
    receiver.script["/gone"] = [404]
    closed = f"http://127.0.0.1:{free_port()}/hook"
    user, src = subscriber({"webhooks": [{"url": f"{receiver.base}/gone"}, {"url": closed}]})
    nid = emit(data_source_id=src["id"])[user.id]
    notifications_tasks.deliver.call_local(notification_ids=[nid])
    log = {d["target"].split("/…")[0]: d for d in deliveries(client, user, nid)}
    gone = log[receiver.base]
    assert (gone["status"], gone["error"]) == ("failed", "the webhook answered HTTP 404 Not Found")
    down = log[closed.rsplit("/", 1)[0]]
    assert down["status"] == "retrying"
    assert down["error"].startswith("could not reach the webhook: ConnectError")
    # Only the unreachable one is retried; a 404 will not get better.
    assert len(retries) == 1
    assert retries[0][0]["only"] == [[nid, retries[0][0]["only"][0][1]]]


def test_email_without_smtp_is_skipped_and_smtp_down_is_retried(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    receiver: Receiver,
    retries: list[Any],
    subscriber: Callable[..., Any],
) -> None:
    user, src = subscriber({"email_enabled": True, "webhooks": [{"url": f"{receiver.base}/ok/x"}]})
    monkeypatch.setattr(get_settings(), "smtp_url", None)
    first = emit(data_source_id=src["id"])[user.id]
    notifications_tasks.deliver.call_local(notification_ids=[first])
    log = {d["channel"]: d for d in deliveries(client, user, first)}
    assert log["email"]["status"] == "skipped"
    assert "SOURCEKEEPER_SMTP_URL" in log["email"]["error"]
    assert log["webhook"]["status"] == "sent"
    assert retries == []

    monkeypatch.setattr(
        get_settings(),
        "smtp_url",
        f"smtp://user:pw-Zq9x@127.0.0.1:{free_port()}?from=sk@example.org",
    )
    second = emit(data_source_id=src["id"])[user.id]
    notifications_tasks.deliver.call_local(notification_ids=[second])
    mail = next(d for d in deliveries(client, user, second) if d["channel"] == "email")
    assert mail["status"] == "retrying"
    assert mail["error"].startswith("email not sent")
    assert "pw-Zq9x" not in mail["error"]
    assert [k for k, _ in retries] == [
        {"notification_ids": [second], "attempt": 2, "only": [[second, "email"]]}
    ]


def test_a_crashing_channel_does_not_stop_the_others(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    smtp_configured: SmtpSink,
    retries: list[Any],
    subscriber: Callable[..., Any],
) -> None:
    def boom(self: WebhookChannel, message: Any, target: str) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(WebhookChannel, "send", boom)
    user, src = subscriber(
        {"email_enabled": True, "webhooks": [{"url": "http://127.0.0.1:9/never"}]}
    )
    nid = emit(data_source_id=src["id"])[user.id]
    notifications_tasks.deliver.call_local(notification_ids=[nid])
    log = {d["channel"]: d for d in deliveries(client, user, nid)}
    assert log["email"]["status"] == "sent"
    assert log["webhook"]["error"] == "internal error in the webhook channel: RuntimeError"


def test_deleted_before_delivery_sends_nothing(
    client: TestClient, receiver: Receiver, retries: list[Any], subscriber: Callable[..., Any]
) -> None:
    user, src = subscriber({"webhooks": [{"url": f"{receiver.base}/ok/deleted"}]})
    nid = emit(data_source_id=src["id"])[user.id]
    client.delete(f"{URL}/{nid}", headers=user.headers)
    notifications_tasks.deliver.call_local(notification_ids=[nid])
    assert receiver.hits("/ok/deleted") == []
