"""The tenant's ranker: a linear scorer over the ranking features (`features.FEATURES`).

Features are standardised with the statistics of the data it was fitted on, then weighted.
Until a ranker is fitted, `DEFAULT_RANKER` keeps the retrieval order (weight on the retrieval
score only); a DP model ranks by its own scoring, `prior_ranker` (cosine / temperature +
w * log-popularity). `fit_ranker` fits one on candidate lists (`RankingLists`, built without
leakage by `atlasrec.models.ranking.fit`); `select_ranker` keeps it only if it beats the
retrieval order. A `LinearRanker` scores one list (`score`) or a batch (`score_lists`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from atlasrec.models.ranking.features import FEATURES, FeaturesConfig

if TYPE_CHECKING:
    from atlasrec.models.two_tower import TwoTower


@dataclass(frozen=True)
class LinearRanker:
    """score = sum_f weight_f * (x_f - mean_f) / scale_f."""

    weights: tuple[float, ...]
    mean: tuple[float, ...] = field(default=(0.0,) * len(FEATURES))
    scale: tuple[float, ...] = field(default=(1.0,) * len(FEATURES))
    fitted: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("weights", "mean", "scale"):
            values = getattr(self, name)
            if len(values) != len(FEATURES) or not all(math.isfinite(v) for v in values):
                raise ValueError(f"ranker {name} must be {len(FEATURES)} finite numbers")
        if any(s <= 0 for s in self.scale):
            raise ValueError("ranker scales must be positive")

    @property
    def uses_item_stats(self) -> bool:
        """Whether scores depend on item statistics (popularity or recency)."""
        return any(self.weights[FEATURES.index(f)] != 0 for f in ("popularity", "recency"))

    @property
    def uses_cooccurrence(self) -> bool:
        """Whether scores depend on the co-occurrence neighbours."""
        return self.weights[FEATURES.index("cooccurrence")] != 0

    @property
    def feature_config(self) -> FeaturesConfig:
        """The feature inputs this ranker needs looked up."""
        return FeaturesConfig(item_stats=self.uses_item_stats, cooccurrence=self.uses_cooccurrence)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores [n] of a feature matrix [n, len(FEATURES)] (one list)."""
        z = (features - np.asarray(self.mean, np.float32)) / np.asarray(self.scale, np.float32)
        out: np.ndarray = z @ np.asarray(self.weights, np.float32)
        return out

    def score_lists(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Scores [lists, candidates] of features [lists, candidates, F]; -inf where padded."""
        n, c, f = features.shape
        scores = self.score(features.reshape(n * c, f)).reshape(n, c)
        return np.where(mask, scores, -np.inf)

    def to_json(self) -> str:
        """Serialised form (the artifact's `ranker.json`)."""
        return json.dumps({"features": list(FEATURES), **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> LinearRanker:
        """Load a serialised ranker; refuses one with features this code does not compute.

        A ranker saved before a feature existed loads with weight 0 on it (mean 0, scale 1).
        """
        data = json.loads(text)
        saved = list(data.pop("features"))
        unknown = sorted(set(saved) - set(FEATURES))
        if unknown or len(set(saved)) != len(saved):
            raise ValueError(f"ranker was fitted on a different feature set ({saved})")
        columns = {name: n for n, name in enumerate(saved)}

        def values(key: str, missing: float) -> tuple[float, ...]:
            given = list(data[key])
            if len(given) != len(saved):
                raise ValueError(f"ranker {key} must be {len(saved)} numbers")
            return tuple(given[columns[f]] if f in columns else missing for f in FEATURES)

        return cls(
            weights=values("weights", 0.0),
            mean=values("mean", 0.0),
            scale=values("scale", 1.0),
            fitted=bool(data["fitted"]),
            details=dict(data.get("details", {})),
        )


DEFAULT_RANKER = LinearRanker(weights=(1.0,) + (0.0,) * (len(FEATURES) - 1))


def prior_ranker(temperature: float, popularity_weight: float) -> LinearRanker:
    """The retrieval model's own scoring: cosine / temperature + w * log(1 + count).

    What a model with a popularity prior ranks by before (or instead of) a fitted ranker.
    """
    weights = [0.0] * len(FEATURES)
    weights[FEATURES.index("retrieval_score")] = 1.0 / temperature
    weights[FEATURES.index("popularity")] = popularity_weight
    return LinearRanker(weights=tuple(weights), details={"prior": "the model's own scoring"})


def model_ranker(model: TwoTower) -> LinearRanker:
    """The ranker that reproduces `model`'s own scoring: with its popularity prior, if any."""
    if model.popularity_weight == 0.0:
        return DEFAULT_RANKER
    return prior_ranker(model.config.temperature, model.popularity_weight)


@dataclass(frozen=True)
class RankingLists:
    """Candidate lists for fitting a ranker: one list per (user, held-out interaction).

    `features` is [lists, candidates, len(FEATURES)], padded where `mask` is False;
    `positive` is the held-out item's position in its list, -1 where it was not retrieved;
    `users` identifies each list's user (validation holds out whole users).
    """

    features: np.ndarray
    mask: np.ndarray
    positive: np.ndarray
    users: np.ndarray

    def __post_init__(self) -> None:
        n, c, f = self.features.shape
        if f != len(FEATURES) or self.mask.shape != (n, c):
            raise ValueError("ranking lists: features and mask do not match")
        if self.positive.shape != (n,) or self.users.shape != (n,):
            raise ValueError("ranking lists: one positive and one user per list")
        hit = self.positive >= 0
        if (self.positive >= c).any() or not self.mask[hit, self.positive[hit]].all():
            raise ValueError("ranking lists: a positive points outside its list")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @staticmethod
    def concatenate(parts: list[RankingLists]) -> RankingLists:
        """The lists of `parts`, in order (all of the same width)."""
        return RankingLists(
            np.concatenate([p.features for p in parts]),
            np.concatenate([p.mask for p in parts]),
            np.concatenate([p.positive for p in parts]),
            np.concatenate([p.users for p in parts]),
        )

    def subset(self, rows: np.ndarray) -> RankingLists:
        """The lists at `rows` (a boolean mask or indices)."""
        return RankingLists(
            self.features[rows], self.mask[rows], self.positive[rows], self.users[rows]
        )


def lists_ndcg(ranker: LinearRanker, lists: RankingLists, k: int = 10) -> float:
    """Mean NDCG@k of the positive over `lists` (0 where it was not retrieved).

    Ties keep the candidates' order (the retrieval order).
    """
    return float(_gains(ranker, lists, k).mean()) if len(lists) else 0.0


def _gains(ranker: LinearRanker, lists: RankingLists, k: int) -> np.ndarray:
    """Each list's NDCG@k under `ranker` (its single positive's discounted gain)."""
    scores = ranker.score_lists(lists.features, lists.mask)
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.argmax(order == lists.positive[:, None], axis=1)  # 0-based position
    gains: np.ndarray = np.where((lists.positive >= 0) & (rank < k), 1.0 / np.log2(rank + 2.0), 0.0)
    return gains


def fit_ranker(
    lists: RankingLists,
    *,
    l2: float = 1e-3,
    folds: int = 5,
    seed: int = 0,
    k: int = 10,
    min_lists: int = 10,
) -> LinearRanker:
    """Fit a `LinearRanker` with a listwise softmax loss over standardised features.

    Each list's loss is the cross-entropy of its positive against the other candidates;
    lists whose positive was not retrieved are skipped. The check is cross-validated over
    users: they are dealt (seeded) into `folds` groups, each group's lists are ranked by a
    ranker fitted on the other groups' lists, and `details["validation"]` compares the NDCG@k
    of every list ranked so with `DEFAULT_RANKER`'s. The ranker returned is fitted on all
    usable lists. With fewer than `min_lists` of them, the default ranker comes back
    (`fitted` False, the reason in `details`).
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    users = np.unique(lists.users)
    dealt = np.random.default_rng(seed).permutation(users)
    fold_of = np.empty(len(users), dtype=np.int64)
    fold_of[np.searchsorted(users, dealt)] = np.arange(len(users)) % folds
    fold = fold_of[np.searchsorted(users, lists.users)]
    usable = lists.positive >= 0
    details: dict[str, Any] = {
        "lists": len(lists),
        "lists_with_positive": int(usable.sum()),
        "train_lists": int(usable.sum()),
        "users": len(users),
        "folds": folds,
        "candidates": int(lists.features.shape[1]),
        "l2": l2,
        "seed": seed,
    }
    if usable.sum() < min_lists:
        details["reason"] = f"too few lists with the positive retrieved ({int(usable.sum())})"
        return LinearRanker(DEFAULT_RANKER.weights, details=details)

    default = _gains(DEFAULT_RANKER, lists, k)
    held_out = default.copy()  # a fold with nothing to fit on keeps the retrieval order
    for f in range(folds):
        rest = lists.subset((fold != f) & usable)
        if len(rest) and (fold == f).any():
            held_out[fold == f] = _gains(_fit(rest, l2)[0], lists.subset(fold == f), k)
    ranker, loss = _fit(lists.subset(usable), l2)
    details["train_loss"] = loss
    details["validation"] = {
        f"ndcg@{k}": float(held_out.mean()),
        f"default_ndcg@{k}": float(default.mean()),
        "recall": float(usable.mean()),
    }
    details["train"] = {
        f"ndcg@{k}": lists_ndcg(ranker, lists.subset(usable), k),
        f"default_ndcg@{k}": float(default[usable].mean()),
    }
    return LinearRanker(ranker.weights, ranker.mean, ranker.scale, True, details)


def _fit(lists: RankingLists, l2: float) -> tuple[LinearRanker, float]:
    """The softmax-fitted ranker of `lists` (all with a positive) and its final loss."""
    rows = lists.features[lists.mask].astype(np.float64)
    mean = rows.mean(0)
    scale = rows.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)  # a constant feature gets weight ~0 anyway
    weights, loss = _fit_softmax(lists, mean, scale, l2)
    ranker = LinearRanker(
        weights=tuple(float(w) for w in weights),
        mean=tuple(float(m) for m in mean),
        scale=tuple(float(s) for s in scale),
        fitted=True,
    )
    return ranker, loss


def _fit_softmax(
    lists: RankingLists, mean: np.ndarray, scale: np.ndarray, l2: float
) -> tuple[np.ndarray, float]:
    """Weights minimising mean listwise cross-entropy + l2 * |w|^2 (L-BFGS, float64).

    The problem is convex (strictly, for l2 > 0), so the result does not depend on the
    start; float64 and a fixed iteration order make it reproducible.
    """
    x = torch.from_numpy((lists.features.astype(np.float64) - mean) / scale)
    mask = torch.from_numpy(lists.mask)
    positive = torch.from_numpy(lists.positive.astype(np.int64))
    w = torch.zeros(len(FEATURES), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w], lr=1.0, max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def objective() -> torch.Tensor:
        logits = (x @ w).masked_fill(~mask, float("-inf"))
        loss = torch.nn.functional.cross_entropy(logits, positive) + l2 * (w * w).sum()
        return loss

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        final = float(objective())
    return w.detach().numpy().copy(), final


def select_ranker(candidate: LinearRanker, k: int = 10) -> tuple[LinearRanker, dict[str, Any]]:
    """The ranker to publish and its lineage entry.

    A fitted ranker is kept only if it beats `DEFAULT_RANKER`'s NDCG@k on its validation
    lists; otherwise the default is published and the lineage says why.
    """
    entry: dict[str, Any] = {"features": list(FEATURES), **candidate.details}
    validation = candidate.details.get("validation", {})
    fitted_ndcg = validation.get(f"ndcg@{k}")
    default_ndcg = validation.get(f"default_ndcg@{k}")
    fitted_weights = dict(zip(FEATURES, candidate.weights, strict=True))
    if not candidate.fitted:
        entry.update(fitted=False, used=False)
        return DEFAULT_RANKER, entry
    if fitted_ndcg is None or default_ndcg is None or not fitted_ndcg > default_ndcg:
        entry.update(
            fitted=True,
            used=False,
            fitted_weights=fitted_weights,
            reason=f"did not beat the retrieval order's cross-validated NDCG@{k}",
        )
        return DEFAULT_RANKER, entry
    entry.update(
        fitted=True,
        used=True,
        weights=fitted_weights,
        mean=dict(zip(FEATURES, candidate.mean, strict=True)),
        scale=dict(zip(FEATURES, candidate.scale, strict=True)),
    )
    return candidate, entry
