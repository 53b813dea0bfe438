"""ASGI middleware: request ids, tolerant query strings, body limits, one log line and metrics
per request.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sourcekeeper.core.context import client_ip_var, request_id_var
from sourcekeeper.core.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = structlog.get_logger("sourcekeeper.http")

_NOT_GIVEN = {"undefined", "null", ""}
MAX_BODY_BYTES = 10 * 1024 * 1024


def clean_query_string(raw: bytes) -> bytes:
    """Drop parameters whose value is "undefined", "null" or "" (API.md §0: they mean "not
    given").
    """
    if not raw:
        return raw
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if v not in _NOT_GIVEN]
    if len(kept) == len(pairs):
        return raw
    return urlencode(kept).encode("latin-1")


def _error_body(code: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {
            "success": False,
            "error": {"code": code, "message": message, "details": []},
            "request_id": request_id,
        }
    ).encode()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given_id = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = (
            given_id if 0 < len(given_id) <= 64 and given_id.isprintable() else uuid.uuid4().hex
        )
        ip = (scope.get("client") or ("", 0))[0] or None
        scope["query_string"] = clean_query_string(scope.get("query_string", b""))
        scope.setdefault("state", {})["request_id"] = request_id
        request_id_var.set(request_id)
        client_ip_var.set(ip)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        start = time.perf_counter()
        status = 500

        status_sent = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status, status_sent = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        try:
            if length > MAX_BODY_BYTES:
                status = 413
                await self._reply(
                    send,
                    413,
                    _error_body(
                        "too_large", f"Request body exceeds {MAX_BODY_BYTES} bytes", request_id
                    ),
                    request_id,
                )
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # The one place unexpected errors become a reply: 500, the request id, nothing else.
            log.error("unhandled_exception", exc_type=type(exc).__name__, exc_info=exc)
            if status_sent:
                raise
            status = 500
            await self._reply(
                send, 500, _error_body("internal_error", "Internal error", request_id), request_id
            )
        finally:
            duration = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_LATENCY.labels(method, template, str(status)).observe(duration)
            state: dict[str, Any] = scope.get("state", {})
            log.info(
                "request",
                method=method,
                route=template,
                path=scope.get("path"),
                status=status,
                duration_ms=round(duration * 1000, 2),
                user=state.get("user"),
                ip=ip,
            )

    @staticmethod
    async def _reply(send: Send, status: int, body: bytes, request_id: str) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
