"""/api/notifications: the caller's own notifications, flat replies (API.md §4).

Fixed segments (`/stats`, `/mark-read`, `/preferences`) are declared before the `{notification_id}`
routes, and the id is an integer, so neither can swallow the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from sourcekeeper.auth.deps import DbSession, require
from sourcekeeper.auth.service import Principal
from sourcekeeper.core.envelope import COMMON_ERRORS
from sourcekeeper.core.pagination import PageParams
from sourcekeeper.core.params import MAX_ID, PathId
from sourcekeeper.core.permissions import Perm
from sourcekeeper.notifications import service as notifications_service
from sourcekeeper.notifications.schemas import (
    CategoryName,
    DeliveryList,
    DeliveryRead,
    MarkReadRequest,
    MarkReadResult,
    NotificationDeleted,
    NotificationList,
    NotificationOut,
    NotificationRead,
    NotificationStats,
    PreferencesOut,
    PreferencesUpdate,
    PriorityName,
    TypeName,
)

router = APIRouter(prefix="/api/notifications", tags=["notifications"], responses=COMMON_ERRORS)
Viewer = Annotated[Principal, Depends(require(Perm.NOTIFICATION_VIEW))]
Deleter = Annotated[Principal, Depends(require(Perm.NOTIFICATION_DELETE))]
SourceFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this data source")]


def _out(row: object) -> NotificationOut:
    return NotificationOut(notification=NotificationRead.model_validate(row))


@router.get("")
def list_notifications(
    db: DbSession,
    user: Viewer,
    page: Annotated[PageParams, Query()],
    data_source_id: SourceFilter = None,
    type: TypeName | None = None,  # noqa: A002 - the contract's parameter name
    priority: PriorityName | None = None,
    category: CategoryName | None = None,
    unread_only: bool = False,
    since: Annotated[
        datetime | None, Query(description="Created at or after (UTC if no zone)")
    ] = None,
    before: Annotated[datetime | None, Query(description="Created before (UTC if no zone)")] = None,
) -> NotificationList:
    """The caller's notifications, newest first; `unread_count` ignores `unread_only`."""
    filters = notifications_service.Filters(
        data_source_id=data_source_id,
        type=type,
        priority=priority,
        category=category,
        unread_only=unread_only,
        since=since,
        before=before,
    )
    items, total, unread = notifications_service.list_notifications(
        db, user_id=user.user.id, page=page, filters=filters
    )
    return NotificationList(
        notifications=[NotificationRead.model_validate(n) for n in items],
        total=total,
        unread_count=unread,
    )


@router.get("/stats")
def notification_stats(
    db: DbSession, user: Viewer, data_source_id: SourceFilter = None
) -> NotificationStats:
    """Counts of the caller's notifications: totals, by type, priority and category, last 24 h."""
    return NotificationStats(
        **notifications_service.stats(db, user_id=user.user.id, data_source_id=data_source_id)
    )


@router.post("/mark-read")
def mark_read_many(db: DbSession, user: Viewer, body: MarkReadRequest) -> MarkReadResult:
    """Mark listed ids (numbers or digit strings; others' ids are ignored) or everything read;
    `updated` counts the ones that were unread."""
    if body.all:
        updated = notifications_service.mark_all_read(
            db, user_id=user.user.id, data_source_id=body.data_source_id
        )
    else:
        updated = notifications_service.mark_many_read(db, user_id=user.user.id, ids=body.ids())
    return MarkReadResult(updated=updated)


@router.get("/preferences")
def get_preferences(db: DbSession, user: Viewer) -> PreferencesOut:
    """The caller's delivery preferences (in-app is always on)."""
    return PreferencesOut(preferences=notifications_service.get_preferences(db, user=user.user))


@router.put("/preferences")
def update_preferences(db: DbSession, user: Viewer, body: PreferencesUpdate) -> PreferencesOut:
    """Change minimum priority, categories, email and webhooks (http/https URLs only)."""
    return PreferencesOut(
        preferences=notifications_service.update_preferences(db, user=user.user, data=body)
    )


@router.get("/{notification_id}")
def get_notification(db: DbSession, user: Viewer, notification_id: PathId) -> NotificationOut:
    """One of the caller's notifications (someone else's id is a 404)."""
    return _out(
        notifications_service.get_own(db, user_id=user.user.id, notification_id=notification_id)
    )


@router.post("/{notification_id}/read")
def read_notification(db: DbSession, user: Viewer, notification_id: PathId) -> NotificationOut:
    """Mark read; calling it again changes nothing."""
    return _out(
        notifications_service.mark_read(db, user_id=user.user.id, notification_id=notification_id)
    )


@router.post("/{notification_id}/acknowledge")
def acknowledge_notification(
    db: DbSession, user: Viewer, notification_id: PathId
) -> NotificationOut:
    """Acknowledge (sets acknowledged_at/acknowledged_by, and read); idempotent."""
    return _out(
        notifications_service.acknowledge(
            db, user_id=user.user.id, username=user.username, notification_id=notification_id
        )
    )


@router.get("/{notification_id}/deliveries")
def list_deliveries(db: DbSession, user: Viewer, notification_id: PathId) -> DeliveryList:
    """The email/webhook delivery attempts of the caller's copy (why did my webhook not fire?)."""
    rows = notifications_service.list_deliveries(
        db, user_id=user.user.id, notification_id=notification_id
    )
    return DeliveryList(deliveries=[DeliveryRead.model_validate(r) for r in rows])


@router.delete("/{notification_id}")
def delete_notification(
    db: DbSession, user: Deleter, notification_id: PathId
) -> NotificationDeleted:
    """Delete the caller's copy; other recipients keep theirs."""
    notifications_service.delete_own(db, user_id=user.user.id, notification_id=notification_id)
    return NotificationDeleted(id=notification_id)
