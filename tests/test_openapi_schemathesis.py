"""Schemathesis over the whole OpenAPI schema, in-process, authenticated as admin.

Every operation the schema documents gets positive and negative inputs (coverage and fuzzing phases,
bounded and seeded, so a run is reproducible and takes a minute or two). Each response must:
- not be a 5xx (``not_a_server_error``: API.md §0, "never a 500 for bad input");
- have a status code the operation documents (``status_code_conformance``);
- match the documented schema for that status (``response_schema_conformance``).

It shares the session database with the rest of the suite, so it stays out of other tests' way:
- it authenticates as an admin user of its own, not the session ``admin`` (whose token and
  preferences other tests rely on);
- ``POST /auth/logout`` is excluded (it would revoke that token mid-run; the authz matrix covers
  it);
- ids in paths and bodies are mapped onto objects made for this run (users, SQLite sources,
  grants) or onto ids that do not exist, never onto other tests' objects or an admin: a PUT of the
  admin's password would end every admin session, a DELETE could remove a source another test
  relies on;
- login attempts never name ``admin``, so failed logins cannot throttle the real admin.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from support import Caller, planted_secret

from sourcekeeper.main import create_app

SEED = 20261125
MAX_EXAMPLES = 20  # fuzzing examples per operation; the coverage phase adds its boundary cases
MISSING_ID = 2_000_000_000
MAX_ID = 2**31 - 1
EXCLUDED = [("POST", "/auth/logout")]
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@dataclass
class Pool:
    """Objects made for this run; path ids are mapped onto them (or onto MISSING_ID)."""

    token: str = ""
    data_source_id: list[int] = field(default_factory=list)
    user_id: list[int] = field(default_factory=list)
    grant_id: list[int] = field(default_factory=list)
    cases: dict[str, int] = field(default_factory=dict)  # operation label → cases sent
    statuses: dict[int, int] = field(default_factory=dict)


POOL = Pool()


def _as_id(value: Any) -> int | None:
    """The id a generated value stands for, if it is a valid one (coverage cases send strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and 1 <= value <= MAX_ID:
        return value
    return None


def _pick(ids: list[int], value: Any) -> Any:
    """Deterministic: a valid generated id becomes a pool object (2 in 3) or a missing id (1 in 3).

    Anything else (zero, negative, too large, not a number) stays as generated: it must be a 422.
    Idempotent, so a replayed case maps the same way.
    """
    number = _as_id(value)
    if number is None or number in ids or number == MISSING_ID:
        return value
    chosen = ids[number % len(ids)] if ids and number % 3 else MISSING_ID
    return str(chosen) if isinstance(value, str) else chosen


def confine(case: schemathesis.Case) -> None:
    """Keep a generated case on objects made for this run (see the module docstring).

    Done here rather than in `map_path_parameters` hooks, which the coverage phase does not apply.
    """
    params = case.path_parameters or {}
    for name, value in list(params.items()):
        ids = getattr(POOL, name, None)
        if isinstance(ids, list):
            params[name] = _pick(ids, value)
        elif name.endswith("_id") or name == "id":
            # Other resources (backups, reports, notifications, ...): nothing of theirs is made for
            # this run, so valid ids become missing ones, away from the objects other tests made.
            params[name] = _pick([], value)
    body = case.body
    if not isinstance(body, dict):
        return
    # Ids in a body (a grant's source and user) likewise.
    for name in ("data_source_id", "user_id", "grant_id"):
        if name in body:
            body[name] = _pick(getattr(POOL, name), body[name])
    # Failed logins are throttled per user: never let generated ones lock the real admin out.
    if case.operation.path == "/auth/token":
        username = body.get("username")
        if isinstance(username, str) and username.strip().lower() == "admin":
            body["username"] = f"not-{username}"


def _sqlite_source(client: TestClient, admin: Caller, sqlite_dir: Path) -> int:
    path = sqlite_dir / f"st-{secrets.token_hex(4)}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO items (name) VALUES ('x')")
    resp = client.post(
        "/api/data-sources",
        headers=admin.headers,
        json={"name": f"st-{path.stem}", "source_type": "sqlite", "database_name": str(path)},
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]["data_source"]["id"]


@pytest.fixture(scope="module")
def st_pool(
    client: TestClient, admin: Caller, make_caller: Callable[[str], Caller], sqlite_dir: Path
) -> Pool:
    # An admin of its own: whatever the run does to "its own" things (API keys, notification
    # preferences, read marks) stays off the session's `admin`.
    POOL.token = make_caller("admin").token
    for _ in range(3):
        name = f"st-{secrets.token_hex(4)}"
        resp = client.post(
            "/api/users",
            headers=admin.headers,
            json={"username": name, "password": planted_secret("stpw"), "role": "viewer"},
        )
        assert resp.status_code == 201, resp.text
        POOL.user_id.append(resp.json()["data"]["user"]["id"])
    for _ in range(3):
        POOL.data_source_id.append(_sqlite_source(client, admin, sqlite_dir))
    for source_id, user_id in zip(POOL.data_source_id, POOL.user_id, strict=True):
        resp = client.post(
            "/scan/data-sources/access-control",
            headers=admin.headers,
            json={"data_source_id": source_id, "user_id": user_id, "role": "read"},
        )
        assert resp.status_code == 201, resp.text
        POOL.grant_id.append(resp.json()["data"]["grant"]["id"])
    return POOL


def without_lifespan(app: Any) -> Any:
    """The app minus its lifespan: the session's lifespan already ran through `client`, and running
    it again would re-run migrations (Alembic's logging setup replaces the test log handlers)."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return  # returning before reading a message = "no lifespan support"
        await app(scope, receive, send)

    return asgi


# The schema is read at collection (one test per operation), from an app instance built only to
# serve /openapi.json; every request goes to the session's `app` (see the test), and
# test_schemathesis_summary checks that the session app documents each operation the same way.
# (`schemathesis.pytest.from_fixture` would load it from the `app` fixture instead, but its lazy
# runner sets `Node._nodeid`, which pytest 9.2 no longer has: AttributeError with 4.32.5.)
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "mode": "all", "deterministic": True},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
    }
)
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", without_lifespan(create_app(migrate=False)), config=CONFIG
)
for _method, _path in EXCLUDED:
    schema = schema.exclude(method=_method, path=_path)


@pytest.fixture(scope="module")
def session_app(app: Any, client: TestClient) -> Any:
    return without_lifespan(app)


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_openapi_contract(case: schemathesis.Case, st_pool: Pool, session_app: Any) -> None:
    label = case.operation.label  # unexpected-method probes count under the operation they probe
    POOL.cases[label] = POOL.cases.get(label, 0) + 1
    confine(case)
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {st_pool.token}"}, checks=CHECKS, app=session_app
    )
    POOL.statuses[response.status_code] = POOL.statuses.get(response.status_code, 0) + 1
    # Only a login may say 401 here; anywhere else it means the run's own token stopped working
    # (and every later case would test nothing but authentication).
    assert response.status_code != 401 or case.operation.path == "/auth/token", response.text


def _report(request: pytest.FixtureRequest, line: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line(line)


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    methods = ("get", "put", "post", "delete", "patch")
    return {
        (m.upper(), path) for path, item in document["paths"].items() for m in item if m in methods
    }


def test_schemathesis_summary(request: pytest.FixtureRequest, app: Any) -> None:
    """Quote the number of generated cases (shown without -s) and make sure the run was real."""
    total = sum(POOL.cases.values())
    statuses = ", ".join(f"{code}×{n}" for code, n in sorted(POOL.statuses.items()))
    _report(
        request,
        f"schemathesis: {total} cases over {len(POOL.cases)} operations "
        f"(seed {SEED}, max_examples {MAX_EXAMPLES}); statuses {statuses}",
    )
    # The schema read at collection is what the session app documents (the session app may have
    # gained routes a test registered at run time; those are not the service's).
    served = app.openapi()
    for path, item in schema.raw_schema["paths"].items():
        assert served["paths"].get(path) == item, f"the session app documents {path} differently"
    exercised = {tuple(label.split(" ", 1)) for label in POOL.cases}
    never = _operations(schema.raw_schema) - set(EXCLUDED) - exercised
    assert not never, f"operations never exercised: {sorted(never)}"
    assert any(200 <= code < 300 for code in POOL.statuses), "no case ever succeeded"
