"""The README's run command: `sourcekeeper serve` starts, prints how to log in, serves, stops
cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from servers_plugin import free_port


def _clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCEKEEPER_")}
    env["SOURCEKEEPER_DATA_DIR"] = str(data_dir)
    return env


def test_serve_first_start_prints_admin_password_and_serves(tmp_path: Path) -> None:
    port = free_port()
    exe = Path(sys.executable).with_name("sourcekeeper")
    proc = subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "serve.log").open("w"),  # noqa: SIM115 - the child owns it
        text=True,
        env=_clean_env(tmp_path / "data"),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            log = (tmp_path / "serve.log").read_text()[-3000:]
            raise AssertionError(f"sourcekeeper serve did not answer /health within 30 s:\n{log}")
        assert httpx.get(f"{base}/ready", timeout=5).json()["data"]["status"] == "ready"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells the truth
        assert proc.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()
        assert f"http://127.0.0.1:{port}" in out
        match = re.search(r"created user 'admin' with password: (\S+)", out)
        assert match, out
        # the master key and the metadata DB are under the data dir, the key file private
        key = tmp_path / "data" / "master.key"
        assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
        # second start: same data dir, no new password printed, the old one still works
        proc = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_clean_env(tmp_path / "data"),
        )
        deadline = time.monotonic() + 30
        token = None
        while time.monotonic() < deadline and token is None:
            try:
                resp = httpx.post(
                    f"{base}/auth/token",
                    timeout=2,
                    data={"username": "admin", "password": match.group(1)},
                )
                token = resp.json()["data"]["access_token"]
            except httpx.HTTPError:
                time.sleep(0.2)
        assert token
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert "created user" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_user_create_cli(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("sourcekeeper")
    env = _clean_env(tmp_path / "data") | {"SOURCEKEEPER_NEW_USER_PASSWORD": "cli-user-pass-1"}
    done = subprocess.run(
        [str(exe), "user", "create", "dora", "--role", "data_analyst"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "created user dora" in done.stdout and "role data_analyst" in done.stdout
    again = subprocess.run(
        [str(exe), "user", "create", "dora"], capture_output=True, text=True, env=env, timeout=60
    )
    assert again.returncode == 1 and "already exists" in again.stderr
