"""Fixtures of the schedules/CLI tests: a live `sourcekeeper serve` subprocess."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from live_support import SOURCEKEEPER, LiveService
from servers_plugin import free_port


@pytest.fixture(scope="session")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    base = tmp_path_factory.mktemp("live-service")
    data_dir = base / "data"
    password = "live-" + secrets.token_urlsafe(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCEKEEPER_")}
    env.update(
        SOURCEKEEPER_DATA_DIR=str(data_dir),
        SOURCEKEEPER_ADMIN_PASSWORD=password,
        SOURCEKEEPER_CONNECT_TIMEOUT_SECONDS="5",
    )
    port = free_port()
    log = base / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(SOURCEKEEPER), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sourcekeeper serve did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        resp = httpx.post(url + "/auth/token", data={"username": "admin", "password": password})
        token = resp.json()["data"]["access_token"]
        yield LiveService(url, env, data_dir, password, token, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
