"""The one module that mounts routers: public ones as they are, the rest behind authentication."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from sourcekeeper.auditlog import routes as auditlog_routes
from sourcekeeper.auth import routes as auth_routes
from sourcekeeper.auth.deps import get_current_user
from sourcekeeper.backups import routes as backups_routes
from sourcekeeper.backups import schedule_routes as backup_schedule_routes
from sourcekeeper.datasources import routes as datasources_routes
from sourcekeeper.notifications import routes as notifications_routes
from sourcekeeper.ops import routes as ops_routes
from sourcekeeper.security import routes as security_routes

# Routes are authenticated unless deliberately placed here.
public = APIRouter()
public.include_router(ops_routes.router)
public.include_router(auth_routes.public)

protected = APIRouter(dependencies=[Depends(get_current_user)])
protected.include_router(auth_routes.router)
protected.include_router(auth_routes.users_router)
protected.include_router(datasources_routes.router)
protected.include_router(backups_routes.router)
protected.include_router(backup_schedule_routes.router)
protected.include_router(security_routes.router)
protected.include_router(auditlog_routes.router)
protected.include_router(notifications_routes.router)

router = APIRouter()
router.include_router(public)
router.include_router(protected)
