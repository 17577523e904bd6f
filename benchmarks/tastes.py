"""The click benchmarks' simulated tenant and users, from the command line; what it serves.

A share of each user's taste interactions comes from a hidden segment that no item text
names (`SyntheticTenantSpec.hidden_share`), and clicks reward the favourite category
(`--lift`) and the hidden segment (`--hidden-lift`): a model that reads tastes off item text
earns the first, only one that learned from the interactions earns the second.
"""

from __future__ import annotations

import argparse
from typing import Any

from atlasrec.datasets.synthetic import SyntheticTenantSpec, SyntheticTruth
from atlasrec.models.bundle import KIND
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy
from simulations.clicks import ClickModel


def add_taste_arguments(parser: argparse.ArgumentParser) -> None:
    """`--hidden-share`, `--lift`, `--hidden-lift` and `--click-base`."""
    parser.add_argument(
        "--hidden-share",
        type=float,
        default=0.5,
        help="share of taste interactions drawn from the user's hidden segment",
    )
    parser.add_argument(
        "--lift", type=float, default=ClickModel.lift, help="click lift of the favourite category"
    )
    parser.add_argument(
        "--hidden-lift",
        type=float,
        default=ClickModel.hidden_lift,
        help="click lift of the hidden segment",
    )
    parser.add_argument(
        "--click-base",
        type=float,
        default=ClickModel.base,
        help="attractiveness of an item the user has no taste for (CTR's level)",
    )


def add_traffic_arguments(parser: argparse.ArgumentParser) -> None:
    """`--concurrency`: simulated users sending at once."""
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="simulated users sending at once (the server's worker and the simulator share "
        "the cores)",
    )


def sim_spec(
    args: argparse.Namespace, tenant: str, users: int, items: int, interactions: int
) -> SyntheticTenantSpec:
    """The simulated tenant (in `eu`, solo), with the arguments' hidden share."""
    return SyntheticTenantSpec(
        tenant,
        Region.EU,
        SharingPolicy.SOLO,
        items,
        users,
        interactions,
        popularity_exponent=0.5,  # tastes, not popularity, decide what a user clicks
        hidden_share=args.hidden_share,
    )


def click_model(
    args: argparse.Namespace, truth: SyntheticTruth, activity_shape: float = 0.0
) -> ClickModel:
    """The click model the arguments describe."""
    return ClickModel(
        truth,
        base=args.click_base,
        lift=args.lift,
        hidden_lift=args.hidden_lift,
        activity_shape=activity_shape,
    )


def tastes(args: argparse.Namespace) -> dict[str, float]:
    """The arguments, for the results."""
    return {
        "hidden_share": args.hidden_share,
        "lift": args.lift,
        "hidden_lift": args.hidden_lift,
        "click_base": args.click_base,
    }


def served_order(platform: Platform, tenant: str, version: str, actor: str) -> dict[str, Any]:
    """What a model version serves by default, as its training chose (the floor included)."""
    scope = platform.scope(tenant)
    artifact = platform.plane(scope.region).artifacts.get(scope, KIND, version, actor=actor)
    order = (artifact.manifest.get("metadata") or {}).get("default_order") or {}
    return {k: order.get(k) for k in ("chosen", "weight", "reason", "below_popularity")}
