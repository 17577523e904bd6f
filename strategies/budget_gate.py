"""`BudgetGate`: a client whose next round would exceed its DP cap is excluded before it starts.

The roster answer carries the round's cost (the client computes it from its own privacy
ledger) and what is already spent; the gate keeps the round away from a client it would push
past its cap, and audits the exclusion. The hard guarantee stays with the client: its ledger
refuses the charge under a lock (`privacy.budget.PrivacyLedger.reserve`) whatever it is sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from strategies.base import StrategyWrapper
from strategies.round_state import Audit, RoundState

EXCLUDED = "federation.excluded"


class BudgetGate(StrategyWrapper):
    """Excludes admitted nodes whose round cost does not fit their remaining budget."""

    def __init__(self, inner: Strategy, *, state: RoundState, audit: Audit) -> None:
        super().__init__(inner)
        self.state = state
        self.audit = audit

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Pass on only the messages of nodes that can afford the round."""
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        kept = []
        for message in messages:
            member = self.state.admitted.get(message.metadata.dst_node_id)
            if member is not None and member.affordable:
                kept.append(message)
                continue
            if member is None:
                continue
            reason = (
                "no interactions to train on"
                if member.users == 0
                else f"round costs epsilon {member.round_cost:.3f}; {member.spent:.3f} of "
                f"{member.cap:g} already spent"
            )
            del self.state.admitted[member.node_id]
            self.state.refused[member.tenant_id] = reason
            self.audit(
                member.tenant_id,
                EXCLUDED,
                {
                    "round": server_round,
                    "reason": reason,
                    "round_cost": member.round_cost,
                    "spent": member.spent,
                    "cap": member.cap,
                },
            )
        return kept
