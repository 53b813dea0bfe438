"""/health, /ready and /metrics."""

from __future__ import annotations

import hmac
from typing import Literal

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from sourcekeeper.core.config import get_settings
from sourcekeeper.core.db import session_scope
from sourcekeeper.core.envelope import Envelope, error_responses, ok
from sourcekeeper.core.errors import Unauthenticated, Unavailable
from sourcekeeper.core.metrics import QUEUE_DEPTH
from sourcekeeper.jobs import queue
from sourcekeeper.storage.service import get_store

router = APIRouter(tags=["operations"])
log = structlog.get_logger("sourcekeeper.ops")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]


@router.get("/health")
def health() -> Envelope[Health]:
    """The process is alive."""
    return ok(Health())


@router.get("/ready", responses=error_responses(503))
def ready() -> Envelope[Readiness]:
    """Checks the metadata database, the artifact store and the queue; 503 names what failed."""
    checks: dict[str, str] = {}
    failed: list[str] = []
    for name, probe in (
        ("database", _check_db),
        ("storage", lambda: get_store().check()),
        ("queue", queue.check_queue),
    ):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; the name is what matters
            checks[name] = f"failed: {type(exc).__name__}"
            failed.append(name)
    if failed:
        raise Unavailable(
            f"Not ready: {', '.join(failed)} unavailable",
            [{"check": k, "status": v} for k, v in checks.items()],
        )
    return ok(Readiness(checks=checks))


def _check_db() -> None:
    with session_scope() as db:
        db.execute(text("SELECT 1"))


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text; protected by SOURCEKEEPER_METRICS_TOKEN when set."""
    token = get_settings().metrics_token
    if token is not None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise Unauthenticated("/metrics needs the metrics token")
    try:
        QUEUE_DEPTH.set(queue.queue_depth())
    except Exception as exc:  # noqa: BLE001 - a queue outage must not hide the other metrics
        QUEUE_DEPTH.set(float("nan"))
        log.warning("queue_depth_unavailable", error=type(exc).__name__)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
