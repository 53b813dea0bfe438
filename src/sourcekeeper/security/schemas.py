from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from sourcekeeper.auth.schemas import GrantRead


class AccessControlReply(BaseModel):
    """Flat like the client expects (API.md §5.2): grants in `data`, the rest beside it."""

    success: Literal[True] = True
    data: list[GrantRead]
    database_access: dict[str, Any] | None
    summary: dict[str, Any]
    data_source_id: int
