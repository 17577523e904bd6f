"""`LocalGrid`: Flower's `Grid` for in-process clients, the embedded engine of `federate`.

The same ServerApp strategy and the same ClientApp handlers run as with a SuperLink and
SuperNodes, but messages are handed to the ClientApp directly, one node per tenant, with no
network and no Ray: what `atlasrec federate` uses by default (embedded defaults: in-process
jobs). Messages go through Flower's own (de)serialisation of records, so what a client
receives is a copy, as over the wire. A node whose handler raises answers with an error
reply; a node still busy at the timeout is reported as missing.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

_run_ids = itertools.count(1)
CLIENT_ERROR = 500


class LocalGrid(Grid):
    """Delivers messages to in-process ClientApp nodes; `nodes` maps node id -> node config."""

    def __init__(
        self,
        client_app: ClientApp,
        nodes: dict[int, dict[str, bool | float | int | str]],
        *,
        run_config: dict[str, bool | float | int | str] | None = None,
        workers: int = 1,
    ) -> None:
        self.client_app = client_app
        self._run = Run.create_empty(next(_run_ids))
        self.contexts = {
            node_id: Context(
                run_id=self._run.run_id,
                node_id=node_id,
                node_config=dict(config),
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for node_id, config in nodes.items()
        }
        self.workers = max(1, workers)
        self._pending: dict[str, Message] = {}
        # Messages made on the server side name it as their sender.
        TaskIdentity.task_id = 0
        TaskIdentity.run_id = self._run.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    def set_run(self, run: Run) -> None:
        """Adopt `run`."""
        self._run = run

    @property
    def run(self) -> Run:
        """The run this grid operates in."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A message to one node."""
        return Message(
            content=content, message_type=message_type, dst_node_id=dst_node_id, group_id=group_id
        )

    def get_node_ids(self) -> Iterable[int]:
        """Every in-process node."""
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Queue messages; their ids let `pull_messages` deliver them."""
        ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            self._pending[message_id] = message
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Deliver queued messages and return the replies."""
        return self.send_and_receive([self._pending.pop(i) for i in message_ids])

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver each message to its node; replies of the nodes done within `timeout`."""
        batch = list(messages)
        if not batch:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(batch)))
        try:
            futures = [pool.submit(self._deliver, message) for message in batch]
            done, _ = wait(futures, timeout=timeout)
            return [future.result() for future in futures if future in done]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # a stalled node is left behind

    def _deliver(self, message: Message) -> Message:
        node_id = message.metadata.dst_node_id
        context = self.contexts.get(node_id)
        copy = Message(
            content=recorddict_from_proto(recorddict_to_proto(message.content)),
            message_type=message.metadata.message_type,
            dst_node_id=node_id,
        )
        if context is None:
            return Message(Error(CLIENT_ERROR, f"no node {node_id}"), reply_to=copy)
        try:
            return self.client_app(copy, context)
        except Exception as exc:  # a crashing client fails its own reply, not the round
            return Message(Error(CLIENT_ERROR, f"{type(exc).__name__}: {exc}"), reply_to=copy)
