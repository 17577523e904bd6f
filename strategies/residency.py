"""`ResidencyGuard`: only tenants the region's policy admits train, and only their updates count.

Before each round it asks every node who it is (`RoundState.refresh_roster`), checks each
answer against the control plane with `atlasrec.boundary.federation_refusal` (the one
federation rule) and sends the round only to admitted nodes. After the round it drops any
reply from a node it did not admit, or whose tenant or region tag differs from the admitted
one. Every refusal and every drop is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from atlasrec.boundary import federation_refusal
from atlasrec.federation.wire import TAGS
from atlasrec.tenancy import Region, SharingPolicy
from strategies.base import StrategyWrapper
from strategies.round_state import Audit, RoundState

Registry = Callable[[str], tuple[Region | None, SharingPolicy | None]]
"""Control-plane lookup: a tenant's home region and sharing policy (None if unknown)."""

REFUSED, DROPPED = "federation.refused", "federation.update_dropped"


class ResidencyGuard(StrategyWrapper):
    """Admits only tenants homed in `region` whose policy allows federation."""

    def __init__(
        self,
        inner: Strategy,
        *,
        region: Region,
        registry: Registry,
        state: RoundState,
        audit: Audit,
        query_timeout: float = 120.0,
    ) -> None:
        super().__init__(inner)
        self.region = region
        self.registry = registry
        self.state = state
        self.audit = audit
        self.query_timeout = query_timeout

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Refresh the roster, then send the round only to admitted nodes."""
        self.state.refresh_roster(grid, config, self.query_timeout)
        for node, why in list(self.state.refused.items()):
            self.audit(None, REFUSED, {"node": node, "reason": why, "round": server_round})
        for node_id, member in self.state.members.items():
            home, sharing = self.registry(member.tenant_id)
            reason = federation_refusal(member.tenant_id, home, sharing, self.region)
            if reason is None and member.region != self.region.value:
                reason = f"node of {member.tenant_id!r} claims region {member.region!r}"
            if reason is None and sharing is not None and member.sharing != sharing.value:
                reason = f"node of {member.tenant_id!r} claims sharing {member.sharing!r}"
            if reason is None:
                self.state.admitted[node_id] = member
            else:
                self.state.refused[member.tenant_id] = reason
                self.audit(
                    member.tenant_id,
                    REFUSED,
                    {"node": node_id, "reason": reason, "round": server_round},
                )
        messages = self.inner.configure_train(server_round, arrays, config, grid)
        return [m for m in messages if m.metadata.dst_node_id in self.state.admitted]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop (and audit) replies whose sender or tags the guard did not admit."""
        kept = []
        for reply in replies:
            node_id = reply.metadata.src_node_id
            member = self.state.admitted.get(node_id)
            reason = None
            if member is None:
                reason = f"reply from node {node_id}, which was not admitted to this round"
            elif not reply.has_error():
                tags = reply.content.config_records.get(TAGS)
                tenant = None if tags is None else tags.get("tenant_id")
                region = None if tags is None else tags.get("region")
                sharing = None if tags is None else tags.get("sharing")
                if (tenant, region, sharing) != (
                    member.tenant_id,
                    self.region.value,
                    member.sharing,
                ):
                    reason = (
                        f"update tagged tenant={tenant!r} region={region!r} sharing={sharing!r} "
                        f"from the node of {member.tenant_id!r} in {self.region.value!r}"
                    )
            if reason is None:
                kept.append(reply)
                continue
            who = member.tenant_id if member else f"node:{node_id}"
            self.state.dropped[who] = reason
            self.audit(
                member.tenant_id if member else None,
                DROPPED,
                {"node": node_id, "reason": reason, "round": server_round},
            )
        return self.inner.aggregate_train(server_round, kept)
