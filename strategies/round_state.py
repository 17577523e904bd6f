"""`RoundState`: what the wrappers of one aggregator learn during a round, shared among them.

The residency guard fills the roster (a query message to every node: who are you, does this
round fit your budget?), the guards record whom they excluded or dropped and why, and
secure aggregation records who contributed; the audit wrapper writes it all down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from atlasrec.errors import InvalidInputError
from atlasrec.federation.wire import CONFIG, Status

Audit = Callable[[str | None, str, dict[str, Any]], None]
"""Writes one audit record: (tenant_id or None, action, details)."""


@dataclass(frozen=True)
class Member(Status):
    """A node's answer to the roster query, and the node."""

    node_id: int


@dataclass(frozen=True)
class Contribution:
    """One accepted update of a round."""

    tenant_id: str
    sharing: str
    weight: float
    users: int
    epsilon: float
    dp_run_id: str


@dataclass
class RoundState:
    """Everything known about the current round; reset by `start_round`."""

    round: int = 0
    members: dict[int, Member] = field(default_factory=dict)
    admitted: dict[int, Member] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    """Nodes (by tenant id, or `node:<id>`) not asked to train, with the reason."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Replies thrown away, with the reason."""
    failed: dict[str, str] = field(default_factory=dict)
    """Admitted nodes whose training failed or timed out."""
    contributions: list[Contribution] = field(default_factory=list)
    global_contributions: list[Contribution] = field(default_factory=list)
    global_sum: bytes | None = None
    global_weight: float = 0.0
    aggregated: bool = False

    def start_round(self, server_round: int) -> None:
        """Forget the previous round."""
        self.__init__()  # type: ignore[misc]
        self.round = server_round

    def refresh_roster(self, grid: Grid, config: ConfigRecord, timeout: float) -> None:
        """Ask every connected node who it is and whether it can afford the round."""
        messages = [
            Message(
                content=RecordDict({CONFIG: config}),
                message_type=MessageType.QUERY,
                dst_node_id=node_id,
            )
            for node_id in grid.get_node_ids()
        ]
        replies = grid.send_and_receive(messages, timeout=timeout) if messages else []
        answered = set()
        for reply in replies:
            node_id = reply.metadata.src_node_id
            answered.add(node_id)
            if reply.has_error():
                self.refused[f"node:{node_id}"] = f"refused to join: {reply.error.reason}"
                continue
            try:
                status = Status.from_content(reply.content)
            except InvalidInputError as exc:
                self.refused[f"node:{node_id}"] = str(exc)
                continue
            self.members[node_id] = Member(**asdict(status), node_id=node_id)
        for message in messages:
            node_id = message.metadata.dst_node_id
            if node_id not in answered:
                self.refused[f"node:{node_id}"] = "no answer to the roster query"
