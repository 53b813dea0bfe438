"""What tests import: the session's data directory and secrets, and the Caller type.

Imported by conftest.py before sourcekeeper, so the environment is fixed before settings are read.
(Tests import from here, not from `conftest`: several conftest modules share that name.)
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Settings are read once, so the environment is fixed before sourcekeeper is imported.
DATA_DIR = Path(tempfile.mkdtemp(prefix="sourcekeeper-tests-"))
for _key in [k for k in os.environ if k.startswith("SOURCEKEEPER_")]:
    if _key != "SOURCEKEEPER_TEST_REQUIRE_SERVERS":
        del os.environ[_key]
os.environ["SOURCEKEEPER_DATA_DIR"] = str(DATA_DIR)
os.environ["SOURCEKEEPER_SQLITE_ALLOWED_DIRS"] = str(DATA_DIR / "sqlite")
os.environ["SOURCEKEEPER_LOGIN_MAX_FAILURES"] = "5"
os.environ["SOURCEKEEPER_CONNECT_TIMEOUT_SECONDS"] = "3"
ADMIN_PASSWORD = "admin-" + secrets.token_urlsafe(12)
os.environ["SOURCEKEEPER_ADMIN_PASSWORD"] = ADMIN_PASSWORD
LOG_FILE = DATA_DIR / "test-log.jsonl"
# Every secret a test hands to the service; test_zz_no_secrets_leaked scans logs and the DB for
# them.
PLANTED_SECRETS: list[str] = [ADMIN_PASSWORD]


def planted_secret(label: str) -> str:
    value = f"{label}-{secrets.token_hex(8)}-Zq"
    PLANTED_SECRETS.append(value)
    return value


@dataclass
class Caller:
    """A logged-in user of a given role, with headers to send."""

    id: int
    username: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}
