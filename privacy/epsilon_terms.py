"""The epsilons of a tenant's DP runs, defined once: every view says which one it shows.

A tenant's runs (DP training, popularity count releases, federated rounds) are composed by
the RDP accountant into one total. Each run therefore has three numbers:

- **standalone ε**: the run's own epsilon, as if it were the tenant's only run;
- **composed total after**: the tenant's epsilon over every run charged up to and including
  this one (what the cap is compared with);
- **increment**: how much this run raised the composed total.

A model also has a **model ε**: its own mechanisms (its DP-SGD run and, when it has one,
its popularity count release) composed, as if they were the tenant's only runs.

Composed totals are less than sums because the accountant composes the runs' Rényi
divergences and converts to (ε, δ) once, at the best order, instead of adding each run's
(ε, δ) guarantee, which pays the conversion's cost once per run. So increments are smaller
than standalone epsilons, and they shrink as the total grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Term:
    """One epsilon of the vocabulary: its field name, its label and its definition."""

    key: str
    label: str
    definition: str


STANDALONE = Term(
    "epsilon_standalone",
    "standalone ε",
    "the run's own epsilon, as if it were the tenant's only run",
)
INCREMENT = Term(
    "epsilon_increment",
    "increment",
    "how much the run raised the tenant's composed total",
)
TOTAL_AFTER = Term(
    "epsilon_total_after",
    "composed total after",
    "the tenant's epsilon over every run charged up to and including this one, composed by "
    "the RDP accountant; the cap is compared with it",
)
MODEL = Term(
    "epsilon_model",
    "model ε",
    "a model's own mechanisms (its DP-SGD run and its popularity count release) composed, "
    "as if they were the tenant's only runs",
)
RUN_TERMS = (STANDALONE, INCREMENT, TOTAL_AFTER)
GLOSSARY = (*RUN_TERMS, MODEL)
WHY_LESS_THAN_SUMS = (
    "Composed totals are less than sums: the accountant composes the runs' Rényi "
    "divergences and converts to (ε, δ) once, instead of adding each run's (ε, δ) "
    "guarantee. A run's increment is therefore smaller than its standalone ε, and "
    "increments shrink as the total grows."
)


class ChargedRunLike(Protocol):
    """What the terms are computed from: a stored run's two recorded epsilons."""

    @property
    def epsilon(self) -> float:
        """The run's standalone epsilon, as recorded when it was charged."""

    @property
    def epsilon_total(self) -> float:
        """The composed total recorded when it was charged."""


@dataclass(frozen=True)
class RunEpsilons:
    """The three epsilons of one charged run."""

    epsilon_standalone: float
    epsilon_increment: float
    epsilon_total_after: float

    def as_dict(self) -> dict[str, float]:
        """The three, under their field names."""
        return {
            STANDALONE.key: self.epsilon_standalone,
            INCREMENT.key: self.epsilon_increment,
            TOTAL_AFTER.key: self.epsilon_total_after,
        }


def run_epsilons(runs: Sequence[ChargedRunLike]) -> list[RunEpsilons]:
    """The terms of each of a tenant's runs, given oldest first (all of them, in charge order).

    The increment is the rise of the composed total over the highest total before the run
    (never negative: a total is never lowered by a later run).
    """
    terms: list[RunEpsilons] = []
    previous = 0.0
    for run in runs:
        terms.append(
            RunEpsilons(run.epsilon, max(0.0, run.epsilon_total - previous), run.epsilon_total)
        )
        previous = max(previous, run.epsilon_total)
    return terms
