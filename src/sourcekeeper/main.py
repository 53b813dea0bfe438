"""The app factory: middleware, error handlers, routers, and start-up (migrations, first admin,
worker).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sourcekeeper import api
from sourcekeeper.core.config import get_settings
from sourcekeeper.core.envelope import register_handlers
from sourcekeeper.core.logging import configure_logging
from sourcekeeper.middleware import RequestContextMiddleware


def create_app(*, embedded_worker: bool = False, migrate: bool = True) -> FastAPI:
    """Build the ASGI app; `serve` asks for the embedded worker, tests and `--no-worker` do not."""
    settings = get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from sourcekeeper import bootstrap

        bootstrap.prepare(run_migrations=migrate)
        if embedded_worker:
            from sourcekeeper.jobs import queue

            queue.start_embedded_consumer(settings.worker_threads)
        try:
            yield
        finally:
            if embedded_worker:
                from sourcekeeper.jobs import queue

                queue.stop_embedded_consumer()

    app = FastAPI(
        title="sourcekeeper",
        version="1.0.0",
        description=(
            "Backups, restores, reports, notifications and security audits of data sources."
        ),
        lifespan=lifespan,
    )
    register_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(api.router)
    return app
