"""`SecureAggregation`: the aggregator adds CKKS ciphertexts and never holds a secret key.

Each client sends `weight x backbone` encrypted under the region's key (and, for a `global`
tenant, once more under the global tier's key). This wrapper replaces the base strategy's
averaging: it adds the ciphertexts and the plaintext weights, and passes the encrypted sum
on as the next round's start; the clients, which hold the key, divide after decrypting.
It only ever loads public contexts (`privacy.he.public_bytes`): decrypting here raises
`privacy.he.KeyUnavailableError`. With `encrypt=False` it sums float32 vectors instead
(the baseline the benchmark compares with).

A round needs `min_participants` valid updates; with fewer it fails and the backbone stays
as it was. A client that crashed or timed out is only missing from the sum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from atlasrec.errors import InvalidInputError
from atlasrec.federation.wire import ENCRYPTED, Start, Update
from atlasrec.tenancy import SharingPolicy
from privacy import he
from strategies.base import StrategyWrapper
from strategies.round_state import Contribution, RoundState

PublicContext = Callable[[], bytes]
"""Returns a key domain's public context (loaded when first needed)."""


class SecureAggregation(StrategyWrapper):
    """Sums encrypted (or, as a baseline, plaintext) weighted updates."""

    def __init__(
        self,
        inner: Strategy,
        *,
        state: RoundState,
        min_participants: int,
        length: int,
        region_context: PublicContext | None,
        global_context: PublicContext | None = None,
    ) -> None:
        super().__init__(inner)
        if min_participants < 1:
            raise InvalidInputError("min_participants must be at least 1")
        self.state = state
        self.min_participants = min_participants
        self.length = length
        self._region_source, self._global_source = region_context, global_context
        self._contexts: dict[str, he.Context] = {}

    @property
    def encrypted(self) -> bool:
        """Whether updates are CKKS ciphertexts."""
        return self._region_source is not None

    def _context(self, which: str) -> he.Context:
        if which not in self._contexts:
            source = self._region_source if which == "region" else self._global_source
            if source is None:
                raise InvalidInputError(f"no {which} key configured for this aggregator")
            context = he.load_context(source())
            if context.has_secret_key():  # an aggregator must never be handed a secret key
                raise InvalidInputError(f"the aggregator was given the {which} secret key")
            self._contexts[which] = context
        return self._contexts[which]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Tell clients whether to encrypt, then delegate."""
        config[ENCRYPTED] = self.encrypted
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Add the valid updates; None (round failed) with fewer than `min_participants`."""
        updates: list[Update] = []
        for reply in replies:
            tenant = self._tenant_of(reply)
            if reply.has_error():
                self.state.failed[tenant] = reply.error.reason or f"error {reply.error.code}"
                continue
            try:
                update = Update.from_content(reply.content, encrypted=self.encrypted)
                self._check(update)
            except InvalidInputError as exc:
                self.state.failed[tenant] = str(exc)
                continue
            updates.append(update)
        answered = {u.tenant_id for u in updates} | set(self.state.failed) | set(self.state.dropped)
        for member in self.state.admitted.values():
            if member.tenant_id not in answered:
                self.state.failed[member.tenant_id] = "no reply before the round's timeout"
        metrics = MetricRecord({"participants": len(updates), "failed": len(self.state.failed)})
        if len(updates) < self.min_participants:
            return None, metrics
        total_weight = float(sum(u.weight for u in updates))
        if self.encrypted:
            summed: bytes | np.ndarray = he.add(
                self._context("region"),
                [he.EncryptedVector.from_bytes(self._blob(u.update)) for u in updates],
            ).to_bytes()
        else:
            vectors = [np.asarray(u.update, dtype=np.float64) for u in updates]
            summed = np.sum(vectors, axis=0).astype(np.float32)
        self.state.contributions = [_contribution(u) for u in updates]
        self._aggregate_global(updates)
        self.state.aggregated = True
        return Start(payload=summed, weight=total_weight).to_record(), metrics

    def _aggregate_global(self, updates: list[Update]) -> None:
        """The global tenants' share, under the global key, for the cross-region tier."""
        shares = [u for u in updates if u.sharing == SharingPolicy.GLOBAL.value]
        if not shares or self._global_source is None or not self.encrypted:
            return
        missing = [u.tenant_id for u in shares if u.global_update is None]
        for tenant in missing:
            self.state.failed[f"{tenant} (global share)"] = "no global-key share in its update"
        shares = [u for u in shares if u.global_update is not None]
        if not shares:
            return
        self.state.global_sum = he.add(
            self._context("global"),
            [he.EncryptedVector.from_bytes(self._blob(u.global_update)) for u in shares],
        ).to_bytes()
        self.state.global_weight = float(sum(u.weight for u in shares))
        self.state.global_contributions = [_contribution(u) for u in shares]

    def _check(self, update: Update) -> None:
        """Refuse an update that could not be added: wrong key, length or shape."""
        if not self.encrypted:
            vector = np.asarray(update.update)
            if vector.ndim != 1 or vector.size != self.length or not np.isfinite(vector).all():
                raise InvalidInputError(f"update of {update.tenant_id!r} is not a backbone vector")
            return
        context = self._context("region")
        enc = he.EncryptedVector.from_bytes(self._blob(update.update))
        if enc.key_id != he.key_id(context) or enc.length != self.length:
            raise InvalidInputError(
                f"update of {update.tenant_id!r} is not under the region's key or has the "
                f"wrong length ({enc.length})"
            )

    def _tenant_of(self, reply: Message) -> str:
        member = self.state.admitted.get(reply.metadata.src_node_id)
        return member.tenant_id if member else f"node:{reply.metadata.src_node_id}"

    @staticmethod
    def _blob(value: bytes | np.ndarray | None) -> bytes:
        if not isinstance(value, bytes):
            raise InvalidInputError("expected an encrypted update")
        return value


def _contribution(update: Update) -> Contribution:
    return Contribution(
        update.tenant_id,
        update.sharing,
        update.weight,
        update.users,
        update.epsilon,
        update.dp_run_id,
    )
