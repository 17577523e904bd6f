"""The privacy officer's audit UI, mounted under `/audit` of each regional serving app.

Every page needs a signed-in officer (`SignedInDep`), and every tenant, region-wide or
lineage read goes through `audit.access.Access` first: the one place that allows or
refuses (and audits the refusal). The UI gets what it needs from whoever mounts it
(`mount_audit_ui(app, AuditUiContext.of(platform, region))`) and reads nothing else.
"""

from fastapi import FastAPI

from audit.ui.deps import STATE_KEY, AuditUiContext
from audit.ui.routes import router


def mount_audit_ui(app: FastAPI, context: AuditUiContext) -> None:
    """Serve the audit UI under `/audit` of `app` with `context` (again: a new context)."""
    mounted = getattr(app.state, STATE_KEY, None) is not None
    setattr(app.state, STATE_KEY, context)
    if not mounted:
        app.include_router(router)


__all__ = ["AuditUiContext", "mount_audit_ui", "router"]
