"""The permission catalogue of API.md §1: roles, grant roles, grant flags and how they combine."""

from __future__ import annotations

from enum import StrEnum


class Perm(StrEnum):
    DATASOURCE_VIEW = "datasource.view"
    DATASOURCE_MANAGE = "datasource.manage"
    DATASOURCE_DELETE = "datasource.delete"
    BACKUP_VIEW = "backup.view"
    BACKUP_CREATE = "backup.create"
    BACKUP_RESTORE = "backup.restore"
    BACKUP_DELETE = "backup.delete"
    BACKUP_SCHEDULE = "backup.schedule"
    REPORT_VIEW = "report.view"
    REPORT_GENERATE = "report.generate"
    REPORT_DELETE = "report.delete"
    REPORT_SCHEDULE = "report.schedule"
    SECURITY_VIEW = "security.view"
    SECURITY_SCAN = "security.scan"
    ACCESS_CONTROL_VIEW = "access_control.view"
    ACCESS_CONTROL_MANAGE = "access_control.manage"
    # global
    DATASOURCE_CREATE = "datasource.create"
    NOTIFICATION_VIEW = "notification.view"
    NOTIFICATION_DELETE = "notification.delete"
    AUDITLOG_VIEW = "auditlog.view"
    USER_MANAGE = "user.manage"


class Role(StrEnum):
    ADMIN = "admin"
    DATA_STEWARD = "data_steward"
    DATA_ANALYST = "data_analyst"
    VIEWER = "viewer"


class GrantRole(StrEnum):
    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"
    ADMIN = "admin"


class GrantFlag(StrEnum):
    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"
    ADMIN = "admin"
    SCAN = "scan"
    CONFIGURE = "configure"


GLOBAL_PERMS = frozenset(
    {
        Perm.DATASOURCE_CREATE,
        Perm.NOTIFICATION_VIEW,
        Perm.NOTIFICATION_DELETE,
        Perm.AUDITLOG_VIEW,
        Perm.USER_MANAGE,
    }
)
SOURCE_PERMS = frozenset(Perm) - GLOBAL_PERMS
VIEW_PERMS = frozenset(p for p in SOURCE_PERMS if p.endswith(".view"))

ROLE_GLOBAL: dict[Role, frozenset[Perm]] = {
    Role.ADMIN: GLOBAL_PERMS,
    Role.DATA_STEWARD: frozenset(
        {Perm.DATASOURCE_CREATE, Perm.NOTIFICATION_VIEW, Perm.NOTIFICATION_DELETE}
    ),
    Role.DATA_ANALYST: frozenset({Perm.NOTIFICATION_VIEW, Perm.NOTIFICATION_DELETE}),
    Role.VIEWER: frozenset({Perm.NOTIFICATION_VIEW}),
}

ROLE_SOURCE_CAP: dict[Role, frozenset[Perm]] = {
    Role.ADMIN: SOURCE_PERMS,
    Role.DATA_STEWARD: SOURCE_PERMS,
    Role.DATA_ANALYST: VIEW_PERMS | {Perm.REPORT_GENERATE, Perm.REPORT_SCHEDULE},
    Role.VIEWER: VIEW_PERMS,
}

_WRITE = VIEW_PERMS | {
    Perm.BACKUP_CREATE,
    Perm.BACKUP_SCHEDULE,
    Perm.REPORT_GENERATE,
    Perm.REPORT_SCHEDULE,
    Perm.DATASOURCE_MANAGE,
}
_EXECUTE = _WRITE | {Perm.BACKUP_RESTORE, Perm.SECURITY_SCAN}

GRANT_ROLE_PERMS: dict[GrantRole, frozenset[Perm]] = {
    GrantRole.READ: VIEW_PERMS,
    GrantRole.WRITE: frozenset(_WRITE),
    GrantRole.EXECUTE: frozenset(_EXECUTE),
    GrantRole.ADMIN: SOURCE_PERMS,
}

GRANT_FLAG_PERMS: dict[GrantFlag, frozenset[Perm]] = {
    GrantFlag.READ: VIEW_PERMS,
    GrantFlag.WRITE: frozenset({Perm.DATASOURCE_MANAGE}),
    GrantFlag.EXECUTE: frozenset({Perm.BACKUP_CREATE, Perm.BACKUP_RESTORE}),
    GrantFlag.SCAN: frozenset({Perm.SECURITY_SCAN}),
    GrantFlag.CONFIGURE: frozenset({Perm.BACKUP_SCHEDULE, Perm.REPORT_SCHEDULE}),
    GrantFlag.ADMIN: SOURCE_PERMS,
}


def global_permissions(role: str) -> frozenset[Perm]:
    return ROLE_GLOBAL[Role(role)]


def source_permissions(role: str, grant_role: str | None, flags: list[str]) -> frozenset[Perm]:
    """Effective permissions on one source: (what the grant gives) ∩ (what the global role
    allows).
    """
    user_role = Role(role)
    if user_role is Role.ADMIN:
        return SOURCE_PERMS
    if grant_role is None:
        return frozenset()
    given = set(GRANT_ROLE_PERMS[GrantRole(grant_role)])
    for flag in flags:
        given |= GRANT_FLAG_PERMS[GrantFlag(flag)]
    return frozenset(given) & ROLE_SOURCE_CAP[user_role]
