"""Engine-independent pieces: parameters, redaction, the registry and dump parsing."""

from __future__ import annotations

import io

import pytest

from sourcekeeper.core.errors import InvalidInput
from sourcekeeper.datasources.connectors import mysql, postgres
from sourcekeeper.datasources.connectors.base import ConnParams, redact
from sourcekeeper.datasources.connectors.registry import CONNECTORS, connector_for


def test_repr_hides_the_password() -> None:
    params = ConnParams("postgresql", "db.example", 5432, "app", "alice", "s3cr3t-Pw")
    assert "s3cr3t-Pw" not in repr(params)
    assert "s3cr3t-Pw" not in repr(connector_for(params))
    assert params.with_database("other").password == "s3cr3t-Pw"


def test_unknown_engines_are_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported engine"):
        ConnParams("oracle", "h", 1, "db")
    params = ConnParams("sqlite", None, None, "/tmp/x.db")
    object.__setattr__(params, "engine", "oracle")
    with pytest.raises(InvalidInput):
        connector_for(params)


def test_registry_covers_every_engine() -> None:
    assert set(CONNECTORS) == {"postgresql", "mysql", "mariadb", "sqlite"}


def test_redact_replaces_every_occurrence() -> None:
    assert redact("a pw here and pw there", "pw") == "a *** here and *** there"
    assert redact("nothing", None, "") == "nothing"


def test_pg_toc_parsing_ignores_data_entries_and_keeps_spaces() -> None:
    listing = (
        ";\n; Archive created at 2026-11-25\n"
        "215; 1259 16386 TABLE public orders alice\n"
        "216; 1259 16390 TABLE sales Line Items bob\n"
        "3310; 0 16386 TABLE DATA public orders alice\n"
        "217; 1259 16391 SEQUENCE public orders_id_seq alice\n"
    )
    assert postgres._parse_toc(listing) == ["public.orders", "sales.Line Items"]


def test_mysql_filter_keeps_header_and_chosen_tables_only() -> None:
    dump = (
        b"/*!40101 SET NAMES utf8mb4 */;\n"
        b"--\n-- Table structure for table `a`\n--\n"
        b"DROP TABLE IF EXISTS `a`;\nCREATE TABLE `a` (x int);\n"
        b"--\n-- Dumping data for table `a`\n--\nINSERT INTO `a` VALUES (1);\n"
        b"--\n-- Table structure for table `b``c`\n--\n"
        b"DROP TABLE IF EXISTS `b``c`;\nCREATE TABLE `b``c` (y int);\n"
        b"--\n-- Dumping routines for database 'd'\n--\nCREATE PROCEDURE p() SELECT 1;\n"
        b"-- Dump completed on 2026-11-25\n"
    )
    kept = b"".join(mysql._filtered(io.BytesIO(dump), ["b`c"], clean=False))
    assert b"SET NAMES" in kept
    assert b"CREATE TABLE `b``c`" in kept
    assert b"`a`" not in kept and b"PROCEDURE" not in kept
    assert b"DROP TABLE" not in kept
    assert mysql.MySQLConnector.toc(io.BytesIO(dump)) == ["a", "b`c"]
