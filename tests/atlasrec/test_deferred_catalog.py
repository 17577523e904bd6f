"""Deferred catalog upserts: a later write of an item wins, and a redelivery writes nothing."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlmodel import Session, select

from atlasrec.clock import utcnow
from atlasrec.dataplane.repository import TenantData
from atlasrec.dataplane.tables import Item
from atlasrec.deferred_catalog import UPSERTED, apply_deferred
from atlasrec.eventlog.records import CATALOG, CatalogRecord
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope, SharingPolicy

SHOP = Scope("shop", Region.EU)


def row(item_id: str, title: str) -> dict[str, object]:
    return {
        "item_id": item_id,
        "title": title,
        "category": "jazz",
        "description": None,
        "attributes": {},
    }


def titles(platform: Platform) -> dict[str, str]:
    with Session(platform.plane(Region.EU).engine) as session:
        return {i.item_id: i.title for i in session.exec(select(Item)).all()}


def test_a_later_write_wins_and_a_redelivery_writes_nothing(platform: Platform) -> None:
    platform.create_tenant("shop", region=Region.EU, sharing=SharingPolicy.SOLO, actor="test")
    plane = platform.plane(Region.EU)
    accepted = utcnow() - timedelta(seconds=30)
    early = CatalogRecord("r1", accepted, (row("a", "deferred a"), row("b", "deferred b")))
    later = CatalogRecord("r2", accepted + timedelta(seconds=1), (row("a", "deferred a2"),))
    with plane.session(SHOP, actor="test", action="test") as session:  # a direct write, after
        TenantData(session).upsert_items([{**row("b", "direct b"), "updated_at": utcnow()}])
    assert apply_deferred(plane, SHOP, [early, later]) == 2  # a (early), a (later)
    assert titles(platform) == {"a": "deferred a2", "b": "direct b"}
    assert apply_deferred(plane, SHOP, [early, later]) == 0  # redelivered: nothing
    assert titles(platform) == {"a": "deferred a2", "b": "direct b"}
    records = [json.loads(r.details) for r in plane.ledger.records(action=UPSERTED)]
    assert [(r["request_id"], r["items"]) for r in records] == [("r1", 1), ("r2", 1)]
    assert records[0]["superseded"] == 1 and records[0]["deferred"] is True


def test_a_catalog_record_survives_its_encoding() -> None:
    record = CatalogRecord("r9", utcnow(), (row("é-1", "Titre à accents"),))
    assert CATALOG.decode(record.encode()) == record
