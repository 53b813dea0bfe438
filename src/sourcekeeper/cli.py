"""The `sourcekeeper` command: serve, worker, migrate, user create; backup, restore and keys.

`backup` and `restore` talk to a running service over HTTP (sourcekeeper.client); `keys` reads the
local metadata database, so it runs where the service runs, with the same environment.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from sourcekeeper.client import Client

app = typer.Typer(
    help="sourcekeeper: keeps data sources backed up, reported on and audited.",
    no_args_is_help=True,
)
user_app = typer.Typer(help="Manage users.", no_args_is_help=True)
app.add_typer(user_app, name="user")
backup_app = typer.Typer(
    help="Start, list and verify backups on a running service.", no_args_is_help=True
)
app.add_typer(backup_app, name="backup")
keys_app = typer.Typer(help="The service's backup encryption key.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Do not run jobs in this process")
    ] = False,
) -> None:
    """Run the API (with an embedded worker unless --no-worker)."""
    import uvicorn

    from sourcekeeper import bootstrap
    from sourcekeeper.core.config import get_settings
    from sourcekeeper.core.logging import configure_logging
    from sourcekeeper.main import create_app

    settings = get_settings()
    configure_logging(settings.log_level)
    password = bootstrap.prepare(run_migrations=True)
    url = f"http://{host}:{port}"
    typer.echo(f"sourcekeeper is starting on {url}  (API docs: {url}/docs)")
    typer.echo(f"data directory: {settings.resolved_data_dir}")
    if password:
        typer.echo(f"First start: created user 'admin' with password: {password}")
        typer.echo(
            "  (shown once; change it with PUT /api/users/1 or set SOURCEKEEPER_ADMIN_PASSWORD)"
        )
    else:
        typer.echo("Log in with POST /auth/token as an existing user (first user: 'admin').")
    typer.echo(f"  curl -s -X POST {url}/auth/token -d username=admin -d password=...")
    application = create_app(embedded_worker=not no_worker, migrate=False)
    uvicorn.run(application, host=host, port=port, log_config=None, access_log=False)


@app.command()
def worker(
    threads: Annotated[int, typer.Option(help="Worker threads")] = 2,
) -> None:
    """Run job consumers only (scale-out mode)."""
    from sourcekeeper import bootstrap
    from sourcekeeper.core.config import get_settings
    from sourcekeeper.core.logging import configure_logging
    from sourcekeeper.jobs import queue

    configure_logging(get_settings().log_level)
    bootstrap.prepare(run_migrations=True)
    queue.run_consumer(threads)


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    from sourcekeeper import bootstrap

    bootstrap.migrate()
    typer.echo("database is at the newest schema")


@user_app.command("create")
def user_create(
    username: str,
    role: Annotated[
        str, typer.Option(help="admin, data_steward, data_analyst or viewer")
    ] = "viewer",
    email: Annotated[str | None, typer.Option()] = None,
    password: Annotated[
        str | None,
        typer.Option(
            envvar="SOURCEKEEPER_NEW_USER_PASSWORD",
            help="Prefer the environment variable: argv is visible to other users",
        ),
    ] = None,
) -> None:
    """Create a user (prompts for the password unless SOURCEKEEPER_NEW_USER_PASSWORD is set)."""
    from pydantic import ValidationError

    from sourcekeeper import bootstrap
    from sourcekeeper.auth import service as auth_service
    from sourcekeeper.auth.schemas import UserCreate
    from sourcekeeper.core.db import session_scope
    from sourcekeeper.core.errors import AppError

    secret = (
        password
        or os.environ.get("SOURCEKEEPER_NEW_USER_PASSWORD")
        or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    )
    bootstrap.migrate()
    try:
        data = UserCreate.model_validate(
            {
                "username": username,
                "email": email,
                "password": secret,
                "role": role,
                "is_active": True,
            }
        )
        with session_scope() as db:
            user = auth_service.create_user(db, data=data, actor="cli")
            typer.echo(f"created user {user.username} (id {user.id}, role {user.role})")
    except ValidationError as exc:
        raise typer.BadParameter(
            "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        ) from None
    except AppError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


# ---- backup, restore: over HTTP ----------------------------------------------------------------

Url = Annotated[
    str, typer.Option("--url", envvar="SOURCEKEEPER_URL", help="Base URL of the running service")
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="SOURCEKEEPER_TOKEN",
        show_envvar=True,
        help="Session token or API key (prefer the environment variable: argv is visible in ps)",
    ),
]
Username = Annotated[
    str | None,
    typer.Option(
        "--username",
        "-u",
        envvar="SOURCEKEEPER_USERNAME",
        help="Log in as this user; the password comes from SOURCEKEEPER_PASSWORD or a prompt",
    ),
]
Source = Annotated[str, typer.Argument(help="Data source id or exact name")]
Wait = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Show progress until the job has finished")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of text")]
DEFAULT_URL = "http://127.0.0.1:8080"
POLL_SECONDS = 0.5


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _connect(url: str, token: str | None, username: str | None) -> Client:
    from sourcekeeper.client import ApiError, Client

    client = Client(url, token=token)
    if token:
        return client
    if not username:
        client.close()
        raise _fail(
            "give --token (or SOURCEKEEPER_TOKEN), or --username (with "
            "SOURCEKEEPER_PASSWORD or a prompt)"
        )
    password = os.environ.get("SOURCEKEEPER_PASSWORD") or typer.prompt(
        f"Password for {username}", hide_input=True, err=True
    )
    try:
        client.login(username, password)
    except ApiError as exc:
        client.close()
        raise _fail(str(exc)) from None
    return client


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} TB"


def _wait_for(client: Client, kind: str, fetch: Any, what: str) -> dict[str, Any]:
    """Poll a backup or restore until it has finished, with a Rich progress bar on stderr."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from sourcekeeper.client import FINISHED

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[done]}"),
        TimeElapsedColumn(),
    )
    job: dict[str, Any] = fetch()
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(what, total=100, done="")
        while True:
            progress = job.get("progress")
            done = job.get("bytes_processed") or 0
            bar.update(
                task,
                total=100 if progress is not None else None,
                completed=progress or 0,
                done=f"{_size(done)} {job['status']}" if done else job["status"],
            )
            if job["status"] in FINISHED:
                if job["status"] == "completed":
                    bar.update(task, total=100, completed=100)
                return job
            time.sleep(POLL_SECONDS)
            job = fetch()


def _show(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(job, indent=2))


def _backup_summary(b: dict[str, Any]) -> str:
    parts = [f"backup {b['id']} {b['status']}"]
    if b["status"] == "completed":
        ratio = b.get("compression_ratio")
        parts.append(
            f"{_size(b.get('size_bytes'))} stored" + (f" ({ratio:.1f}x smaller)" if ratio else "")
        )
        if b.get("duration_seconds") is not None:
            parts.append(f"in {b['duration_seconds']:.1f} s")
        parts.append(f"at {b.get('location')}")
    return ", ".join(parts)


def _finish(job: dict[str, Any], summary: str) -> None:
    """Exit non-zero when the job did not complete, with the service's reason."""
    if job["status"] != "completed":
        raise _fail(f"{summary}: {job.get('error_message') or 'no reason given'}")


@backup_app.command("create")
def backup_create(
    source: Source,
    name: Annotated[str | None, typer.Option(help="Backup name (default: date and time)")] = None,
    retention_days: Annotated[int | None, typer.Option(help="Keep it this many days")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    wait: Wait = True,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    username: Username = None,
) -> None:
    """Start a backup of a data source and (by default) wait for it to finish."""
    from sourcekeeper.client import ApiError

    with _connect(url, token, username) as client:
        try:
            ds = client.resolve_source(source)
            backup = client.start_backup(
                ds["id"], name=name, retention_days=retention_days, description=description
            )
            if not as_json:
                typer.echo(f"backup {backup['id']} of '{ds['name']}' started ({backup['status']})")
            if wait:
                backup = _wait_for(
                    client,
                    "backup",
                    lambda: client.get_backup(ds["id"], backup["id"]),
                    f"backup {backup['id']}",
                )
        except ApiError as exc:
            raise _fail(str(exc)) from None
    _show(backup, as_json)
    if wait:
        if not as_json:
            typer.echo(_backup_summary(backup))
        _finish(backup, f"backup {backup['id']} {backup['status']}")


@backup_app.command("list")
def backup_list(
    source: Source,
    status: Annotated[str | None, typer.Option(help="Only backups with this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    username: Username = None,
) -> None:
    """List a data source's backups, newest first."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from sourcekeeper.client import ApiError

    with _connect(url, token, username) as client:
        try:
            ds = client.resolve_source(source)
            backups, total = client.list_backups(ds["id"], status=status, limit=limit)
        except ApiError as exc:
            raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"backups": backups, "total": total}, indent=2))
        return
    # Six narrow columns fit 80: the rest (trigger, expiry, checksum…) is in --json.
    table = Table(
        title=f"Backups of '{ds['name']}' ({len(backups)} of {total})", box=box.SIMPLE_HEAD
    )
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("name", min_width=12, ratio=1)
    for column in ("status", "created (UTC)", "size", "verified"):
        table.add_column(column, no_wrap=True)
    for b in backups:
        table.add_row(
            str(b["id"]),
            b["name"],
            b["status"],
            _when(b.get("created_at")),
            _size(b.get("size_bytes")),
            b.get("verification_status") or "",
        )
    Console().print(table)


def _when(value: str | None) -> str:
    """`2026-11-25T09:30:00.123Z` → `2026-11-25 09:30`: enough to tell backups apart in a table."""
    return value[:16].replace("T", " ") if value else ""


@backup_app.command("verify")
def backup_verify(
    source: Source,
    backup_id: Annotated[int, typer.Argument(help="Backup id")],
    wait: Wait = True,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    username: Username = None,
) -> None:
    """Re-read a stored backup end to end (checksum, decrypt, decompress, table of contents)."""
    from sourcekeeper.client import ApiError

    with _connect(url, token, username) as client:
        try:
            ds = client.resolve_source(source)
            before = client.get_backup(ds["id"], backup_id)
            backup = client.verify_backup(ds["id"], backup_id)
            if wait:
                backup = _wait_verified(client, ds["id"], backup_id, before)
        except ApiError as exc:
            raise _fail(str(exc)) from None
    _show(backup, as_json)
    if not wait:
        if not as_json:
            typer.echo(f"verification of backup {backup_id} started")
        return
    if backup.get("verification_status") != "verified":
        raise _fail(
            f"backup {backup_id} failed verification: "
            f"{backup.get('verification_error') or 'no reason given'}"
        )
    if not as_json:
        typer.echo(f"backup {backup_id} verified at {backup.get('verified_at')}")


def _wait_verified(
    client: Client, source_id: int, backup_id: int, before: dict[str, Any]
) -> dict[str, Any]:
    """Verification leaves `status` alone; each verdict, good or bad, sets a new verified_at."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    def changed(b: dict[str, Any]) -> bool:
        return bool(b.get("verified_at")) and b.get("verified_at") != before.get("verified_at")

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        bar.add_task(f"verifying backup {backup_id}", total=None)
        while True:
            backup = client.get_backup(source_id, backup_id)
            if changed(backup):
                return backup
            time.sleep(POLL_SECONDS)


@app.command("restore")
def restore(
    source: Source,
    backup_id: Annotated[int, typer.Argument(help="Backup id")],
    target: Annotated[
        str, typer.Option(help="original (the source's own database, after a safety backup) or new")
    ] = "original",
    target_database: Annotated[
        str | None, typer.Option(help="Name of the new database (target new)")
    ] = None,
    target_source: Annotated[
        str | None,
        typer.Option(help="Restore into another registered source of the same engine (id or name)"),
    ] = None,
    table: Annotated[
        list[str] | None, typer.Option("--table", help="Restore only this table (repeatable)")
    ] = None,
    clean: Annotated[
        bool | None, typer.Option("--clean/--no-clean", help="Drop objects before recreating them")
    ] = None,
    verify: Annotated[
        bool,
        typer.Option("--verify/--no-verify", help="Compare row counts with the backup afterwards"),
    ] = True,
    wait: Wait = True,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    username: Username = None,
) -> None:
    """Restore a backup and (by default) wait for it to finish."""
    from sourcekeeper.client import ApiError

    body: dict[str, Any] = {
        "target": target,
        "target_database": target_database,
        "tables": table or None,
        "clean": clean,
        "verify": verify,
    }
    with _connect(url, token, username) as client:
        try:
            ds = client.resolve_source(source)
            if target_source is not None:
                body["target_data_source_id"] = client.resolve_source(target_source)["id"]
            job = client.start_restore(ds["id"], backup_id, body)
            if not as_json:
                typer.echo(f"restore {job['id']} of backup {backup_id} started ({job['status']})")
            if wait:
                job = _wait_for(
                    client,
                    "restore",
                    lambda: client.get_restore(ds["id"], job["id"]),
                    f"restore {job['id']}",
                )
        except ApiError as exc:
            raise _fail(str(exc)) from None
    _show(job, as_json)
    if wait:
        if not as_json:
            checked = job.get("verification") or {}
            extra = (
                f", row counts match in {checked.get('tables_checked')} tables"
                if job.get("verified")
                else ""
            )
            typer.echo(f"restore {job['id']} {job['status']}{extra}")
        _finish(job, f"restore {job['id']} {job['status']}")


# ---- keys: local, on the service's machine -----------------------------------------------------


@keys_app.command("export-identity")
def keys_export_identity() -> None:
    """Print the service's age identity (AGE-SECRET-KEY-…) to stdout, to keep offline.

    With it, `age -d -i <file>` opens any backup without sourcekeeper (docs/restore-without-
    sourcekeeper.md). Run it where the service runs, with the same SOURCEKEEPER_* environment.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from sourcekeeper.auditlog import service as audit
    from sourcekeeper.backups import keys
    from sourcekeeper.core.config import get_settings
    from sourcekeeper.core.db import session_scope
    from sourcekeeper.core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)  # log lines go to stderr: stdout is the identity file
    local_db = settings.resolved_data_dir / "sourcekeeper.db"
    if settings.database_url is None and not local_db.exists():
        raise _fail(
            f"no sourcekeeper database in {settings.resolved_data_dir}: set "
            "SOURCEKEEPER_DATA_DIR (or SOURCEKEEPER_DATABASE_URL) as for the service"
        )
    try:
        with session_scope() as db:
            text = keys.export_identities(db)
            if "AGE-SECRET-KEY-" not in text:
                raise _fail(
                    "this service stores no identity: its backups are encrypted to "
                    "SOURCEKEEPER_BACKUP_RECIPIENTS, whose private keys you hold yourself"
                )
            audit.record(
                db,
                actor="cli",
                action="backup_key.exported",
                target="backup_keys",
                details={"keys": text.count("AGE-SECRET-KEY-")},
            )
    except SQLAlchemyError as exc:
        raise _fail(f"cannot read the metadata database: {type(exc).__name__}") from None
    typer.echo(text, nl=False)


if __name__ == "__main__":
    app()
