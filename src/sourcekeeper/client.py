"""A small HTTP client of the sourcekeeper API, used by the CLI's backup and restore commands.

It speaks only the public contract (API.md), so it works against any running service, local or
remote, and never touches the metadata database.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
FINISHED = frozenset({"completed", "failed", "cancelled"})


class ApiError(Exception):
    """An error reply of the service (or no reply at all), with the service's own message."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or []

    def __str__(self) -> str:
        """The service's message, plus each field's own complaint unless the message says it."""
        extra = []
        for detail in self.details:
            field = ".".join(str(p) for p in detail.get("loc", [])[1:])
            msg = str(detail.get("msg") or "")
            if msg and msg not in self.message:
                extra.append(f"{field}: {msg}" if field else msg)
        text = f"{self.message} ({'; '.join(extra)})" if extra else self.message
        return f"{text} [{self.status} {self.code}]" if self.status else text


class Client:
    """One authenticated session against one service."""

    def __init__(
        self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- transport ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
    ) -> Any:
        """Send one request and return the envelope's `data`; raise ApiError otherwise."""
        try:
            resp = self._http.request(
                method,
                path,
                json=json,
                data=form,
                params={k: v for k, v in (params or {}).items() if v is not None},
            )
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach sourcekeeper at {self.url}: {exc}") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.is_success and isinstance(body, dict) and body.get("success"):
            return body.get("data")
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            raise ApiError(
                str(error.get("message") or resp.reason_phrase),
                status=resp.status_code,
                code=error.get("code"),
                details=error.get("details") or [],
            )
        raise ApiError(
            f"unexpected reply {resp.status_code} {resp.reason_phrase} from {self.url}",
            status=resp.status_code,
        )

    def login(self, username: str, password: str) -> str:
        """Exchange a username and password for a session token, used from then on."""
        form = {"username": username, "password": password}
        data = self.request("POST", "/auth/token", form=form)
        token = str(data["access_token"])
        self._http.headers["Authorization"] = f"Bearer {token}"
        return token

    # ---- data sources ---------------------------------------------------------------------------

    def resolve_source(self, ref: str) -> dict[str, Any]:
        """A data source by id, or by exact (case-insensitive) name."""
        if ref.isdigit():
            return dict(self.request("GET", f"/api/data-sources/{int(ref)}")["data_source"])
        found = self.request("GET", "/api/data-sources", params={"search": ref, "limit": 500})
        matches = [s for s in found["data_sources"] if s["name"].lower() == ref.lower()]
        if not matches:
            raise ApiError(f"no data source named {ref!r} is visible to you", code="not_found")
        return dict(matches[0])

    # ---- backups and restores ----------------------------------------------------------------

    def list_backups(
        self, source_id: int, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        data = self.request(
            "GET",
            f"/api/data-sources/{source_id}/backups",
            params={"status": status, "limit": limit, "offset": offset},
        )
        return list(data["backups"]), int(data["total"])

    def start_backup(
        self,
        source_id: int,
        *,
        name: str | None = None,
        retention_days: int | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        body = {"name": name, "retention_days": retention_days, "description": description}
        data = self.request("POST", f"/api/data-sources/{source_id}/backups", json=body)
        return dict(data["backup"])

    def get_backup(self, source_id: int, backup_id: int) -> dict[str, Any]:
        path = f"/api/data-sources/{source_id}/backups/{backup_id}"
        return dict(self.request("GET", path)["backup"])

    def verify_backup(self, source_id: int, backup_id: int) -> dict[str, Any]:
        path = f"/api/data-sources/{source_id}/backups/{backup_id}/verify"
        return dict(self.request("POST", path)["backup"])

    def start_restore(self, source_id: int, backup_id: int, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/api/data-sources/{source_id}/backups/{backup_id}/restore"
        return dict(self.request("POST", path, json=body)["restore"])

    def get_restore(self, source_id: int, restore_id: int) -> dict[str, Any]:
        path = f"/api/data-sources/{source_id}/restores/{restore_id}"
        return dict(self.request("GET", path)["restore"])
