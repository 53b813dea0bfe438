"""One paginator: `limit` (default 50, at most 500) and `offset`, with the total."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

M = TypeVar("M")

MAX_LIMIT = 500
# Bounded so a huge offset is a 422, not an integer overflow in the database driver (a 500).
MAX_OFFSET = 2**31 - 1


class PageParams(BaseModel):
    limit: int = Field(50, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


def paginate(db: Session, stmt: Select[Any], page: PageParams) -> tuple[list[Any], int]:
    """Run `stmt` for one page and count all rows it matches."""
    total = db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    items = list(db.scalars(stmt.limit(page.limit).offset(page.offset)))
    return items, total
