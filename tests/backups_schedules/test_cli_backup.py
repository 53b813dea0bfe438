"""`sourcekeeper backup create|list|verify` and `sourcekeeper restore` against a running service."""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from live_support import LiveService
from typer.testing import CliRunner, Result

from sourcekeeper.cli import app


def cli(
    live: LiveService,
    *args: str,
    token: str | None = "default",
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> Result:
    """Invoke the CLI in-process; it reaches the live service over HTTP only."""
    environ: dict[str, str | None] = {
        "SOURCEKEEPER_TOKEN": None,
        "SOURCEKEEPER_PASSWORD": None,
        "SOURCEKEEPER_USERNAME": None,
        "SOURCEKEEPER_URL": live.url,
    }
    if token is not None:
        environ["SOURCEKEEPER_TOKEN"] = live.token if token == "default" else token
    environ.update(env or {})
    return CliRunner().invoke(app, list(args), env=environ, input=input)


@pytest.fixture
def source(live_service: LiveService) -> dict[str, Any]:
    live_service.sqlite_dir.mkdir(parents=True, exist_ok=True)
    path = live_service.sqlite_dir / f"cli-{secrets.token_hex(4)}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany(
            "INSERT INTO notes (body) VALUES (?)", [(f"note {i} é✓",) for i in range(500)]
        )
    ds = live_service.api(
        "POST",
        "/api/data-sources",
        json={"name": path.stem, "source_type": "sqlite", "database_name": str(path)},
    )["data_source"]
    return dict(ds, path=path)


def test_backup_create_waits_and_reports(live_service: LiveService, source: dict[str, Any]) -> None:
    result = cli(
        live_service,
        "backup",
        "create",
        source["name"],
        "--name",
        "from the cli",
        "--retention-days",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert f"of '{source['name']}' started" in result.stdout
    assert "completed" in result.stdout
    backups = live_service.api("GET", f"/api/data-sources/{source['id']}/backups")["backups"]
    assert [(b["name"], b["status"], b["retention_days"]) for b in backups] == [
        ("from the cli", "completed", 3)
    ]
    assert f"at {backups[0]['location']}" in result.stdout


def test_backup_list_json_and_table(live_service: LiveService, source: dict[str, Any]) -> None:
    assert cli(live_service, "backup", "create", str(source["id"])).exit_code == 0
    result = cli(live_service, "backup", "list", str(source["id"]), "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed["total"] == 1
    assert listed["backups"][0]["status"] == "completed"
    table = cli(live_service, "backup", "list", source["name"])
    assert table.exit_code == 0, table.output
    assert str(listed["backups"][0]["id"]) in table.stdout
    assert "completed" in table.stdout


def test_no_wait_returns_at_once_with_the_queued_backup(
    live_service: LiveService, source: dict[str, Any]
) -> None:
    result = cli(live_service, "backup", "create", str(source["id"]), "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    backup = json.loads(result.stdout)
    assert backup["status"] in ("scheduled", "in_progress")
    done = live_service.wait_job(
        f"/api/data-sources/{source['id']}/backups/{backup['id']}", "backup"
    )
    assert done["status"] == "completed"


def test_verify(live_service: LiveService, source: dict[str, Any]) -> None:
    created = cli(live_service, "backup", "create", str(source["id"]), "--json")
    backup = json.loads(created.stdout)
    result = cli(live_service, "backup", "verify", str(source["id"]), str(backup["id"]))
    assert result.exit_code == 0, result.output
    assert f"backup {backup['id']} verified" in result.stdout
    again = cli(live_service, "backup", "verify", str(source["id"]), str(backup["id"]), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["verification_status"] == "verified"


def test_restore_into_a_new_sqlite_file(live_service: LiveService, source: dict[str, Any]) -> None:
    backup = json.loads(cli(live_service, "backup", "create", str(source["id"]), "--json").stdout)
    target = live_service.sqlite_dir / f"restored-{secrets.token_hex(4)}.db"
    result = cli(
        live_service,
        "restore",
        str(source["id"]),
        str(backup["id"]),
        "--target",
        "new",
        "--target-database",
        str(target),
    )
    assert result.exit_code == 0, result.output
    assert "completed" in result.stdout
    with sqlite3.connect(target) as conn:
        rows = conn.execute("SELECT count(*), max(body) FROM notes").fetchone()
    assert rows == (500, "note 99 é✓")


def test_login_with_username_and_password(
    live_service: LiveService, source: dict[str, Any]
) -> None:
    by_env = cli(
        live_service,
        "backup",
        "list",
        str(source["id"]),
        "--username",
        "admin",
        token=None,
        env={"SOURCEKEEPER_PASSWORD": live_service.password},
    )
    assert by_env.exit_code == 0, by_env.output
    by_prompt = cli(
        live_service,
        "backup",
        "list",
        str(source["id"]),
        "-u",
        "admin",
        token=None,
        input=live_service.password + "\n",
    )
    assert by_prompt.exit_code == 0, by_prompt.output
    assert live_service.password not in by_prompt.output
    wrong = cli(
        live_service,
        "backup",
        "list",
        str(source["id"]),
        "-u",
        "admin",
        token=None,
        env={"SOURCEKEEPER_PASSWORD": "not-the-password"},
    )
    assert wrong.exit_code == 1
    assert "Invalid username or password" in wrong.stderr


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["backup", "list", "1"], "skt_not-a-real-token", "Invalid or expired token"),
        (["backup", "create", "2000000000"], "default", "Data source 2000000000 does not exist"),
        (["backup", "create", "no-such-source-name"], "default", "no data source named"),
        (
            ["backup", "verify", "{source}", "2000000000"],
            "default",
            "Backup 2000000000 does not exist",
        ),
        (
            ["restore", "{source}", "2000000000", "--target", "new", "--target-database", "x"],
            "default",
            "does not exist",
        ),
        (["backup", "list", "1"], None, "give --token"),
    ],
)
def test_errors_print_the_api_message_and_exit_non_zero(
    live_service: LiveService,
    source: dict[str, Any],
    args: list[str],
    token: str | None,
    message: str,
) -> None:
    args = [a.replace("{source}", str(source["id"])) for a in args]
    result = cli(live_service, *args, token=token)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_unreachable_service(live_service: LiveService, tmp_path: Path) -> None:
    result = cli(live_service, "backup", "list", "1", "--url", "http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "cannot reach sourcekeeper at http://127.0.0.1:9" in result.stderr


def test_a_failed_backup_exits_non_zero_with_its_reason(
    live_service: LiveService, source: dict[str, Any]
) -> None:
    source["path"].unlink()  # the source's file is gone: the dump must fail, clearly
    result = cli(live_service, "backup", "create", str(source["id"]))
    assert result.exit_code == 1, result.output
    assert "error: backup" in result.stderr and "failed" in result.stderr
