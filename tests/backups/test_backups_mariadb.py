"""MariaDB backups and restores against the real MariaDB server, through the API and the real
queue: a round trip to every target, and a table subset."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from backup_support import (
    Worker,
    artifact_path,
    backup_ok,
    base,
    export_identity,
    get_backup,
    my_fingerprint,
    register_source,
    restore_ok,
)
from fastapi.testclient import TestClient
from servers_plugin import DbServer
from support import Caller

SCHEMA = """
CREATE TABLE customers (
    id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) NOT NULL, balance DECIMAL(14, 2),
    joined DATETIME(6), seen TIMESTAMP NULL, avatar BLOB, prefs JSON, note TEXT
) ENGINE=InnoDB;
CREATE TABLE orders (
    id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(12, 3),
    placed_at DATETIME NOT NULL, flags SET('gift', 'rush'), KEY ix_orders_customer (customer_id),
    CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE=InnoDB;
CREATE SEQUENCE invoice_numbers START WITH 1000 INCREMENT BY 5;
CREATE VIEW big_spenders AS
    SELECT c.name, SUM(o.total) AS spent FROM customers c JOIN orders o ON o.customer_id = c.id
    GROUP BY c.name;
INSERT INTO customers (name, balance, joined, seen, avatar, prefs, note) VALUES
    ('Zoë Ångström ✓ 🎉', 1234.56, '2026-11-25 09:30:00.123456', '2026-11-25 08:30:00',
     UNHEX('00FF10'), '{"theme": "dark"}', 'tab\there, newline\\nthere'),
    ('李小龍', -0.01, '1999-12-31 23:59:59', NULL, REPEAT(UNHEX('AB'), 500), '[1, 2, {"x": null}]',
     'quote '' and backslash \\\\'),
    ('O''Brien; DROP TABLE x', NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO orders (customer_id, total, placed_at, flags)
    SELECT 1 + seq % 3, seq * 1.125, '2026-01-01' + INTERVAL seq * 37 MINUTE,
           IF(seq % 2 = 0, 'gift', 'gift,rush')
    FROM seq_1_to_500;
SELECT NEXTVAL(invoice_numbers), NEXTVAL(invoice_numbers), NEXTVAL(invoice_numbers);
"""

MUTATE = """
DELETE FROM orders WHERE id % 2 = 0;
UPDATE customers SET name = 'changed', balance = 0 WHERE id = 1;
INSERT INTO customers (name) VALUES ('late arrival');
DROP VIEW big_spenders;
SELECT NEXTVAL(invoice_numbers) FROM seq_1_to_10;
"""


class MyWorld:
    def __init__(self, server: DbServer) -> None:
        self.server = server

    def new_database(self, prefix: str, schema: str | None = SCHEMA) -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        self.server.create_database(name)
        if schema:
            self.server.execute(schema, name)
        return name

    def register(self, client: TestClient, admin: Caller, database: str) -> dict[str, Any]:
        return register_source(
            client,
            admin,
            name=f"my-{database}",
            source_type="mariadb",
            host=self.server.host,
            port=self.server.port,
            database_name=database,
            username=self.server.superuser,
            password=self.server.password,
        )


@pytest.fixture(scope="module")
def my(mariadb_server: DbServer) -> MyWorld:
    return MyWorld(mariadb_server)


def test_round_trip_to_every_target(
    client: TestClient, admin: Caller, worker: Worker, my: MyWorld
) -> None:
    database = my.new_database("shop")
    source = my.register(client, admin, database)
    original = my_fingerprint(my.server, database)
    backup = backup_ok(client, admin, source["id"])
    meta = backup["metadata"]
    assert meta["engine"] == "mariadb" and meta["tool"] == "mariadb-dump"
    assert meta["format"] == "sql" and meta["tables"] == 2
    assert "MariaDB" in meta["server_version"]
    assert backup["location"].endswith(f"/{backup['id']}.sql.zst.age")

    my.server.execute(MUTATE, database)
    assert my_fingerprint(my.server, database) != original
    done = restore_ok(client, admin, source["id"], backup["id"])
    assert my_fingerprint(my.server, database) == original
    assert done["verified"] is True and done["verification"]["tables_checked"] == 2
    assert get_backup(client, admin, source["id"], done["safety_backup_id"])["status"] == (
        "completed"
    )

    new_name = f"restored_{secrets.token_hex(3)}"
    done = restore_ok(
        client, admin, source["id"], backup["id"], {"target": "new", "targetDatabase": new_name}
    )
    assert done["verified"] is True
    assert my_fingerprint(my.server, new_name) == original
    taken = client.post(
        f"{base(source['id'])}/backups/{backup['id']}/restore",
        headers=admin.headers,
        json={"target": "new", "target_database": new_name},
    )
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "target_exists"

    other_db = my.new_database("other", schema=None)
    other = my.register(client, admin, other_db)
    done = restore_ok(
        client, admin, source["id"], backup["id"], {"target_data_source_id": other["id"]}
    )
    assert done["target"] == "source" and done["verified"] is True
    assert my_fingerprint(my.server, other_db) == original


@pytest.mark.skipif(shutil.which("age") is None, reason="the age CLI is not installed")
def test_restore_with_age_zstd_and_the_mariadb_client_alone(
    client: TestClient, admin: Caller, worker: Worker, my: MyWorld, tmp_path: Path
) -> None:
    """The commands the README gives operators who must restore without sourcekeeper."""
    database = my.new_database("plain")
    source = my.register(client, admin, database)
    backup = backup_ok(client, admin, source["id"])
    artifact = artifact_path(backup["location"])
    key = export_identity(tmp_path)
    target = my.new_database("by_hand", schema=None)
    env = dict(os.environ, MYSQL_PWD=my.server.password)
    subprocess.run(
        f"age -d -i {key} {artifact} | zstd -dc | mariadb --protocol=TCP"
        f" -h {my.server.host} -P {my.server.port} -u {my.server.superuser} {target}",
        shell=True,
        check=True,
        env=env,
        capture_output=True,
    )
    assert my_fingerprint(my.server, target) == my_fingerprint(my.server, database)


def test_table_subset(client: TestClient, admin: Caller, worker: Worker, my: MyWorld) -> None:
    database = my.new_database("subset")
    source = my.register(client, admin, database)
    backup = backup_ok(client, admin, source["id"])
    my.server.execute(
        "UPDATE customers SET name = 'changed'; DELETE FROM orders WHERE id > 10", database
    )
    done = restore_ok(client, admin, source["id"], backup["id"], {"tables": ["customers"]})
    assert done["verification"] == {"tables_checked": 1, "row_counts_match": True, "mismatches": []}
    names = my.server.execute("SELECT name FROM customers ORDER BY id", database)
    assert names[0] == ("Zoë Ångström ✓ 🎉",)
    assert my.server.execute("SELECT COUNT(*) FROM orders", database) == [(10,)]  # untouched
