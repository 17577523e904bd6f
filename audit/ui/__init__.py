"""The privacy officer's audit UI, mounted under `/audit` of each regional serving app."""

from audit.ui.routes import router

__all__ = ["router"]
