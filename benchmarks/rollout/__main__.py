"""`python -m benchmarks.rollout`: the rollout analysis' sequential test, simulated.

Users arrive one by one and are assigned to the candidate with the canary's share; each
user's value is its CTR over 1 to 5 requests of 10 shown items (clicks drawn at the arm's
true CTR). The analysis looks after every `--every` users (`atlasrec.rollout_analysis`: the
difference's confidence sequence of `atlasrec.evaluation.sequential`, margin 10% of live):

- **A/A**: both arms at the same CTR. A false positive is any look at which the confidence
  sequence excludes 0 (stricter than the analysis' rollback rule), and separately any look
  at which the analysis would roll back.
- **Decisions**: a worse candidate (its CTR a fraction of live's) and an equal one; the
  users seen (both arms) until the analysis rolls back, or until it finds "not worse".

JSON on stdout (and --out).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from atlasrec.evaluation.sequential import ALPHA, running_mean_cs
from atlasrec.rollout_analysis import MARGIN
from benchmarks.output import emit
from benchmarks.stamp import stamp

BASE_CTR = 0.08


def user_values(rng: np.random.Generator, n: int, ctr: float) -> np.ndarray:
    """Per-user CTRs: 1 to 5 requests of 10 shown items each."""
    shown = rng.integers(1, 6, n) * 10
    return rng.binomial(shown, ctr) / shown


def first_looks(
    rng: np.random.Generator, users: int, share: float, ctr: float, every: int, min_n: int
) -> dict[str, int | None]:
    """Users seen at the first look where the CS excludes 0, says worse, or not worse."""
    arms = rng.random(users) < share
    values = np.where(arms, user_values(rng, users, ctr), user_values(rng, users, BASE_CTR))
    c_low, c_up = running_mean_cs(values[arms], ALPHA / 2)
    l_low, l_up = running_mean_cs(values[~arms], ALPHA / 2)
    l_mean = np.cumsum(values[~arms]) / np.arange(1, (~arms).sum() + 1)
    seen = np.arange(every, users + 1, every)
    n_c, n_l = np.cumsum(arms)[seen - 1], np.cumsum(~arms)[seen - 1]
    ok = (n_c >= 2) & (n_l >= 2)
    seen, n_c, n_l = seen[ok], n_c[ok], n_l[ok]
    lower = c_low[n_c - 1] - l_up[n_l - 1]
    upper = c_up[n_c - 1] - l_low[n_l - 1]
    margin = MARGIN * l_mean[n_l - 1]
    enough = np.minimum(n_c, n_l) >= min_n
    return {
        "excludes_zero": _first(seen, (lower > 0) | (upper < 0)),
        "worse": _first(seen, upper < -margin),
        "not_worse": _first(seen, enough & (lower > -margin)),
    }


def _first(seen: np.ndarray, hit: np.ndarray) -> int | None:
    at = np.flatnonzero(hit)
    return int(seen[at[0]]) if len(at) else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """A/A false positives and decision sizes at each canary share."""
    rng = np.random.default_rng(args.seed)
    out: dict[str, Any] = {
        **stamp(),
        "experiments": args.experiments,
        "users": args.users,
        "look_every": args.every,
        "alpha": ALPHA,
        "margin": MARGIN,
        "base_ctr": BASE_CTR,
        "shares": {},
    }
    for share in args.shares:
        row: dict[str, Any] = {}
        aa = [
            first_looks(rng, args.users, share, BASE_CTR, args.every, args.min_n)
            for _ in range(args.experiments)
        ]
        row["aa_false_positive_rate"] = np.mean([a["excludes_zero"] is not None for a in aa])
        row["aa_rollback_rate"] = np.mean([a["worse"] is not None for a in aa])
        for ratio in args.worse:
            runs = [
                first_looks(rng, args.users, share, BASE_CTR * ratio, args.every, args.min_n)
                for _ in range(args.decisions)
            ]
            row[f"worse_{ratio:g}x"] = _sizes([r["worse"] for r in runs])
        row["equal"] = _sizes([a["not_worse"] for a in aa[: args.decisions]])
        out["shares"][f"{share:g}"] = row
    return out


def _sizes(found: list[int | None]) -> dict[str, Any]:
    decided = [f for f in found if f is not None]
    return {
        "decided": len(decided) / len(found),
        "median_users": float(np.median(decided)) if decided else None,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the simulation; print the results as JSON (and write them with --out)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-rollout")
    parser.add_argument("--quick", action="store_true", help="200 A/A experiments, 20 decisions")
    parser.add_argument("--experiments", type=int, default=1_000)
    parser.add_argument("--decisions", type=int, default=100)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--min-n", type=int, default=200)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.05, 0.25, 0.5])
    parser.add_argument("--worse", type=float, nargs="+", default=[0.5, 0.8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.experiments, args.decisions = 200, 20
    emit(run(args), args.out)


if __name__ == "__main__":
    main()
