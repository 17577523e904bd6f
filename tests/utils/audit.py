"""A region with what the audit UI shows: tenants, charged runs, rounds, a model, requests,
refusals and officers of every role. No training: runs are charged through the real ledger,
and the model artifact is published with a real lineage (its files are placeholders)."""

from __future__ import annotations

import re
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response

from atlasrec.clock import utcnow
from atlasrec.control.officers import OfficerRole, Officers
from atlasrec.dataplane.dp_runs import DpRunTable
from atlasrec.dataplane.tables import DpRun, ServedRequest
from atlasrec.dataplane.training_data import snapshot_hash
from atlasrec.errors import BoundaryViolation
from atlasrec.ingest import ingest
from atlasrec.models.bundle import KIND
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope, SharingPolicy
from privacy.accounting import Mechanism, epsilon
from privacy.budget import CHARGED, Charge, ChargedRun, charge_details
from tests.utils.factories import tenant_files

TRAIN = Mechanism(3.0, 0.05, 100)
ROUND = Mechanism(4.0, 0.05, 50)
DELTA = 1e-6
FED_RUN = "fedrun0001"
OFFICERS: dict[str, dict[str, Any]] = {
    "po-eu": {"role": OfficerRole.PLATFORM, "regions": [Region.EU]},
    "po-us": {"role": OfficerRole.PLATFORM, "regions": [Region.US]},
    "po-all": {"role": OfficerRole.PLATFORM, "regions": list(Region)},
    "to-shop": {"role": OfficerRole.TENANT, "tenant_id": "shop"},
    "to-label": {"role": OfficerRole.TENANT, "tenant_id": "label"},
    "to-far": {"role": OfficerRole.TENANT, "tenant_id": "far"},
}
EU_TENANTS = {"shop", "label"}


@dataclass
class AuditWorld:
    """What `seed_audit_world` made."""

    platform: Platform
    passwords: dict[str, str]
    requests: dict[str, str]
    model_version: str
    runs: dict[str, list[str]] = field(default_factory=dict)
    snapshot: str = ""


@cache
def composed(mechanisms: tuple[Mechanism, ...]) -> float:
    """Epsilon of the composition (cached: the accountant takes ~0.1 s per mechanism)."""
    return epsilon(list(mechanisms), DELTA)


def charge(
    platform: Platform, scope: Scope, mechanism: Mechanism, kind: str, **details: Any
) -> str:
    """A charged DP run as `DpBudget.reserve` records it (and its audit record); its id.

    The accountant's values are cached across tests; `tests/privacy` covers `reserve`.
    """
    tenant = platform.control.get_tenant(scope.tenant_id)
    plane = platform.plane(scope.region)
    with plane.session(scope, actor="test", action="test.charge") as session:
        table = DpRunTable(session, plane.ledger)
        prior = tuple(table.mechanisms())
        run = DpRun(
            id=uuid.uuid4().hex,
            tenant_id=scope.tenant_id,
            kind=kind,
            status="completed",
            noise_multiplier=mechanism.noise_multiplier,
            sample_rate=mechanism.sample_rate,
            steps=mechanism.steps,
            delta=DELTA,
            epsilon=composed((mechanism,)),
            epsilon_total=composed((*prior, mechanism)),
            details=details,
            created_at=utcnow(),
        )
        session.add(run)
        session.flush()
        charged = ChargedRun(
            Charge(mechanism, kind, details, id=run.id), DELTA, run.epsilon, run.epsilon_total
        )
        table.audit(CHARGED, f"dp_run:{run.id}", charge_details(charged, tenant.epsilon_cap))
        return run.id


def serve_record(platform: Platform, scope: Scope, model_version: str) -> str:
    """A served request row, as the serving request log writes it; its id."""
    request_id = uuid.uuid4().hex
    with platform.plane(scope.region).session(scope, actor="test", action="test.serve") as s:
        s.add(
            ServedRequest(
                request_id=request_id,
                tenant_id=scope.tenant_id,
                served_at=utcnow(),
                model_version=model_version,
                user_key=None,
                k=3,
                items=["i1", "i2", "i3"],
                cold_start=False,
                degraded=[],
                timings_ms={"total": 1.0},
            )
        )
    return request_id


def seed_audit_world(platform: Platform, folder: Path, *, backbone: bool = True) -> AuditWorld:
    """EU: shop (regional, 2 train runs, 2 federated rounds, a model, a request) and label
    (solo, 1 run); US: far. Refusals at EU's boundary, and one officer of every role."""
    eu = platform.plane(Region.EU)
    platform.create_tenant("shop", region=Region.EU, sharing=SharingPolicy.REGIONAL, actor="t")
    platform.create_tenant("label", region=Region.EU, sharing=SharingPolicy.SOLO, actor="t")
    platform.create_tenant("far", region=Region.US, sharing=SharingPolicy.GLOBAL, actor="t")
    shop, label = Scope("shop", Region.EU), Scope("label", Region.EU)
    items, interactions = tenant_files(folder / "shop")
    ingest(eu, shop, secret=platform.secret, actor="t", items=items, interactions=interactions)
    with eu.session(shop, actor="t", action="test.snapshot") as session:
        snapshot = snapshot_hash(session)

    train1 = charge(platform, shop, TRAIN, "train", users=5)
    round1 = charge(platform, shop, ROUND, "federation", federation_run=FED_RUN, round=1)
    round2 = charge(platform, shop, ROUND, "federation", federation_run=FED_RUN, round=2)
    train2 = charge(platform, shop, TRAIN, "train", users=5)
    label_run = charge(platform, label, TRAIN, "train", users=5)
    for n, (bb_in, bb_out) in enumerate(((None, "bb-v1"), ("bb-v1", "bb-v2")), start=1):
        eu.ledger.append(
            actor="test-aggregator",
            action="federation.round",
            subject=f"federation:{FED_RUN}/{n}",
            details={
                "region": "eu",
                "round": n,
                "status": "completed",
                "backbone_in": bb_in,
                "backbone_out": bb_out,
                "participants": ["other", "shop"],
                "epsilon": {"shop": 0.416, "other": 0.5},
            },
        )
    lineage = {
        "data_snapshot": snapshot,
        "code_version": "0.1.0+test",
        "hyperparameters": {"dim": 16},
        "dp": {
            "dp_run_id": train2,
            "noise_multiplier": TRAIN.noise_multiplier,
            "sample_rate": TRAIN.sample_rate,
            "steps": TRAIN.steps,
            "delta": 1e-6,
            "epsilon": 0.83,
        },
        "parent_backbone": {
            "version": "bb-v2",
            "region": "eu",
            "contributors": {"shop": 0.832, "other": 1.0},
        }
        if backbone
        else None,
        "items": 10,
        "users": 5,
        "interactions": 30,
    }
    model = eu.artifacts.publish(
        shop,
        KIND,
        lambda path: (path / "model.pt").write_bytes(b"placeholder"),
        actor="t",
        metadata=lineage,
    )
    requests = {
        "shop": serve_record(platform, shop, model.version),
        "label": serve_record(platform, label, "content-embeddings"),
    }
    for scope, target in ((Scope("far", Region.EU), None), (label, "shop")):
        with suppress(BoundaryViolation):
            eu.boundary.admit(scope, actor="t", action="test.read", target_tenant=target)
    officers = Officers(platform.control.engine)
    passwords = {
        officer_id: officers.create(officer_id, **spec).password
        for officer_id, spec in OFFICERS.items()
    }
    return AuditWorld(
        platform,
        passwords,
        requests,
        model.version,
        {"shop": [train1, round1, round2, train2], "label": [label_run]},
        snapshot,
    )


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = CSRF.search(html)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


def sign_in(client: TestClient, officer_id: str, password: str) -> Response:
    """Submit the sign-in form (without following the redirect)."""
    form = client.get("/audit/login")
    return client.post(
        "/audit/login",
        data={"officer_id": officer_id, "password": password, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )
