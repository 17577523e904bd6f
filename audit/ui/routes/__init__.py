"""The audit UI's routers under `/audit`, one per page group."""

from fastapi import APIRouter

from audit.ui.routes import (
    alerts,
    lineage,
    log,
    peer_api,
    platform,
    reports,
    signin,
    static,
    tenants,
)

router = APIRouter(prefix="/audit", include_in_schema=False)
router.include_router(signin.router)
router.include_router(tenants.router)
router.include_router(reports.router)
router.include_router(log.router)
router.include_router(lineage.router)
router.include_router(platform.router)
router.include_router(peer_api.router)
router.include_router(alerts.router)
router.include_router(static.router)

__all__ = ["router"]
