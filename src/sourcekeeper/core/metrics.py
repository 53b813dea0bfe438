"""Prometheus metrics, defined once; domains import the ones they update."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "sourcekeeper_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "sourcekeeper_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BACKUPS = Counter("sourcekeeper_backups_total", "Backups finished", ["engine", "outcome"])
RESTORES = Counter("sourcekeeper_restores_total", "Restores finished", ["engine", "outcome"])
BACKUP_DURATION = Histogram(
    "sourcekeeper_backup_duration_seconds",
    "Backup duration",
    ["engine"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
BACKUP_SIZE = Histogram(
    "sourcekeeper_backup_size_bytes",
    "Stored backup size",
    ["engine"],
    buckets=tuple(10**k for k in range(3, 13)),
)
BACKUP_THROUGHPUT = Histogram(
    "sourcekeeper_backup_throughput_bytes_per_second",
    "Dump bytes read per second",
    ["engine"],
    buckets=tuple(2**k * 1_000_000 for k in range(-3, 10)),
)
REPORT_DURATION = Histogram(
    "sourcekeeper_report_generation_seconds", "Report generation time", ["type", "format"]
)
QUEUE_DEPTH = Gauge("sourcekeeper_queue_depth", "Tasks waiting in the queue")
NOTIFICATIONS_CREATED = Counter(
    "sourcekeeper_notifications_created_total", "Notification copies written", ["category"]
)
JOBS_REAPED = Counter(
    "sourcekeeper_jobs_reaped_total", "Jobs marked failed after a stale heartbeat", ["kind"]
)
