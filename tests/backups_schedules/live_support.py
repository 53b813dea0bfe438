"""A real `sourcekeeper serve` (embedded worker) in a subprocess, for the CLI and the manual
restore tests: they talk HTTP to it exactly as an operator's tools would. (A module of its own,
not conftest, so tests can import the type: several conftest modules share that name.)"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SOURCEKEEPER = Path(sys.executable).with_name("sourcekeeper")


@dataclass
class LiveService:
    url: str
    env: dict[str, str]  # the service's environment, for local commands such as `keys`
    data_dir: Path
    password: str
    token: str
    log: Path

    @property
    def sqlite_dir(self) -> Path:
        return self.data_dir / "sqlite"

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = httpx.request(
            method,
            self.url + path,
            timeout=60,
            headers={"Authorization": f"Bearer {self.token}"},
            **kwargs,
        )
        assert resp.status_code < 300, f"{method} {path} → {resp.status_code} {resp.text}"
        return resp.json()["data"]

    def wait_job(self, path: str, key: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.api("GET", path)[key]
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"{path} did not finish in {timeout} s; log: {self.log}")

    def sourcekeeper(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a local `sourcekeeper` command with the service's environment."""
        return subprocess.run(
            [str(SOURCEKEEPER), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
