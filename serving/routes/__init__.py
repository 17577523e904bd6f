"""The serving app's routers, one per resource."""

from fastapi import APIRouter

from serving.routes import catalog, events, health, recommendations

api_router = APIRouter()
api_router.include_router(recommendations.router)
api_router.include_router(events.router)
api_router.include_router(catalog.router)
api_router.include_router(health.router)

__all__ = ["api_router"]
