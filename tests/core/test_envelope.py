"""API.md §0: one envelope for every reply, FastAPI's own errors included."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support import Caller

from sourcekeeper.core.envelope import register_handlers
from sourcekeeper.middleware import RequestContextMiddleware, clean_query_string


def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["request_id"] == resp.headers["x-request-id"]
    return body["error"]


def test_unknown_route_is_enveloped_404(client: TestClient) -> None:
    err = _error(client.get("/no/such/route"), 404, "not_found")
    assert "/no/such/route" in err["message"]


def test_wrong_method_is_enveloped_405(client: TestClient) -> None:
    _error(client.delete("/health"), 405, "method_not_allowed")


def test_validation_error_lists_each_field(client: TestClient, admin: Caller) -> None:
    resp = client.post(
        "/api/data-sources",
        headers=admin.headers,
        json={"name": "x", "source_type": "oracle", "port": False},
    )
    err = _error(resp, 422, "validation_error")
    locs = {tuple(d["loc"]) for d in err["details"]}
    assert ("body", "source_type") in locs
    assert ("body", "port") in locs  # false is not silently a number
    assert ("body", "database_name") in locs
    assert all("input" not in d for d in err["details"])


def test_unexpected_exception_is_500_without_details() -> None:
    """The same middleware and handlers as the service, on an app with a route that crashes."""
    app = FastAPI()
    register_handlers(app)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/__boom")
    def boom() -> None:
        raise RuntimeError("secret SQL: SELECT password FROM users")

    resp = TestClient(app, raise_server_exceptions=False).get("/__boom")
    err = _error(resp, 500, "internal_error")
    assert "SELECT" not in resp.text and "secret" not in resp.text
    assert err["details"] == []


def test_request_id_is_echoed(client: TestClient) -> None:
    resp = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    assert resp.json() == {"success": True, "data": {"status": "ok"}}


@pytest.mark.parametrize("value", ["undefined", "null", ""])
def test_undefined_query_values_mean_not_given(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any], value: str
) -> None:
    resp = client.get(
        f"/api/data-sources?source_type={value}&status={value}&limit={value}", headers=admin.headers
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["total"] >= 1


def test_clean_query_string_keeps_real_values() -> None:
    assert clean_query_string(b"a=1&b=undefined&c=&d=null&e=x") == b"a=1&e=x"
    assert clean_query_string(b"a=1") == b"a=1"


def test_limit_above_500_is_422(client: TestClient, admin: Caller) -> None:
    _error(
        client.get("/api/data-sources?limit=501", headers=admin.headers), 422, "validation_error"
    )


def test_oversized_body_is_413(client: TestClient, admin: Caller) -> None:
    resp = client.post(
        "/api/data-sources",
        headers={**admin.headers, "content-type": "application/json"},
        content=b"{" + b" " * (11 * 1024 * 1024) + b"}",
    )
    _error(resp, 413, "too_large")


def test_ready_checks_dependencies(client: TestClient) -> None:
    body = client.get("/ready").json()
    assert body["data"]["checks"] == {"database": "ok", "storage": "ok", "queue": "ok"}


def test_metrics_count_requests_by_route_template(
    client: TestClient, admin: Caller, sqlite_source: dict[str, Any]
) -> None:
    client.get(f"/api/data-sources/{sqlite_source['id']}", headers=admin.headers)
    text = client.get("/metrics").text
    assert (
        'sourcekeeper_http_requests_total{method="GET",route="/api/data-sources/{data_source_id}",'
        'status="200"}'
    ) in text
    assert "sourcekeeper_http_request_duration_seconds_bucket" in text
