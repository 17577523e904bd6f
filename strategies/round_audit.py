"""`RoundAudit`: the outermost wrapper; numbers rounds, and records each one when it ends.

It starts each round's shared `RoundState`, puts the round number (continuing a resumed
run's count) and the backbone version in into the clients' config, and after aggregation
hands the round to `record`, which publishes the new backbone version and writes the
audit record; its return value is the next round's backbone version in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from strategies.base import StrategyWrapper
from strategies.round_state import RoundState

PublishRound = Callable[[int, ArrayRecord | None, RoundState], str | None]
"""(round, aggregate or None if the round failed, state) -> backbone version after it."""


class RoundAudit(StrategyWrapper):
    """Records every round, failed ones too."""

    def __init__(
        self,
        inner: Strategy,
        *,
        state: RoundState,
        record: PublishRound,
        round_offset: int = 0,
        backbone_in: str | None = None,
    ) -> None:
        super().__init__(inner)
        self.state = state
        self.record = record
        self.round_offset = round_offset
        self.backbone = backbone_in

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Start the round's state; tell clients the round and the backbone they start from."""
        number = self.round_offset + server_round
        self.state.start_round(number)
        config["round"] = number
        config["backbone_in"] = self.backbone or ""
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate, then record the round (a failed one keeps the backbone as it was)."""
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        self.backbone = self.record(self.state.round, arrays, self.state) or self.backbone
        return arrays, metrics
