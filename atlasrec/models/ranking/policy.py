"""The policy filter: what may be shown to whom (item policies, request filters).

It has no fallback: serving runs it on every response. `PolicyFilter.one` filters one
ranked list (lazily, up to `k` items), `batch` several.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from atlasrec.catalog import ItemPolicy

Entry = tuple[str, str | None, ItemPolicy, float]
"""A ranked item: (item id, category name, policy, score)."""


@dataclass(frozen=True)
class PolicyConfig:
    """What a request allows: the user's age and country, categories, excluded ids."""

    user_age: int | None = None
    country: str | None = None
    categories: frozenset[str] | None = None
    """Only items of these categories (None: any)."""
    exclude_items: frozenset[str] = frozenset()


class PolicyFilter:
    """Drops items a request may not get: `one` for a list, `batch` for several."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()

    def allowed(self, policy: ItemPolicy, category: str | None, item_id: str) -> bool:
        """Whether the item passes the request's filters and its own policy."""
        config = self.config
        if item_id in config.exclude_items:
            return False
        if config.categories is not None and category not in config.categories:
            return False
        return policy.allows(config.user_age, config.country)

    def one(self, entries: Iterable[Entry], k: int) -> list[tuple[str, float]]:
        """The first `k` allowed items of `entries` (read no further), scores rounded."""
        out: list[tuple[str, float]] = []
        if k < 1:
            return out
        for item_id, category, policy, score in entries:
            if self.allowed(policy, category, item_id):
                out.append((item_id, round(float(score), 6)))
                if len(out) == k:
                    break
        return out

    def batch(self, lists: Sequence[Iterable[Entry]], k: int) -> list[list[tuple[str, float]]]:
        """`one` for each list."""
        return [self.one(entries, k) for entries in lists]
