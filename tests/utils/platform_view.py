"""Several regional apps on real servers sharing one platform, for the platform view tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress

from atlasrec.errors import BoundaryViolation
from atlasrec.tenancy import Region, Scope, SharingPolicy
from server.global_tier import EXPORTED
from serving.app import create_app
from tests.utils.audit import TRAIN, AuditWorld, charge
from tests.utils.browser import free_port, serving

DOWN = Region.IN
"""The region whose endpoint points at a closed port."""


@contextmanager
def regional_servers(world: AuditWorld, regions: list[Region]) -> Iterator[dict[Region, str]]:
    """`regions`' apps on real servers, registered as their endpoints; `DOWN` registered
    at a closed port. Their base URLs while the block runs."""
    control = world.platform.control
    with ExitStack() as stack:
        bases = {
            region: stack.enter_context(
                serving(create_app(region, platform=world.platform, preload=False, refresh=False))
            )
            for region in regions
        }
        for region, base in bases.items():
            control.set_region_endpoint(region, base)
        control.set_region_endpoint(DOWN, f"http://127.0.0.1:{free_port()}")
        yield bases


def seed_sg(world: AuditWorld) -> None:
    """SG: tenant lion (global, one charged run); a refused attempt by shop's scope there,
    and one by lion reaching for shop's data."""
    platform = world.platform
    platform.create_tenant("lion", region=Region.SG, sharing=SharingPolicy.GLOBAL, actor="t")
    charge(platform, Scope("lion", Region.SG), TRAIN, "train", users=5)
    sg = platform.plane(Region.SG)
    for scope, target in ((Scope("shop", Region.SG), None), (Scope("lion", Region.SG), "shop")):
        with suppress(BoundaryViolation):
            sg.boundary.admit(scope, actor="t", action="test.sg_read", target_tenant=target)


def record_export(world: AuditWorld, version: str, contributors: dict[str, float]) -> None:
    """A `federation.exported` record of EU's share `version`, as `export_share` writes it."""
    world.platform.plane(Region.EU).ledger.append(
        actor="test-aggregator",
        action=EXPORTED,
        subject=f"global-share:{version}",
        details={
            "region": "eu",
            "federation_run": "fedrun0001",
            "round": 2,
            "weight": 10.0,
            "key_id": "key-1",
            "contributors": contributors,
            "bytes": 4096,
        },
    )
