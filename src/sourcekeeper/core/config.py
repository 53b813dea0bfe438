"""All settings in one object, read from SOURCEKEEPER_* environment variables (and .env)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Safe defaults give the embedded mode: SQLite, local storage and an in-process worker
    under ./data.
    """

    model_config = SettingsConfigDict(env_prefix="SOURCEKEEPER_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str | None = None  # default: sqlite file in data_dir
    queue_url: str | None = (
        None  # default: sqlite file in data_dir; postgresql:// or redis:// to scale out
    )
    storage_url: str | None = None  # default: file://data_dir/artifacts; or s3://bucket/prefix
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None

    master_key: SecretStr | None = None  # base64 32 bytes; else data_dir/master.key (0600)
    admin_password: SecretStr | None = None
    sqlite_allowed_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    backup_recipients: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # With BACKUP_RECIPIENTS, the operator's age identity file (0600) for restore and verify.
    backup_identity_file: Path | None = None

    token_ttl_hours: int = 24 * 7
    login_max_failures: int = 5  # per user+IP within login_window_seconds, then 429
    login_window_seconds: int = 300
    connect_timeout_seconds: float = 5.0
    metrics_token: SecretStr | None = (
        None  # when set, /metrics needs "Authorization: Bearer <token>"
    )
    worker_threads: int = 2
    heartbeat_stale_seconds: int = 120
    cookie_secure: bool = False
    log_level: str = "INFO"
    smtp_url: str | None = None  # e.g. smtp://user:pass@host:25?from=sourcekeeper@example.org
    public_url: str = "http://127.0.0.1:8080"

    @field_validator("sqlite_allowed_dirs", "backup_recipients", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """Accept a JSON list or comma-separated values, as the contract allows."""
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return []
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'sourcekeeper.db'}"

    @property
    def resolved_queue_url(self) -> str:
        return self.queue_url or f"sqlite:///{self.resolved_data_dir / 'queue.db'}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.resolved_data_dir / "artifacts").as_uri()

    @property
    def allowed_sqlite_dirs(self) -> list[Path]:
        dirs = self.sqlite_allowed_dirs or [self.resolved_data_dir / "sqlite"]
        return [Path(d).expanduser().resolve() for d in dirs]


@lru_cache
def get_settings() -> Settings:
    return Settings()
