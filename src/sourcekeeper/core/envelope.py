"""The reply envelope of API.md §0 and the handlers that give every error the same shape."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from sourcekeeper.core.errors import AppError
from sourcekeeper.core.schemas import Schema

T = TypeVar("T")


class Envelope(Schema, Generic[T]):
    success: Literal[True] = True
    data: T


def ok(data: T) -> Envelope[T]:
    return Envelope[T](data=data)


class Deleted(Schema):
    id: int
    deleted: Literal[True] = True


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = []


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    error: ErrorBody
    request_id: str | None = None


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request.state.error_code = code
    body = ErrorEnvelope(
        error=ErrorBody(code=code, message=message, details=details or []),
        request_id=getattr(request.state, "request_id", None),
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Keep loc, msg and type; drop `input` and `ctx`, which can echo a submitted password."""
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in errors
    ]


def register_handlers(app: FastAPI) -> None:
    """Map our errors, FastAPI's own 404/405/422 and unexpected exceptions onto one envelope."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return error_response(request, exc.status_code, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _clean_validation_errors(exc.errors())
        fields = ", ".join(".".join(str(p) for p in d["loc"][1:]) or str(d["loc"]) for d in details)
        return error_response(
            request, 422, "validation_error", f"Invalid input: {fields}".strip(), details
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"No route matches {request.method} {request.url.path}"
        return error_response(request, exc.status_code, code, message, headers=exc.headers)

    # Unexpected exceptions are answered by middleware.RequestContextMiddleware (500, request id
    # only).


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error envelope."""
    return {
        s: {"model": ErrorEnvelope, "description": _HTTP_CODES.get(s, "error")} for s in statuses
    }


# Every protected route may answer these; routers declare them once.
COMMON_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 500, 503)
