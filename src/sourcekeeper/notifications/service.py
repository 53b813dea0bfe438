"""Emit notifications (fan-out on write), read and change a user's own copies, keep the counters,
preferences, and plan/record deliveries by email and webhook.

Counts (list `total`/`unread_count`, stats) come from `notification_counters`, which every write
here adjusts in the same transaction, minus the expired rows the tick has not purged yet; so they
stay O(groups) instead of O(rows) however many notifications a user has piled up.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    ColumnElement,
    Select,
    case,
    column,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    table,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from sourcekeeper.auditlog import service as audit
from sourcekeeper.auth import service as auth_service
from sourcekeeper.auth.models import User
from sourcekeeper.core.config import get_settings
from sourcekeeper.core.crypto import decrypt_secret, encrypt_secret
from sourcekeeper.core.db import after_commit, utcnow
from sourcekeeper.core.errors import NotFound
from sourcekeeper.core.logging import register_secret
from sourcekeeper.core.metrics import NOTIFICATIONS_CREATED
from sourcekeeper.core.pagination import PageParams
from sourcekeeper.core.permissions import Role
from sourcekeeper.jobs.queue import enqueue_after_commit
from sourcekeeper.notifications.channels import (
    EmailChannel,
    Message,
    SendResult,
    SmtpConfigError,
    SmtpSettings,
    WebhookChannel,
    public_target,
)
from sourcekeeper.notifications.models import (
    PRIORITY_RANK,
    Category,
    Notification,
    NotificationCounter,
    NotificationDelivery,
    NotificationPreference,
    NotificationType,
    Priority,
)
from sourcekeeper.notifications.schemas import PreferencesRead, PreferencesUpdate, WebhookRead

log = structlog.get_logger("sourcekeeper.notifications")

N = Notification
C = NotificationCounter
# Waits before attempts 2..5 of a failed delivery: a receiver down for a deploy is caught by the
# first retries, one down for the afternoon by the last.
RETRY_DELAYS_SECONDS = (30, 120, 600, 1800)
MAX_ATTEMPTS = len(RETRY_DELAYS_SECONDS) + 1
PURGE_BATCH = 5000
PURGE_MAX_BATCHES = 20
# The data_sources table, read for a name only; notifications sit below datasources in the layers.
_sources = table("data_sources", column("id"), column("name"))

GroupKey = tuple[int, int, str, str, str]  # user, data source (0 = none), category, type, priority


@dataclass(frozen=True)
class Filters:
    data_source_id: int | None = None
    type: str | None = None
    priority: str | None = None
    category: str | None = None
    unread_only: bool = False
    since: datetime | None = None
    before: datetime | None = None


# ---- emit ------------------------------------------------------------------------------------


def emit(
    db: Session,
    *,
    event_type: str,
    category: str,
    type: str,  # noqa: A002 - the contract's field name
    priority: str,
    title: str,
    message: str,
    data_source_id: int | None = None,
    action_url: str | None = None,
    tags: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
    actor_user_id: int | None = None,
) -> list[Notification]:
    """Write one copy per recipient in the caller's transaction and queue delivery after commit.

    Recipients: everyone allowed to see the source (admins and active grant holders) or, for an
    event without a source, the admins; plus the actor. In-app copies are always written, as on
    GitHub; preferences (minimum priority, categories) only decide what goes out by email/webhook.
    """
    # Unknown values are a programming error in the emitting domain, not user input.
    category_ = Category(category).value
    kind = NotificationType(type).value
    priority_ = Priority(priority).value
    recipients = (
        auth_service.users_with_access(db, data_source_id) if data_source_id else _active_admins(db)
    )
    if actor_user_id is not None and all(u.id != actor_user_id for u in recipients):
        actor = db.get(User, actor_user_id)
        if actor is not None and actor.is_active:
            recipients.append(actor)
    if not recipients:
        return []
    source_name = (
        db.scalar(select(_sources.c.name).where(_sources.c.id == data_source_id))
        if data_source_id
        else None
    )
    now = utcnow()
    rows = [
        Notification(
            user_id=user.id,
            event_type=event_type[:64],
            type=kind,
            priority=priority_,
            category=category_,
            title=_clip(title, 200),
            message=_clip(message, 10_000),
            data_source_id=data_source_id,
            data_source_name=source_name,
            action_url=action_url,
            tags=list(tags or []),
            meta=dict(metadata or {}),
            created_at=now,
            expires_at=_aware(expires_at) if expires_at else None,
        )
        for user in recipients
    ]
    db.add_all(rows)
    db.flush()
    _apply_deltas(
        db, {(r.user_id, data_source_id or 0, category_, kind, priority_): (1, 1, 1) for r in rows}
    )
    prefs = _preferences_of(db, [r.user_id for r in rows])
    outgoing = [r.id for r in rows if _wants_delivery(prefs.get(r.user_id), priority_, category_)]
    if outgoing:
        enqueue_after_commit(db, "notifications.deliver", notification_ids=outgoing)
    count = len(rows)
    after_commit(db, lambda: NOTIFICATIONS_CREATED.labels(category=category_).inc(count))
    log.info(
        "notification_emitted",
        event_type=event_type,
        data_source_id=data_source_id,
        recipients=count,
        delivering=len(outgoing),
    )
    return rows


def _active_admins(db: Session) -> list[User]:
    return list(
        db.scalars(
            select(User).where(User.role == Role.ADMIN, User.is_active.is_(True)).order_by(User.id)
        )
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _aware(value: datetime) -> datetime:
    """Query parameters and callers may pass naive datetimes; they mean UTC. Instants beyond
    what a UTC datetime holds (year 1 at +01:00) are clamped rather than overflowing."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return (
            datetime.min.replace(tzinfo=UTC)
            if value.year == 1
            else datetime.max.replace(tzinfo=UTC)
        )


# ---- counters ----------------------------------------------------------------------------------


def _apply_deltas(db: Session, deltas: dict[GroupKey, tuple[int, int, int]]) -> None:
    """Add (total, unread, unacknowledged) deltas of row groups to the four dimension counters
    each touches, in one upsert; keys are sorted so concurrent writers on PostgreSQL lock
    counter rows in the same order (no deadlock)."""
    rows: dict[tuple[int, int, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for (user_id, source_id, category, type_, priority), delta in deltas.items():
        for dimension, value in (
            ("all", ""),
            ("type", type_),
            ("priority", priority),
            ("category", category),
        ):
            acc = rows[(user_id, source_id, dimension, str(value))]
            for i in range(3):
                acc[i] += delta[i]
    params = [
        {
            "user_id": k[0],
            "data_source_id": k[1],
            "dimension": k[2],
            "value": k[3],
            "total": d[0],
            "unread": d[1],
            "unacknowledged": d[2],
        }
        for k, d in sorted(rows.items())
        if d != [0, 0, 0]
    ]
    if not params:
        return
    if db.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    tbl = C.__table__
    # executemany of one cached statement: a multi-row VALUES would be compiled anew for every
    # row count (measured: ~7x slower on PostgreSQL for 56 rows).
    stmt = upsert(tbl)
    stmt = stmt.on_conflict_do_update(
        index_elements=[tbl.c.user_id, tbl.c.data_source_id, tbl.c.dimension, tbl.c.value],
        set_={
            name: tbl.c[name] + stmt.excluded[name]
            for name in ("total", "unread", "unacknowledged")
        },
    )
    db.execute(stmt, params)


@dataclass(frozen=True)
class _Change:
    """One row leaving a count: deleted (`gone`), read (`was_unread`) or acknowledged."""

    user_id: int
    data_source_id: int | None
    category: str
    type: str
    priority: str
    gone: int = 0
    was_unread: int = 0
    was_unacked: int = 0


def _removal_deltas(changes: Iterable[_Change]) -> dict[GroupKey, tuple[int, int, int]]:
    out: dict[GroupKey, list[int]] = defaultdict(lambda: [0, 0, 0])
    for ch in changes:
        d = out[(ch.user_id, ch.data_source_id or 0, ch.category, ch.type, ch.priority)]
        d[0] -= ch.gone
        d[1] -= ch.was_unread
        d[2] -= ch.was_unacked
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def rebuild_counters(db: Session, *, user_id: int | None = None) -> None:
    """Recompute counters from the rows (after a bulk import, or to check them in tests)."""
    tbl = C.__table__
    wipe = delete(tbl)
    if user_id is not None:
        wipe = wipe.where(tbl.c.user_id == user_id)
    db.execute(wipe)
    # Literals, not bound parameters: PostgreSQL must see the same expression in GROUP BY.
    source_id = func.coalesce(N.data_source_id, literal_column("0"))
    for dimension, column_ in (
        ("all", None),
        ("type", N.type),
        ("priority", N.priority),
        ("category", N.category),
    ):
        value = literal_column("''") if column_ is None else column_
        keys = [N.user_id, source_id] + ([] if column_ is None else [column_])
        source = select(
            N.user_id,
            source_id,
            literal_column(f"'{dimension}'"),
            value,
            func.count(),
            _sum_if(N.read_at.is_(None)),
            _sum_if(N.acknowledged_at.is_(None)),
        ).group_by(*keys)
        if user_id is not None:
            source = source.where(N.user_id == user_id)
        db.execute(
            insert(tbl).from_select(
                [
                    "user_id",
                    "data_source_id",
                    "dimension",
                    "value",
                    "total",
                    "unread",
                    "unacknowledged",
                ],
                source,
            )
        )


def _sum_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _visible(now: datetime) -> ColumnElement[bool]:
    return or_(N.expires_at.is_(None), N.expires_at > now)


_DIMENSIONS = ("type", "priority", "category")


def _expired(user_id: int, now: datetime) -> list[ColumnElement[bool]]:
    """Expired rows the purge has not reached yet: still in the counters, no longer visible."""
    return [N.user_id == user_id, N.expires_at.is_not(None), N.expires_at <= now]


def _negated_counts() -> list[Any]:
    return [
        (-func.count()).label("n"),
        (-_sum_if(N.read_at.is_(None))).label("n_unread"),
        (-_sum_if(N.acknowledged_at.is_(None))).label("n_unacked"),
    ]


def _counter_totals(db: Session, user_id: int, now: datetime, f: Filters) -> tuple[int, int] | None:
    """(total, unread) for filters on at most one of type/priority/category (plus the source),
    from the counters minus expired rows not yet purged; None when the counters can't answer."""
    given = [(d, getattr(f, d)) for d in _DIMENSIONS if getattr(f, d) is not None]
    if len(given) > 1 or f.since is not None or f.before is not None:
        return None
    dimension, value = given[0] if given else ("all", "")
    kept = select(
        C.total.label("n"), C.unread.label("n_unread"), C.unacknowledged.label("n_unacked")
    ).where(C.user_id == user_id, C.dimension == dimension, C.value == value)
    if f.data_source_id is not None:
        kept = kept.where(C.data_source_id == f.data_source_id)
    expired = select(*_negated_counts()).where(*_expired(user_id, now), *_filter_clauses(f))
    both = union_all(kept, expired).subquery()
    row = db.execute(
        select(func.coalesce(func.sum(both.c.n), 0), func.coalesce(func.sum(both.c.n_unread), 0))
    ).one()
    return int(row[0]), int(row[1])


def _dimension_counts(
    db: Session, user_id: int, now: datetime, data_source_id: int | None
) -> list[tuple[str, str, int, int, int]]:
    """(dimension, value, total, unread, unacknowledged) over all the user's counters (of one
    source, if given), corrected for expired rows, in one statement of at most ~16 result rows."""
    kept = select(
        C.dimension,
        C.value,
        C.total.label("n"),
        C.unread.label("n_unread"),
        C.unacknowledged.label("n_unacked"),
    ).where(C.user_id == user_id)
    where = _expired(user_id, now)
    if data_source_id is not None:
        kept = kept.where(C.data_source_id == data_source_id)
        where.append(N.data_source_id == data_source_id)
    parts: list[Any] = [
        kept,
        select(
            literal_column("'all'").label("dimension"),
            literal_column("''").label("value"),
            *_negated_counts(),
        ).where(*where),
    ]
    for dimension in _DIMENSIONS:
        column_ = getattr(N, dimension)
        parts.append(
            select(literal_column(f"'{dimension}'"), column_, *_negated_counts())
            .where(*where)
            .group_by(column_)
        )
    both = union_all(*parts).subquery()
    stmt = select(
        both.c.dimension,
        both.c.value,
        func.sum(both.c.n),
        func.sum(both.c.n_unread),
        func.sum(both.c.n_unacked),
    ).group_by(both.c.dimension, both.c.value)
    return [(r[0], r[1], int(r[2] or 0), int(r[3] or 0), int(r[4] or 0)) for r in db.execute(stmt)]


# ---- reading -----------------------------------------------------------------------------------


def _filter_clauses(f: Filters) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if f.data_source_id is not None:
        clauses.append(N.data_source_id == f.data_source_id)
    if f.type is not None:
        clauses.append(N.type == f.type)
    if f.priority is not None:
        clauses.append(N.priority == f.priority)
    if f.category is not None:
        clauses.append(N.category == f.category)
    if f.since is not None:
        clauses.append(N.created_at >= _aware(f.since))
    if f.before is not None:
        clauses.append(N.created_at < _aware(f.before))
    return clauses


def list_notifications(
    db: Session, *, user_id: int, page: PageParams, filters: Filters
) -> tuple[list[Notification], int, int]:
    """The caller's page, newest first, with `total` (all filters) and `unread_count` (all filters
    but unread_only); expired ones are left out."""
    now = utcnow()
    clauses = _filter_clauses(filters)
    stmt: Select[Any] = select(N).where(N.user_id == user_id, _visible(now), *clauses)
    if filters.unread_only:
        stmt = stmt.where(N.read_at.is_(None))
    stmt = stmt.order_by(N.created_at.desc(), N.id.desc()).limit(page.limit).offset(page.offset)
    items = list(db.scalars(stmt))
    counted = _counter_totals(db, user_id, now, filters)
    if counted is None:
        # A time window, or two dimensions at once, are not in the counters: count the rows.
        row = db.execute(
            select(func.count(), _sum_if(N.read_at.is_(None))).where(
                N.user_id == user_id, _visible(now), *clauses
            )
        ).one()
        counted = int(row[0]), int(row[1])
    total_all, unread = counted
    return items, (unread if filters.unread_only else total_all), unread


def stats(db: Session, *, user_id: int, data_source_id: int | None = None) -> dict[str, Any]:
    """Totals and breakdowns of the caller's visible notifications (two small queries)."""
    now = utcnow()
    by_type = {t.value: 0 for t in NotificationType}
    by_priority = {p.value: 0 for p in Priority}
    by_category = {c.value: 0 for c in Category}
    breakdown = {"type": by_type, "priority": by_priority, "category": by_category}
    total = unread = unacked = 0
    for dimension, value, n, n_unread, n_unacked in _dimension_counts(
        db, user_id, now, data_source_id
    ):
        if dimension == "all":
            total, unread, unacked = n, n_unread, n_unacked
        else:
            breakdown[dimension][value] = n
    recent = (
        select(func.count())
        .select_from(N)
        .where(N.user_id == user_id, N.created_at >= now - timedelta(hours=24), _visible(now))
    )
    if data_source_id is not None:
        recent = recent.where(N.data_source_id == data_source_id)
    return {
        "total": total,
        "unread_count": unread,
        "unacknowledged_count": unacked,
        "by_type": by_type,
        "by_priority": by_priority,
        "by_category": by_category,
        "last_24h": db.scalar(recent) or 0,
    }


def get_own(db: Session, *, user_id: int, notification_id: int) -> Notification:
    """The caller's copy; someone else's, an expired or a missing one is the same 404."""
    row = db.scalar(
        select(N).where(N.id == notification_id, N.user_id == user_id, _visible(utcnow()))
    )
    if row is None:
        raise NotFound(f"Notification {notification_id} does not exist")
    return row


# ---- changing the caller's copies -------------------------------------------------------------

_T = N.__table__


def _group_columns() -> list[Any]:
    return [_T.c.data_source_id, _T.c.category, _T.c.type, _T.c.priority]


def mark_read(db: Session, *, user_id: int, notification_id: int) -> Notification:
    """Mark one read (idempotent: a second call changes nothing)."""
    row = get_own(db, user_id=user_id, notification_id=notification_id)
    _set_read(db, user_id, [row.id], utcnow())
    db.refresh(row)
    return row


def _set_read(
    db: Session,
    user_id: int,
    ids: Collection[int] | None,
    now: datetime,
    data_source_id: int | None = None,
) -> int:
    """Mark unread visible rows read (the given ids, or all); returns how many changed.
    `read_at IS NULL` in the UPDATE is what keeps concurrent calls from counting a row twice."""
    stmt = update(_T).where(_T.c.user_id == user_id, _T.c.read_at.is_(None), _visible(now))
    if ids is not None:
        stmt = stmt.where(_T.c.id.in_(sorted(ids)))
    if data_source_id is not None:
        stmt = stmt.where(_T.c.data_source_id == data_source_id)
    changed = db.execute(stmt.values(read_at=now).returning(*_group_columns())).all()
    _apply_deltas(
        db,
        _removal_deltas(
            _Change(user_id, r.data_source_id, r.category, r.type, r.priority, was_unread=1)
            for r in changed
        ),
    )
    return len(changed)


def mark_many_read(db: Session, *, user_id: int, ids: Collection[int]) -> int:
    """Mark the caller's listed notifications read; ids of others are ignored and not counted."""
    unique = set(ids)
    return _set_read(db, user_id, unique, utcnow()) if unique else 0


def mark_all_read(db: Session, *, user_id: int, data_source_id: int | None = None) -> int:
    """Mark every unread notification of the caller read (optionally of one source)."""
    return _set_read(db, user_id, None, utcnow(), data_source_id)


def acknowledge(db: Session, *, user_id: int, username: str, notification_id: int) -> Notification:
    """Acknowledge (and read) the caller's copy; the first acknowledgement's time and user stay."""
    row = get_own(db, user_id=user_id, notification_id=notification_id)
    now = utcnow()
    _set_read(db, user_id, [row.id], now)
    done = db.execute(
        update(_T)
        .where(_T.c.id == row.id, _T.c.acknowledged_at.is_(None))
        .values(acknowledged_at=now, acknowledged_by=username)
        .returning(*_group_columns())
    ).all()
    _apply_deltas(
        db,
        _removal_deltas(
            _Change(user_id, r.data_source_id, r.category, r.type, r.priority, was_unacked=1)
            for r in done
        ),
    )
    db.refresh(row)
    return row


def delete_own(db: Session, *, user_id: int, notification_id: int) -> None:
    """Delete the caller's copy (others' copies of the same event stay)."""
    gone = db.execute(
        delete(_T)
        .where(_T.c.id == notification_id, _T.c.user_id == user_id, _visible(utcnow()))
        .returning(*_group_columns(), _T.c.read_at, _T.c.acknowledged_at)
    ).first()
    if gone is None:
        raise NotFound(f"Notification {notification_id} does not exist")
    _apply_deltas(
        db,
        _removal_deltas(
            [
                _Change(
                    user_id,
                    gone.data_source_id,
                    gone.category,
                    gone.type,
                    gone.priority,
                    gone=1,
                    was_unread=int(gone.read_at is None),
                    was_unacked=int(gone.acknowledged_at is None),
                )
            ]
        ),
    )


def purge_expired(db: Session, now: datetime) -> int:
    """Tick step: delete expired notifications in bounded batches, keeping the counters exact."""
    purged = 0
    for _ in range(PURGE_MAX_BATCHES):
        batch = (
            select(_T.c.id)
            .where(_T.c.expires_at.is_not(None), _T.c.expires_at <= now)
            .limit(PURGE_BATCH)
            .scalar_subquery()
        )
        rows = db.execute(
            delete(_T)
            .where(_T.c.id.in_(batch))
            .returning(_T.c.user_id, *_group_columns(), _T.c.read_at, _T.c.acknowledged_at)
        ).all()
        _apply_deltas(
            db,
            _removal_deltas(
                _Change(
                    r.user_id,
                    r.data_source_id,
                    r.category,
                    r.type,
                    r.priority,
                    gone=1,
                    was_unread=int(r.read_at is None),
                    was_unacked=int(r.acknowledged_at is None),
                )
                for r in rows
            ),
        )
        purged += len(rows)
        if len(rows) < PURGE_BATCH:
            break
    if purged:
        log.info("notifications_purged", count=purged)
    return purged


# ---- preferences -------------------------------------------------------------------------------


def _preferences_of(db: Session, user_ids: Iterable[int]) -> dict[int, NotificationPreference]:
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = db.scalars(select(NotificationPreference).where(NotificationPreference.user_id.in_(ids)))
    return {p.user_id: p for p in rows}


def _wants_delivery(pref: NotificationPreference | None, priority: str, category: str) -> bool:
    if pref is None or category not in pref.categories:
        return False
    if PRIORITY_RANK[priority] < PRIORITY_RANK.get(pref.min_priority, 0):
        return False
    return pref.email_enabled or any(h.get("enabled") for h in pref.webhooks)


def _webhook_context(user_id: int) -> str:
    return f"notification_webhook:{user_id}"


def _webhook_url(pref: NotificationPreference, hook: dict[str, Any]) -> str:
    url = decrypt_secret(hook["url"], context=_webhook_context(pref.user_id))
    register_secret(url)
    return url


def _preferences_read(user: User, pref: NotificationPreference | None) -> PreferencesRead:
    if pref is None:
        pref = NotificationPreference(
            user_id=user.id,
            min_priority=Priority.LOW,
            categories=[c.value for c in Category],
            email_enabled=False,
            email=None,
            webhooks=[],
        )
    return PreferencesRead(
        min_priority=pref.min_priority,
        categories=list(pref.categories),
        email_enabled=pref.email_enabled,
        email=pref.email or user.email,
        email_is_account_default=pref.email is None,
        webhooks=[
            WebhookRead(url=_webhook_url(pref, h), format=h["format"], enabled=h["enabled"])
            for h in pref.webhooks
        ],
        updated_at=pref.updated_at,
    )


def get_preferences(db: Session, *, user: User) -> PreferencesRead:
    """The caller's preferences (defaults until they save some: everything in-app, nothing out)."""
    return _preferences_read(user, db.get(NotificationPreference, user.id))


def update_preferences(db: Session, *, user: User, data: PreferencesUpdate) -> PreferencesRead:
    """Change the given fields; webhook URLs are stored encrypted (they are bearer secrets)."""
    pref = db.get(NotificationPreference, user.id)
    if pref is None:
        pref = NotificationPreference(
            user_id=user.id,
            min_priority=Priority.LOW,
            categories=[c.value for c in Category],
            email_enabled=False,
            email=None,
            webhooks=[],
        )
        db.add(pref)
    given = data.given()
    if "min_priority" in given:
        pref.min_priority = given["min_priority"]
    if "categories" in given:
        pref.categories = [c.value for c in Category if c.value in set(given["categories"])]
    if "email_enabled" in given:
        pref.email_enabled = given["email_enabled"]
    if "email" in given:
        pref.email = given["email"] or None
    if data.webhooks is not None:
        pref.webhooks = [
            {
                "url": encrypt_secret(h.url, context=_webhook_context(user.id)),
                "format": h.format,
                "enabled": h.enabled,
            }
            for h in data.webhooks
        ]
        for h in data.webhooks:
            register_secret(h.url)
    pref.updated_at = utcnow()
    db.flush()
    audit.record(
        db,
        actor=user.username,
        action="notification.preferences_updated",
        target=f"user:{user.id}",
        details={"fields": sorted(given), "webhooks": len(pref.webhooks)},
    )
    return _preferences_read(user, pref)


# ---- delivery ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedDelivery:
    """One message to one channel target; `target` may hold a secret, `label` never does."""

    notification_id: int
    channel: str  # email | webhook
    key: str  # stable per target, to retry only what failed
    target: str
    label: str
    format: str | None
    message: Message


@dataclass(frozen=True)
class DeliveryOutcome:
    planned: PlannedDelivery
    result: SendResult
    skipped: bool = False


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _message(row: Notification, username: str) -> Message:
    action = row.action_url
    if action and action.startswith("/"):
        action = get_settings().public_url.rstrip("/") + action
    return Message(
        notification_id=row.id,
        title=row.title,
        message=row.message,
        type=row.type,
        priority=row.priority,
        category=row.category,
        source=row.event_type,
        created_at=_iso(row.created_at) or "",
        recipient=username,
        data_source_id=row.data_source_id,
        data_source_name=row.data_source_name,
        action_url=action,
        tags=list(row.tags),
        metadata=dict(row.meta),
        expires_at=_iso(row.expires_at),
    )


def plan_delivery(
    db: Session, *, notification_ids: Sequence[int], only: Collection[tuple[int, str]] | None = None
) -> list[PlannedDelivery]:
    """What to send for these notifications under each recipient's *current* preferences;
    `only` (notification id, target key) limits a retry to the targets that failed."""
    if not notification_ids:
        return []
    now = utcnow()
    rows = db.execute(
        select(N, User, NotificationPreference)
        .join(User, User.id == N.user_id)
        .join(NotificationPreference, NotificationPreference.user_id == N.user_id)
        .where(N.id.in_(sorted(set(notification_ids))), _visible(now), User.is_active.is_(True))
        .order_by(N.id)
    ).all()
    wanted = set(only) if only is not None else None
    plan: list[PlannedDelivery] = []
    for row, user, pref in rows:
        if not _wants_delivery(pref, row.priority, row.category):
            continue
        message = _message(row, user.username)
        address = pref.email or user.email
        if pref.email_enabled and address:
            plan.append(PlannedDelivery(row.id, "email", "email", address, address, None, message))
        for hook in pref.webhooks:
            if not hook.get("enabled"):
                continue
            url = _webhook_url(pref, hook)
            key = "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:16]
            plan.append(
                PlannedDelivery(
                    row.id, "webhook", key, url, public_target(url), hook["format"], message
                )
            )
    if wanted is not None:
        plan = [p for p in plan if (p.notification_id, p.key) in wanted]
    return plan


def send(plan: Sequence[PlannedDelivery]) -> list[DeliveryOutcome]:
    """Attempt every planned delivery once, in parallel, outside any transaction; never raises,
    so one broken channel cannot keep the others (or the in-app copy) from their job."""
    if not plan:
        return []
    smtp_url = get_settings().smtp_url
    smtp: SmtpSettings | None = None
    smtp_problem = "SMTP is not configured (set SOURCEKEEPER_SMTP_URL)"
    if smtp_url:
        try:
            smtp = SmtpSettings.from_url(smtp_url)
        except SmtpConfigError as exc:
            smtp_problem = f"SOURCEKEEPER_SMTP_URL is unusable: {exc}"

    def attempt(item: PlannedDelivery) -> DeliveryOutcome:
        if item.channel == "email" and smtp is None:
            return DeliveryOutcome(
                item, SendResult(ok=False, error=smtp_problem, retryable=False), skipped=True
            )
        try:
            channel = (
                EmailChannel(smtp)
                if item.channel == "email" and smtp is not None
                else WebhookChannel("slack" if item.format == "slack" else "generic")
            )
            return DeliveryOutcome(item, channel.send(item.message, item.target))
        except Exception as exc:  # noqa: BLE001 - a channel bug must not stop the other targets
            log.exception("notification_channel_crashed", channel=item.channel)
            return DeliveryOutcome(
                item,
                SendResult(
                    ok=False,
                    error=f"internal error in the {item.channel} channel: {type(exc).__name__}",
                ),
            )

    with ThreadPoolExecutor(max_workers=min(8, len(plan)), thread_name_prefix="notify") as pool:
        return list(pool.map(attempt, plan))


def record_deliveries(
    db: Session, outcomes: Sequence[DeliveryOutcome], *, attempt: int
) -> list[tuple[int, str]]:
    """Write the delivery log; return (notification id, target key) pairs to try again."""
    ids = {o.planned.notification_id for o in outcomes}
    existing = set(db.scalars(select(N.id).where(N.id.in_(sorted(ids))))) if ids else set()
    retry: list[tuple[int, str]] = []
    for o in outcomes:
        p = o.planned
        if o.skipped:
            status = "skipped"
        elif o.result.ok:
            status = "sent"
        elif o.result.retryable and attempt < MAX_ATTEMPTS:
            status = "retrying"
            retry.append((p.notification_id, p.key))
        else:
            status = "failed"
        log.info(
            "notification_delivery",
            notification_id=p.notification_id,
            channel=p.channel,
            target=p.label,
            attempt=attempt,
            status=status,
            error=o.result.error,
        )
        if p.notification_id in existing:  # deleted meanwhile: nothing left to log against
            db.add(
                NotificationDelivery(
                    notification_id=p.notification_id,
                    channel=p.channel,
                    target=p.label[:320],
                    attempt=attempt,
                    status=status,
                    error=o.result.error,
                    at=utcnow(),
                )
            )
    return retry


def retry_delay(attempt: int) -> int:
    """Seconds to wait before attempt `attempt + 1`."""
    return RETRY_DELAYS_SECONDS[min(attempt, len(RETRY_DELAYS_SECONDS)) - 1]


def list_deliveries(
    db: Session, *, user_id: int, notification_id: int
) -> list[NotificationDelivery]:
    """The delivery log of the caller's copy, oldest first."""
    row = get_own(db, user_id=user_id, notification_id=notification_id)
    return list(
        db.scalars(
            select(NotificationDelivery)
            .where(NotificationDelivery.notification_id == row.id)
            .order_by(NotificationDelivery.id)
        )
    )
