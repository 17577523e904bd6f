"""What every region's ledger holds about a tenant's refused crossings, read in place.

A tenant's residency report reads its home region's ledger directly; the other regions'
ledgers answer through their audit API (`audit.ui.routes.peer_api`) at page-build time.
Each answer says which region's ledger holds the records, or why that region did not
answer, so a report can say whether it is complete. Nothing is stored here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atlasrec.tenancy import Region

MAX_REFUSALS = 200
"""The most refusal records one region's ledger returns per request (newest first)."""
NOT_CONSULTED = "not consulted: this report read only the home region's ledger"


@dataclass(frozen=True)
class LedgerAnswer:
    """One region's ledger's refusal records about a tenant, or why it did not answer."""

    region: Region
    refusals: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    """Why the region did not answer (None: it answered)."""
    truncated: bool = False

    @property
    def answered(self) -> bool:
        """Whether the region's ledger answered."""
        return self.reason is None

    @classmethod
    def not_answering(cls, region: Region, reason: str) -> LedgerAnswer:
        """A region that did not answer, and why."""
        return cls(region, [], reason)


def newest(
    rows: list[dict[str, Any]], limit: int = MAX_REFUSALS
) -> tuple[list[dict[str, Any]], bool]:
    """The newest `limit` records (newest first), and whether any were left out."""
    ordered = sorted(rows, key=lambda r: r["seq"], reverse=True)
    return ordered[:limit], len(ordered) > limit


def with_ledger(rows: Sequence[dict[str, Any]], region: Region) -> list[dict[str, Any]]:
    """The records, each saying which region's ledger holds it."""
    return [{**row, "ledger_region": region.value} for row in rows]


def all_refusals(
    home: Region, home_rows: Sequence[dict[str, Any]], others: Sequence[LedgerAnswer]
) -> list[dict[str, Any]]:
    """The home ledger's records and the other regions' answers, oldest first."""
    rows = with_ledger(home_rows, home)
    for answer in others:
        if answer.region != home:
            rows += with_ledger(answer.refusals, answer.region)
    return sorted(rows, key=lambda r: (r["ts"], r["ledger_region"], r["seq"]))


def refusal_ledgers(
    home: Region, home_rows: Sequence[dict[str, Any]], others: Sequence[LedgerAnswer]
) -> list[dict[str, Any]]:
    """A line per region: whether its ledger answered (the home one is read in place)."""
    by_region = {a.region: a for a in others if a.region != home}
    lines = []
    for region in sorted(Region, key=lambda r: (r != home, r.value)):
        answer = by_region.get(region)
        if region == home:
            answer = LedgerAnswer(home, list(home_rows))
        elif answer is None:
            answer = LedgerAnswer.not_answering(region, NOT_CONSULTED)
        lines.append(
            {
                "region": region.value,
                "answered": answer.answered,
                "reason": answer.reason,
                "records": len(answer.refusals),
                "truncated": answer.truncated,
            }
        )
    return lines
