"""One error hierarchy for the whole service; handlers in core.envelope turn it into the
contract's shape.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    """A failure the caller can understand: it carries its HTTP status and contract code."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class BadRequest(AppError):
    status_code, code = 400, "bad_request"


class Unauthenticated(AppError):
    status_code, code = 401, "unauthenticated"


class PermissionDenied(AppError):
    status_code, code = 403, "forbidden"


class NotFound(AppError):
    status_code, code = 404, "not_found"


class Conflict(AppError):
    status_code, code = 409, "conflict"


class BackupInProgress(Conflict):
    code = "backup_in_progress"


class RestoreInProgress(Conflict):
    code = "restore_in_progress"


class NotCompleted(Conflict):
    code = "not_completed"


class AlreadyFinished(Conflict):
    code = "already_finished"


class HasBackups(Conflict):
    code = "has_backups"


class TargetExists(Conflict):
    code = "target_exists"


class TooLarge(AppError):
    status_code, code = 413, "too_large"


class InvalidInput(AppError):
    """422 for a value that parses but makes no sense; `field` names it in `details`."""

    status_code, code = 422, "validation_error"

    def __init__(self, message: str, field: str | None = None) -> None:
        details = [{"loc": ["body", field], "msg": message}] if field else []
        super().__init__(message, details)


class RateLimited(AppError):
    status_code, code = 429, "rate_limited"


class Unavailable(AppError):
    """A dependency (data source, storage, queue) is down; the message says which."""

    status_code, code = 503, "unavailable"


class ConnectorFailed(AppError):
    """A data source answered with an error or could not be reached during a job."""

    status_code, code = 503, "unavailable"
