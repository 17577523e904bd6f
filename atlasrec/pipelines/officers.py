"""Privacy officer accounts: creation (recorded in each home region's ledger) and upkeep."""

from __future__ import annotations

from collections.abc import Sequence

from atlasrec.control.officers import IssuedOfficer, OfficerRole, Officers
from atlasrec.control.tables import Officer
from atlasrec.platform import Platform
from atlasrec.tenancy import Region


def create_officer(
    platform: Platform,
    officer_id: str,
    *,
    role: OfficerRole,
    regions: Sequence[Region],
    tenant_id: str | None,
    name: str | None,
    actor: str,
) -> IssuedOfficer:
    """Create an officer and record it in the ledger of every region it oversees."""
    issued = Officers(platform.control.engine).create(
        officer_id, role=role, regions=list(regions), tenant_id=tenant_id, name=name
    )
    homes = regions if role is OfficerRole.PLATFORM else [platform.scope(tenant_id or "").region]
    for region in homes:
        platform.plane(region).ledger.append(
            actor=actor,
            action="officer.created",
            subject=f"officer:{officer_id}",
            tenant_id=tenant_id,
            details={"role": role.value, "regions": issued.officer.regions},
        )
    return issued


def list_officers(platform: Platform) -> list[Officer]:
    """Every officer account."""
    return Officers(platform.control.engine).list()


def reset_officer_password(platform: Platform, officer_id: str) -> str:
    """A new generated password for the officer (its sessions end)."""
    return Officers(platform.control.engine).reset_password(officer_id)


def disable_officer(platform: Platform, officer_id: str) -> None:
    """No more sign-ins for the officer; its open sessions end."""
    Officers(platform.control.engine).disable(officer_id)
