"""The authorization matrix, generated from the app's own route table.

Every route × {anonymous, viewer, data_analyst, data_steward, admin, no_grant} is one test case
with one exact expectation. The rule of a route is *discovered*, never listed by hand:

- a dependency whose callable carries a ``permission`` attribute: ``auth.deps.require(perm)``
  (a global permission) or ``datasources.deps.data_source_for(perm)`` (a per-source permission;
  its checker is named ``data_source_with_*``);
- or ``openapi_extra["x-permission"]`` for routes that find their source in the body or through
  another resource (a grant) and check inside the handler.

A protected route with neither must be in ``AUTHENTICATED_ONLY``; otherwise the discovery test and
the route's cells fail, so a new route without a rule cannot slip in.

Expectations (API.md §1, core/permissions.py):
- anonymous → 401 ``unauthenticated``;
- global permission → allowed iff ``ROLE_GLOBAL[role]`` holds it, else 403 ``forbidden`` naming it;
- per-source permission → admin allowed; a non-admin holding an ``admin`` grant on the source →
  allowed iff ``source_permissions(role, "admin", [])`` (= ``ROLE_SOURCE_CAP[role]``) holds it,
  else 403; ``no_grant`` (a data_steward without any grant on the source) → 404, the source's
  existence hidden.

"Allowed" means authorization passed: 2xx, 409, 422, or a 404 that comes from a resource the cell
deliberately named by a nonexistent id (never the hidden-source 404 "Data source N does not exist").

Order of checks, verified by this file: FastAPI runs dependencies before it validates the body, so
a dependency-based denial (401/403/404) is returned even for an invalid body; checks made inside
the handler (``x-permission``) come after validation, so an invalid body is a 422 for everyone.
Every cell therefore sends a *valid* body built from the route's request model, and each denied
cell also probes with an invalid body to pin that order down.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi import params as fastapi_params
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter
from support import Caller, planted_secret

from sourcekeeper.auth.deps import get_current_user
from sourcekeeper.core.permissions import (
    GLOBAL_PERMS,
    ROLE_GLOBAL,
    SOURCE_PERMS,
    Perm,
    Role,
    source_permissions,
)
from sourcekeeper.main import create_app

# ---- the rules that are policy, not discovery ---------------------------------------------------

# API.md §0: the only routes reachable without credentials (method None = any method).
PUBLIC: set[tuple[str | None, str]] = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("POST", "/auth/token"),
    ("GET", "/metrics"),
    (None, "/docs"),
    (None, "/docs/oauth2-redirect"),
    (None, "/redoc"),
    (None, "/openapi.json"),
}

# Protected routes that need a logged-in user and nothing more. Each entry is a decision: the route
# acts only on the caller's own things, or filters what it returns by the caller's grants.
AUTHENTICATED_ONLY: dict[tuple[str, str], str] = {
    ("GET", "/auth/me"): "the caller's own profile",
    ("POST", "/auth/logout"): "revokes the caller's own token",
    ("POST", "/auth/api-keys"): "creates a key for the caller",
    ("GET", "/api/data-sources"): "lists only the sources the caller holds a grant on",
    ("GET", "/api/report-templates"): "built-in templates, no source involved (API.md §6)",
}

# Routes that end the session they are called with: their cells run on a throwaway API key.
ENDS_OWN_SESSION = {("POST", "/auth/logout")}

CALLERS = ("anonymous", "viewer", "data_analyst", "data_steward", "admin", "no_grant")
NO_GRANT_ROLE = Role.DATA_STEWARD  # the widest non-admin cap, so its 404 is due to the grant alone
MISSING_ID = 2_000_000_000  # fits the 32-bit id column; never created in a test session
HIDDEN_SOURCE = re.compile(r"^Data source (\d+) does not exist$")


# ---- rule discovery -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    perm: Perm
    scope: str  # "global" | "source"
    via: str  # the checker's name, or "x-permission"

    @property
    def in_handler(self) -> bool:
        return self.via == "x-permission"


@dataclass
class RouteInfo:
    method: str
    path: str
    route: Any  # APIRoute, or FastAPI's RouteContext wrapping one (same attributes)
    public: bool
    authenticated: bool
    rules: list[Rule] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def auth_only(self) -> bool:
        return (self.method, self.path) in AUTHENTICATED_ONLY

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{([^}:]+)(?::[^}]*)?}", self.path)


def _all_routes(app: Any) -> Iterator[Any]:
    """Every route of the app as mounted (prefixes and router dependencies applied).

    FastAPI ≥ 0.16x keeps included routers lazily in ``app.routes``; ``iter_route_contexts``
    flattens them into route contexts that expose the effective path, methods, dependant and
    openapi_extra of the route they wrap. Older versions already list flat route objects.
    """
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    yield from flatten(app.routes) if flatten else app.routes


def _is_api_route(route: Any) -> bool:
    return isinstance(getattr(route, "original_route", route), APIRoute)


def _walk_calls(dependant: Any) -> Iterator[Callable[..., Any]]:
    """Dependency callables in the order FastAPI calls them (sub-dependencies first), once each."""
    seen: set[int] = set()

    def visit(dep: Any) -> Iterator[Callable[..., Any]]:
        for sub in dep.dependencies:
            yield from visit(sub)
            if sub.call is not None and id(sub.call) not in seen:
                seen.add(id(sub.call))
                yield sub.call

    yield from visit(dependant)


def _scope_of(perm: Perm) -> str:
    return "source" if perm in SOURCE_PERMS else "global"


def discover(app: Any) -> list[RouteInfo]:
    out: list[RouteInfo] = []
    public_paths = {p for m, p in PUBLIC if m is None}
    for route in _all_routes(app):
        if not _is_api_route(route):
            # Plain Starlette routes (the docs) cannot carry our auth dependency: public or a bug.
            for method in sorted(route.methods or {"GET"}):
                info = RouteInfo(
                    method=method,
                    path=route.path,
                    route=route,
                    public=route.path in public_paths,
                    authenticated=False,
                )
                if not info.public:
                    info.problems.append("a non-FastAPI route outside the public list")
                out.append(info)
            continue
        for method in sorted(route.methods or []):
            info = RouteInfo(
                method=method,
                path=route.path,
                route=route,
                public=(method, route.path) in PUBLIC or route.path in public_paths,
                authenticated=False,
            )
            for call in _walk_calls(route.dependant):
                if call is get_current_user:
                    info.authenticated = True
                perm = getattr(call, "permission", None)
                if perm is None:
                    continue
                name = getattr(call, "__name__", repr(call))
                perm = Perm(perm)
                if name.startswith("data_source_with_") and perm not in SOURCE_PERMS:
                    info.problems.append(
                        f"{name} checks {perm}, which is not a per-source permission"
                    )
                if name.startswith("require_") and perm not in GLOBAL_PERMS:
                    info.problems.append(
                        f"{name} checks the per-source permission {perm} globally: no non-admin "
                        "ever holds it globally; use datasources.deps.data_source_for"
                    )
                info.rules.append(Rule(perm, _scope_of(perm), name))
            extra = (route.openapi_extra or {}).get("x-permission")
            if extra:
                perm = Perm(extra)
                info.rules.append(Rule(perm, _scope_of(perm), "x-permission"))
            if not info.public:
                if not info.authenticated:
                    info.problems.append(
                        "does not depend on get_current_user (mount it on `protected`)"
                    )
                if not info.rules and not info.auth_only:
                    info.problems.append(
                        "no discoverable permission rule (require(...), data_source_for(...) or "
                        "openapi_extra x-permission) and not in AUTHENTICATED_ONLY"
                    )
            out.append(info)
    return out


# Built once at collection, only to read the route table; the tests run against the session app.
ROUTES = discover(create_app(migrate=False))
PROTECTED = [r for r in ROUTES if not r.public]


# ---- expectations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    kind: str  # "allowed" | "unauthenticated" | "forbidden" | "hidden"
    rule: Rule | None = None

    @property
    def status(self) -> int | None:
        return {"unauthenticated": 401, "forbidden": 403, "hidden": 404}.get(self.kind)


def role_of(caller: str) -> Role:
    return NO_GRANT_ROLE if caller == "no_grant" else Role(caller)


def expected(route: RouteInfo, caller: str) -> Expect:
    if caller == "anonymous":
        return Expect("unauthenticated")
    role = role_of(caller)
    for rule in route.rules:
        if rule.scope == "global":
            if rule.perm not in ROLE_GLOBAL[role]:
                return Expect("forbidden", rule)
        elif role is not Role.ADMIN:
            if caller == "no_grant":
                return Expect("hidden", rule)
            if rule.perm not in source_permissions(role, "admin", []):
                return Expect("forbidden", rule)
    return Expect("allowed")


# ---- the world the cells act on -----------------------------------------------------------------


def _new_sqlite_file(sqlite_dir: Path) -> Path:
    path = sqlite_dir / f"authz-{secrets.token_hex(4)}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO items (name) VALUES (?)", [("a",), ("b",)])
    return path


@dataclass
class World:
    client: TestClient
    admin: Caller
    callers: dict[str, Caller]
    sqlite_dir: Path
    source_id: int = 0
    grant_id: int = 0

    def grant(self, source_id: int, user_id: int, role: str = "admin") -> int:
        resp = self.client.post(
            "/scan/data-sources/access-control",
            headers=self.admin.headers,
            json={"data_source_id": source_id, "user_id": user_id, "role": role},
        )
        assert resp.status_code == 201, resp.text
        return resp.json()["data"]["grant"]["id"]

    def grant_callers(self, source_id: int) -> None:
        """An `admin` grant for every non-admin caller except no_grant."""
        for name, caller in self.callers.items():
            if name not in ("admin", "no_grant"):
                self.grant(source_id, caller.id)

    def new_source(self) -> int:
        path = _new_sqlite_file(self.sqlite_dir)
        resp = self.client.post(
            "/api/data-sources",
            headers=self.admin.headers,
            json={
                "name": f"authz-{path.stem}",
                "source_type": "sqlite",
                "database_name": str(path),
            },
        )
        assert resp.status_code == 201, resp.text
        return resp.json()["data"]["data_source"]["id"]

    def new_user(self) -> int:
        name = f"authz-{secrets.token_hex(4)}"
        resp = self.client.post(
            "/api/users",
            headers=self.admin.headers,
            json={
                "username": name,
                "email": f"{name}@example.org",
                "password": planted_secret("authzpw"),
                "role": "viewer",
            },
        )
        assert resp.status_code == 201, resp.text
        return resp.json()["data"]["user"]["id"]

    def api_key(self, caller: Caller) -> str:
        resp = self.client.post(
            "/auth/api-keys", headers=caller.headers, json={"name": "authz-matrix"}
        )
        assert resp.status_code == 201, resp.text
        return resp.json()["data"]["key"]


@pytest.fixture(scope="module")
def world(
    app: Any,
    client: TestClient,
    admin: Caller,
    make_caller: Callable[[str], Caller],
    sqlite_dir: Path,
) -> World:
    # A client of its own (the session's lifespan has run via `client`), so clearing its cookie jar
    # between cells does not touch the shared one.
    client = TestClient(app)
    callers = {"admin": admin, "no_grant": make_caller(NO_GRANT_ROLE.value)}
    for role in (Role.VIEWER, Role.DATA_ANALYST, Role.DATA_STEWARD):
        callers[role.value] = make_caller(role.value)
    w = World(client=client, admin=admin, callers=callers, sqlite_dir=sqlite_dir)
    w.source_id = w.new_source()
    w.grant_callers(w.source_id)
    # A grant of its own for the grant routes (PUT changes, DELETE revokes it; both are idempotent).
    w.grant_id = w.grant(w.source_id, w.new_user(), role="read")
    return w


# ---- request building ---------------------------------------------------------------------------


@dataclass
class Cell:
    source_id: int
    used_missing_id: bool = False


# Path parameter → how to get a real id. Anything else gets MISSING_ID, so an allowed request meets
# a 404 from the resource itself. Add a provider when a route finds its source through a new
# resource (as the grant routes do): with a missing id it could not tell allowed from denied.
PATH_IDS: dict[str, Callable[[World, Cell, str], int]] = {
    "data_source_id": lambda w, c, m: c.source_id,
    "user_id": lambda w, c, m: w.new_user(),  # a throwaway user: PUT/DELETE may change or delete it
    "grant_id": lambda w, c, m: w.grant_id,
}

# Body fields that need a meaningful value rather than the schema's minimum.
BODY_VALUES: dict[str, Callable[[World, Cell], Any]] = {
    "data_source_id": lambda w, c: c.source_id,
    "user_id": lambda w, c: w.new_user(),
    "username": lambda w, c: f"authz-{secrets.token_hex(4)}",
    "password": lambda w, c: planted_secret("authzpw"),
    "email": lambda w, c: f"authz-{secrets.token_hex(4)}@example.org",
    "name": lambda w, c: f"authz-{secrets.token_hex(4)}",
    "source_type": lambda w, c: "sqlite",
    "database_name": lambda w, c: str(_new_sqlite_file(w.sqlite_dir)),
    "cron_expression": lambda w, c: "0 3 * * *",
    "timezone": lambda w, c: "UTC",
    "frequency": lambda w, c: "daily",
}
# Optional fields still worth sending: without them the request is refused on its merits.
ALWAYS_SEND = {"user_id"}


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def minimal_value(schema: dict[str, Any], defs: dict[str, Any], w: World, c: Cell) -> Any:
    """The smallest value that satisfies a JSON schema (only what FastAPI's model needs)."""
    schema = _resolve(schema, defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if _resolve(o, defs).get("type") != "null"]
            return minimal_value(options[0], defs, w, c) if options else None
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, defs))
        return minimal_value(merged, defs, w, c)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        wanted = [k for k in props if k in schema.get("required", []) or k in ALWAYS_SEND]
        return {
            k: BODY_VALUES[k](w, c) if k in BODY_VALUES else minimal_value(props[k], defs, w, c)
            for k in wanted
        }
    if kind == "array":
        return [
            minimal_value(schema.get("items", {}), defs, w, c)
            for _ in range(schema.get("minItems", 0))
        ]
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return (datetime.now(UTC) + timedelta(days=1)).isoformat()
        if fmt == "date":
            return (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
        if fmt == "email":
            return "authz@example.org"
        size = max(schema.get("minLength", 1), 1)
        return "a" * min(size, schema.get("maxLength", size))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return True
    return None


def _json_schema(annotation: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = TypeAdapter(annotation).json_schema(mode="validation")
    return schema, schema.get("$defs", {})


@dataclass
class Request:
    method: str
    url: str
    json: Any = None
    data: Any = None
    query: dict[str, Any] = field(default_factory=dict)

    def send(self, client: TestClient, headers: dict[str, str], *, json: Any = ...) -> Any:
        # A login through a TestClient leaves its session_token cookie in the client's jar, which
        # would silently authenticate an "anonymous" request: every cell starts with an empty jar.
        client.cookies.clear()
        body = self.json if json is ... else json
        kwargs: dict[str, Any] = {"headers": headers, "params": self.query}
        if self.data is not None and json is ...:
            kwargs["data"] = self.data
        elif body is not None:
            kwargs["json"] = body
        return client.request(self.method, self.url, **kwargs)


def _required_query_params(dependant: Any) -> Iterator[tuple[str, Any]]:
    """(name, type) of every required query parameter, models used as `Query()` expanded."""
    for param in dependant.query_params:
        annotation = param.field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name, info in annotation.model_fields.items():
                if info.is_required():
                    yield info.alias or name, info.annotation
        elif param.field_info.is_required():
            yield param.alias, annotation
    for sub in dependant.dependencies:
        yield from _required_query_params(sub)


def build_request(route: RouteInfo, w: World, c: Cell) -> Request:
    url = route.path
    for name in route.path_params:
        provider = PATH_IDS.get(name)
        if provider is None:
            c.used_missing_id = True
            value = MISSING_ID
        else:
            value = provider(w, c, route.method)
        url = re.sub(r"{" + re.escape(name) + r"(?::[^}]*)?}", str(value), url)
    req = Request(route.method, url)
    for name, annotation in _required_query_params(route.route.dependant):
        schema, defs = _json_schema(annotation)
        req.query[name] = minimal_value(schema, defs, w, c)
    body_field = getattr(route.route, "body_field", None)
    if body_field is not None:
        schema, defs = _json_schema(body_field.field_info.annotation)
        body = minimal_value(schema, defs, w, c)
        if isinstance(body_field.field_info, fastapi_params.Form):
            req.data = body
        else:
            req.json = body
    return req


def has_body(route: RouteInfo) -> bool:
    return getattr(route.route, "body_field", None) is not None


def report_line(request: pytest.FixtureRequest, line: str) -> None:
    """Write past pytest's output capture, so the line shows without -s."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line(line)


# ---- the tests ----------------------------------------------------------------------------------


def test_route_table_is_read() -> None:
    """Guards the discovery itself: an empty or rule-less table would make the matrix vacuous."""
    labels = {r.label for r in ROUTES}
    assert {"GET /auth/me", "GET /api/data-sources/{data_source_id}", "GET /api/users"} <= labels
    rules = {r.label: r.rules for r in ROUTES}
    assert rules["GET /api/users"] == [Rule(Perm.USER_MANAGE, "global", "require_user_manage")]
    assert rules["GET /api/data-sources/{data_source_id}"] == [
        Rule(Perm.DATASOURCE_VIEW, "source", "data_source_with_datasource_view")
    ]
    assert rules["POST /scan/data-sources/access-control"] == [
        Rule(Perm.ACCESS_CONTROL_MANAGE, "source", "x-permission")
    ]
    assert not any(r.public for r in ROUTES if r.label.startswith(("GET /api/", "POST /api/")))


def test_every_protected_route_has_a_rule() -> None:
    problems = [f"{r.label}: {p}" for r in ROUTES for p in r.problems]
    assert not problems, "Routes without a sound authorization rule:\n" + "\n".join(problems)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.public], ids=lambda r: r.label)
def test_public_route_needs_no_credentials(client: TestClient, route: RouteInfo) -> None:
    url = re.sub(r"{[^}]+}", "1", route.path)
    client = TestClient(client.app)  # an empty cookie jar: the shared client may hold a session
    resp = client.request(route.method, url, json={} if route.method in ("POST", "PUT") else None)
    assert resp.status_code not in (401, 403), (
        f"{route.label} is public but answered {resp.status_code}"
    )
    assert resp.status_code < 500, resp.text


OUTCOMES: list[tuple[str, str, int]] = []  # (cell id, expectation, status) of every cell that ran

MATRIX = [
    pytest.param(route, caller, id=f"{route.label} {caller}")
    for route in PROTECTED
    for caller in CALLERS
]


@pytest.mark.parametrize(("route", "caller"), MATRIX)
def test_authz_matrix(
    route: RouteInfo, caller: str, world: World, request: pytest.FixtureRequest
) -> None:
    if route.problems and caller != "anonymous":
        pytest.fail(f"{route.label} has no sound rule: {'; '.join(route.problems)}")
    expect = expected(route, caller)
    # Destructive calls on a source get a source of their own, so the shared one stays intact.
    source_id = world.source_id
    if route.method == "DELETE" and "data_source_id" in route.path_params:
        source_id = request.getfixturevalue("sqlite_source")["id"]
        world.grant_callers(source_id)
    cell = Cell(source_id=source_id)
    req = build_request(route, world, cell)

    if caller == "anonymous":
        headers: dict[str, str] = {}
    elif (route.method, route.path) in ENDS_OWN_SESSION:
        headers = {"Authorization": f"Bearer {world.api_key(world.callers[caller])}"}
    else:
        headers = world.callers[caller].headers

    resp = req.send(world.client, headers)
    OUTCOMES.append((f"{route.label} {caller}", expect.kind, resp.status_code))
    where = f"{route.label} as {caller} → {resp.status_code} {resp.text[:300]}"
    is_json = resp.headers.get("content-type", "").startswith("application/json")
    body = resp.json() if is_json else {}
    error = body.get("error") or {}
    assert resp.status_code < 500, where

    if expect.kind == "allowed":
        assert resp.status_code not in (401, 403), where
        assert 200 <= resp.status_code < 300 or resp.status_code in (404, 409, 422), where
        if resp.status_code == 404:
            hidden = HIDDEN_SOURCE.match(error.get("message", ""))
            assert not hidden, f"allowed, but the source was hidden: {where}"
            assert cell.used_missing_id, f"allowed and every id was real, yet 404: {where}"
        return

    assert resp.status_code == expect.status, where
    if expect.kind == "unauthenticated":
        assert error.get("code") == "unauthenticated", where
        return
    if expect.kind == "forbidden":
        assert error.get("code") == "forbidden", where
        assert expect.rule is not None and expect.rule.perm.value in error.get("message", ""), where
    else:  # hidden
        assert error.get("code") == "not_found", where
        source_named = "data_source_id" in route.path_params or (
            isinstance(req.json, dict) and "data_source_id" in req.json
        )
        if source_named:
            assert error.get("message") == f"Data source {source_id} does not exist", where

    # Order of checks: dependencies run before body validation, handler checks after it.
    if has_body(route) and req.data is None:
        probe = req.send(world.client, headers, json=[])
        assert expect.rule is not None
        want = 422 if expect.rule.in_handler else expect.status
        why = (
            "checked in the handler, after validation"
            if want == 422
            else "checked by a dependency, before validation"
        )
        assert probe.status_code == want, (
            f"{route.label} as {caller} with an invalid body → {probe.status_code}, "
            f"expected {want} ({why})"
        )


def test_matrix_summary(request: pytest.FixtureRequest) -> None:
    """One line in the terminal (with or without -s): how many cells ran and what they expected."""
    kinds = {
        k: sum(1 for _, kind, _ in OUTCOMES if kind == k)
        for k in ("allowed", "unauthenticated", "forbidden", "hidden")
    }
    line = (
        f"authz matrix: {len(OUTCOMES)} of {len(MATRIX)} cells ran over {len(PROTECTED)} "
        f"protected routes × {len(CALLERS)} callers — "
        + ", ".join(f"{v} {k}" for k, v in kinds.items())
    )
    report_line(request, line)
    if len(OUTCOMES) == len(MATRIX):  # the whole matrix ran (not a -k selection)
        assert all(k for k in kinds.values()), line
