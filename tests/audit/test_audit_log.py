"""The audit log: the ledger's tenant index (and its backfill), search by tenant, a tenant
officer's redacted view, key/value details, links to lineage, and pagination."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

import atlasrec.migrations as migrations
from atlasrec.dataplane.audit_tenants import record_tenants
from atlasrec.dataplane.tables import AuditRecord, AuditRecordTenant
from atlasrec.db import make_engine
from atlasrec.migrations import VERSION_TABLES, upgrade
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from audit.ledger import GENESIS_HASH, AuditLedger, canonical_json, compute_hash
from audit.reports import OTHER_TENANT
from privacy.epsilon_terms import STANDALONE
from tests.audit.conftest import ClientFactory
from tests.conftest import _pg_admin, _pg_url
from tests.utils.audit import AuditWorld, sign_in

DASH = "\N{EN DASH}"
LOG_ROW = re.compile(r'data-seq="(\d+)" data-tenant="([^"]*)" data-action="([^"]+)"')
ROUND_DETAILS = {
    "region": "eu",
    "round": 3,
    "status": "completed",
    "participants": ["other", "shop"],
    "epsilon": {"shop": 0.41627, "other": 0.5},
}
RECORDS = [  # (action, tenant_id, details): what each names
    ("federation.round", None, ROUND_DETAILS),
    ("federation.round", None, {"participants": {"label": 1}, "epsilon": {"zeta": 0.1}}),
    ("federation.exported", None, {"contributors": {"shop": 0.4, "far": 0.2}}),
    ("federation.excluded", "label", {"reason": "budget"}),
    ("boundary.refused", "far", {"target_tenant": "shop"}),
    ("dp.charged", "shop", {"participants": ["label"]}),  # not a federation record
    ("federation.round", None, {"participants": ["NOT A TENANT", 7]}),
]
EXPECTED = [
    {"other", "shop"},
    {"label", "zeta"},
    {"shop", "far"},
    {"label"},
    {"far", "shop"},
    {"shop"},
    set(),
]

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def signed_in(factory: ClientFactory, world: AuditWorld, officer: str) -> TestClient:
    client = factory(Region.EU)
    assert sign_in(client, officer, world.passwords[officer]).status_code == 303
    return client


def link(page: str, rel: str) -> str:
    """The pager's link of `rel` (`next`: older, `prev`: newer)."""
    match = re.search(rf'href="([^"]+)" rel="{rel}"', page)
    assert match is not None, f"no {rel} link"
    return html.unescape(match[1])


def indexed(engine: Engine) -> dict[int, set[str]]:
    with Session(engine) as session:
        rows = session.execute(select(AuditRecordTenant.seq, AuditRecordTenant.tenant_id)).all()
    index: dict[int, set[str]] = {}
    for seq, tenant in rows:
        index.setdefault(seq, set()).add(tenant)
    return index


def test_the_ledger_indexes_every_tenant_a_record_concerns(platform: Platform) -> None:
    ledger = platform.plane(Region.EU).ledger
    appended = [
        ledger.append(actor="t", action=a, subject="s", tenant_id=t, details=d)
        for a, t, d in RECORDS
    ]
    index = indexed(ledger.engine)
    assert [index.get(r.seq, set()) for r in appended] == EXPECTED
    assert all(compute_hash(r) == r.hash for r in appended)  # the records are unchanged
    assert ledger.verify().ok


def _upgrade_to(engine: Engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent / "region"))
    cfg.attributes.update(version_table=VERSION_TABLES["region"], app_role="atlasrec_app")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _old_style_ledger(engine: Engine, n: int) -> None:
    """Records as r0006's ledger wrote them: no index rows."""
    prev = GENESIS_HASH
    with Session(engine) as session, session.begin():
        for seq in range(1, n + 1):
            action, tenant, details = RECORDS[(seq - 1) % len(RECORDS)]
            record = AuditRecord(
                seq=seq,
                ts=datetime.now(UTC).isoformat(),
                tenant_id=tenant,
                region="eu",
                actor="old",
                action=action,
                subject=f"old:{seq}",
                details=canonical_json(details),
                prev_hash=prev,
                hash="",
            )
            record.hash = prev = compute_hash(record)
            session.add(record)


@pytest.fixture
def fresh_engine(backend: str, tmp_path: Path) -> Engine:
    if backend == "sqlite":
        return make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    name = f"atlasrec_bf_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as admin:
        admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    return make_engine(_pg_url(name))


@pytest.fixture
def old_engine(fresh_engine: Engine, backend: str) -> Iterator[Engine]:
    yield fresh_engine
    fresh_engine.dispose()
    if backend == "postgres":
        with _pg_admin() as admin:
            admin.execute(f"DROP DATABASE {fresh_engine.url.database} WITH (FORCE)")  # type: ignore[arg-type]


def test_the_migration_backfills_the_index_of_an_old_ledger(old_engine: Engine) -> None:
    n = 2003  # past the migration's first batch of 2,000
    _upgrade_to(old_engine, "r0006")
    _old_style_ledger(old_engine, n)
    assert upgrade(old_engine, "region") is True
    index = indexed(old_engine)
    with Session(old_engine) as session:
        records = session.execute(select(AuditRecord).order_by(col(AuditRecord.seq))).scalars()
        for record in records:  # the frozen rule agrees with the live one on every record
            assert index.get(record.seq, set()) == record_tenants(record)
    assert [index.get(s, set()) for s in range(1, len(RECORDS) + 1)] == EXPECTED
    ledger = AuditLedger(Region.EU, old_engine)
    assert ledger.verify().ok  # records and hashes untouched
    new = ledger.append(actor="t", action="federation.round", subject="s", details=ROUND_DETAILS)
    assert indexed(old_engine)[new.seq] == {"other", "shop"}


def test_a_tenant_search_finds_the_federation_rounds_it_took_part_in(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    client = signed_in(app_client, world, "po-eu")
    rows = LOG_ROW.findall(client.get("/audit/log?tenant=shop&action=federation.").text)
    assert [a for _, _, a in rows] == ["federation.round", "federation.round"]
    assert LOG_ROW.findall(client.get("/audit/log?tenant=label&action=federation.").text) == []
    page = client.get("/audit/log?tenant=shop&action=federation.round").text
    assert "other" in page and "0.5" in page  # a platform officer sees every participant
    assert f'epsilon <span class="term">({STANDALONE.label})</span>' in page  # which epsilon


def test_a_tenant_officer_sees_its_rounds_with_other_tenants_redacted(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    ledger = world.platform.plane(Region.EU).ledger
    ledger.append(
        actor="aggregator:eu",
        action="federation.exported",
        subject="global-share:eu/other",
        details={"contributors": {"shop": 0.4, "other": 0.77, "third": 0.66}},
    )
    shop = signed_in(app_client, world, "to-shop")
    page = shop.get("/audit/log?action=federation.").text
    rows = LOG_ROW.findall(page)
    assert [a for _, _, a in rows] == ["federation.exported", *["federation.round"] * 2]
    text = html.unescape(page)
    for hidden in ("other", "third", "0.5", "0.77", "0.66"):  # ids, and their epsilons
        assert not re.search(rf"(?<![\w.-]){re.escape(hidden)}(?![\w.-])", text), hidden
    assert OTHER_TENANT in text and "0.416" in text and "withheld (2 tenants)" in text
    assert "global-share:<wbr>eu/<wbr>(another tenant)" in text
    # a text search cannot probe for another tenant's id behind the redaction
    for probe in ("third", "0.77"):
        assert LOG_ROW.findall(shop.get(f"/audit/log?q={probe}").text) == [], probe
    assert len(LOG_ROW.findall(shop.get("/audit/log?q=another").text)) >= 3
    label = signed_in(app_client, world, "to-label")
    assert LOG_ROW.findall(label.get("/audit/log?action=federation.").text) == []


@sqlite_only
def test_details_show_as_key_values(world: AuditWorld, app_client: ClientFactory) -> None:
    digest = "ab" * 32
    ledger = world.platform.plane(Region.EU).ledger
    record = ledger.append(
        actor="t",
        action="test.details",
        subject="model:shop/v1",
        tenant_id="shop",
        details={
            "sha256": digest,
            "nested": {"inner": {"deep": 1}},
            "items": ["a", "b", "c"],
            "epsilon_total_after": 0.123456,
            "bytes": 1234567,
            "weight": 4217.5,
            "none": None,
        },
    )
    client = signed_in(app_client, world, "po-eu")
    page = client.get("/audit/log?action=test.details").text
    row = page[page.index(f'data-seq="{record.seq}"') :]
    row = row[: row.index("</tr>")]
    assert '<td class="details"><dl class="kv">' in row and "{" not in row
    assert f'<abbr class="id" title="{digest}">{digest[:12]}…</abbr>' in row
    assert '<dt>nested</dt><dd><dl class="kv"><div><dt>inner</dt><dd><dl' in row
    assert '<span class="number">0.1235</span>' in row
    assert '<span class="number">1,234,567</span>' in row
    assert '<span class="number">4,217.5</span>' in row
    assert "a</span>" not in row and "a, <wbr>b, <wbr>c" in row
    assert "model:<wbr>shop/<wbr>v1" in row  # breaks only after separators
    run = ledger.append(actor="t", action="test.details", subject=f"dp_run:{digest}")
    page = client.get("/audit/log?action=test.details").text
    shortened = f'dp_run:<wbr><abbr class="id" title="dp_run:{digest}">{digest[:8]}…{digest[-6:]}'
    assert shortened in page and f'data-seq="{run.seq}"' in page


@sqlite_only
def test_request_ids_link_to_their_lineage(world: AuditWorld, app_client: ClientFactory) -> None:
    request_id = world.requests["shop"]
    ledger = world.platform.plane(Region.EU).ledger
    ledger.append(
        actor="serving",
        action="serving.requests",
        subject="tenant:shop",
        tenant_id="shop",
        details={"count": 1, "first_request_id": request_id, "last_request_id": request_id},
    )
    ledger.append(
        actor="api-key:shop",
        action="catalog.upserted",
        subject="tenant:shop",
        tenant_id="shop",
        details={"items": 2, "request_id": "c" * 32},  # an HTTP write's id: no lineage
    )
    ledger.append(actor="t", action="test.request", subject=f"request:{request_id}")
    client = signed_in(app_client, world, "po-eu")
    page = client.get("/audit/log").text
    href = f'href="/audit/lineage?request_id={request_id}"'
    assert page.count(href) == 3
    assert "/audit/lineage?request_id=" + "c" * 32 not in page
    lineage = client.get(f"/audit/lineage?request_id={request_id}")
    assert lineage.status_code == 200 and world.model_version in lineage.text


@sqlite_only
def test_the_log_pages_with_counts_and_keeps_the_filters(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    ledger = world.platform.plane(Region.EU).ledger
    seqs = [
        ledger.append(actor="t", action="test.page", subject=f"n{i}", tenant_id="shop").seq
        for i in range(23)
    ]
    client = signed_in(app_client, world, "po-eu")
    first = client.get("/audit/log?tenant=shop&action=test.&limit=10").text
    assert [int(s) for s, _, _ in LOG_ROW.findall(first)] == seqs[::-1][:10]
    assert f"records 1{DASH}10 of 23 matching (seq {seqs[-1]}{DASH}{seqs[-10]})" in first
    assert 'id="chain-status">region eu: audit chain intact' in first
    older = link(first, "next")
    assert older == f"/audit/log?tenant=shop&action=test.&limit=10&before={seqs[-10]}"
    second = client.get(older).text
    assert [int(s) for s, _, _ in LOG_ROW.findall(second)] == seqs[::-1][10:20]
    assert f"records 11{DASH}20 of 23 matching" in second and 'rel="first"' in second
    third = client.get(link(second, "next")).text
    assert f"records 21{DASH}23 of 23 matching" in third and 'rel="next"' not in third
    newer = link(third, "prev")
    assert newer.endswith(f"&after={seqs[2]}")
    assert f"records 11{DASH}20 of 23" in client.get(newer).text
    assert '<option value="10" selected>10</option>' in first  # the size asked for, kept
    assert '<option value="25">25</option>' in first  # and the usual ones to choose from
    assert client.get("/audit/log?after=0").status_code == 422
