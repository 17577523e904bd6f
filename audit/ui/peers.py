"""Calls from one region's audit UI to the other regions' audit APIs, on an officer's behalf.

Each call carries a fresh peer token (`audit.ui.peer_tokens`) and a short timeout; calls
run in parallel. A region that does not answer (no endpoint registered, refused connection,
timeout, an error status, a malformed body) is a reply with the reason, never an error.
The page's own region is answered in-process by the same function its API serves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from atlasrec.tenancy import Region
from audit.ledger_answers import LedgerAnswer
from audit.ui.deps import SignedIn
from audit.ui.peer_tokens import mint, peer_signer

PEER_TIMEOUT_S = 3.0
API = "/audit/api/v1"


@dataclass(frozen=True)
class PeerReply:
    """One region's answer (`body`), or why it did not answer (`reason`)."""

    region: Region
    body: dict[str, Any] | None
    reason: str | None = None


def ask_regions(
    who: SignedIn,
    regions: Sequence[Region],
    path: str,
    params: dict[str, str] | None = None,
    *,
    local: Callable[[], dict[str, Any]] | None = None,
) -> list[PeerReply]:
    """Ask every region's `API + path` in parallel; the own region through `local` if given."""
    context = who.context
    endpoints = context.platform.control.region_endpoints()
    fp = who.session.fingerprint  # `signed_in` checked it against the officer's account
    signer = peer_signer(context.platform.secret)

    def ask(region: Region) -> PeerReply:
        if region == context.region and local is not None:
            return PeerReply(region, local())
        base = endpoints.get(region)
        if base is None:
            return PeerReply(region, None, "no endpoint registered for this region")
        token = mint(signer, who.principal.officer_id, fp, context.region, region)
        return _get(region, f"{base}{API}{path}", params or {}, token)

    if not regions:
        return []
    with ThreadPoolExecutor(max_workers=len(regions)) as pool:
        return list(pool.map(ask, regions))


def _get(region: Region, url: str, params: dict[str, str], token: str) -> PeerReply:
    """GET one peer's API; any failure becomes the reply's reason."""
    try:
        response = httpx.get(
            url,
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=PEER_TIMEOUT_S,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        return PeerReply(region, None, f"no answer within {PEER_TIMEOUT_S:g} s")
    except httpx.ConnectError:
        return PeerReply(region, None, "connection refused or host unreachable")
    except httpx.HTTPError as exc:
        return PeerReply(region, None, f"request failed: {type(exc).__name__}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        detail = body.get("detail") if isinstance(body, dict) else None
        return PeerReply(region, None, f"answered {response.status_code}: {detail or 'error'}")
    if not isinstance(body, dict):
        return PeerReply(region, None, "answered with a malformed body")
    return PeerReply(region, body)


def gather_refusals(who: SignedIn, tenant_id: str) -> list[LedgerAnswer]:
    """The other regions' ledgers' refusal records involving the tenant, read in place."""
    others = [r for r in Region if r != who.context.region]
    replies = ask_regions(who, others, "/refusals", {"tenant": tenant_id})
    return [_ledger_answer(reply) for reply in replies]


def _ledger_answer(reply: PeerReply) -> LedgerAnswer:
    if reply.body is None:
        return LedgerAnswer.not_answering(reply.region, reply.reason or "no answer")
    rows = reply.body.get("refusals")
    if not isinstance(rows, list) or not all(_is_record(row) for row in rows):
        return LedgerAnswer.not_answering(reply.region, "answered with malformed records")
    return LedgerAnswer(reply.region, rows, truncated=bool(reply.body.get("truncated")))


def _is_record(row: Any) -> bool:
    return (
        isinstance(row, dict)
        and isinstance(row.get("seq"), int)
        and isinstance(row.get("ts"), str)
        and isinstance(row.get("details"), dict)
    )
