"""`python -m benchmarks.drift`: false alarms over unshifted replays, detection of shifts.

One stationary synthetic tenant (5,000 items, 6,000 users) is trained with DP on its first
rows; every later window of its traffic is compared with the training snapshot as
`atlasrec monitor drift` does. JSON on stdout (and --out).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from atlasrec.evaluation.drift import AUC_THRESHOLD, JS_THRESHOLD, P_VALUE, WASSERSTEIN_THRESHOLD
from atlasrec.evaluation.drift_signals import SIGNALS
from benchmarks.drift.replays import Shift, Tenant, checked_in_place, replay, setup, shifts
from benchmarks.output import emit
from benchmarks.stamp import stamp, versions


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Set up the tenant, replay unshifted windows, then each shift."""
    tenant = setup(
        work,
        trained=args.trained,
        window=args.window,
        windows=args.replays,
        epsilon=args.epsilon,
    )
    unshifted = _replays(tenant, args, None, args.replays)
    shifted = {
        name: _replays(tenant, args, shift, args.shifted)
        for name, shift in shifts(tenant, args.trained).items()
    }
    statuses, in_place_s = checked_in_place(tenant)
    return {
        **stamp(),
        "command": "python -m benchmarks.drift" + (" --quick" if args.quick else ""),
        "versions": versions(["scipy", "scikit-learn", "torch"]),
        "setup": {
            "trained_rows": args.trained,
            "window_rows": args.window,
            "model_epsilon": args.epsilon,
            "train_s": round(tenant.train_s, 1),
        },
        "thresholds": {
            "jensenshannon": JS_THRESHOLD,
            "wasserstein_normed": WASSERSTEIN_THRESHOLD,
            "domain_classifier_auc": AUC_THRESHOLD,
            "p_value": P_VALUE,
        },
        "unshifted": unshifted,
        "shifted": shifted,
        "monitor_drift_in_place": {"statuses": statuses, "seconds": round(in_place_s, 2)},
    }


def _replays(
    tenant: Tenant, args: argparse.Namespace, shift: Shift | None, n: int
) -> dict[str, Any]:
    alarms = dict.fromkeys(("any", *SIGNALS), 0)
    no_verdict = dict.fromkeys(SIGNALS, 0)
    seconds = []
    for index in range(1, n + 1):
        signals, took = replay(tenant, args.trained, args.window, index, shift, seed=index)
        seconds.append(took)
        drifted = [s.signal for s in signals if s.drifted]
        alarms["any"] += bool(drifted)
        for s in signals:
            alarms[s.signal] += s.drifted
            no_verdict[s.signal] += s.value is None
    return {
        "replays": n,
        "alarms": alarms,
        "alarm_rate": round(alarms["any"] / n, 3),
        "no_verdict": no_verdict,
        "median_check_s": round(statistics.median(seconds), 3),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print the results as JSON (and write them with --out)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-drift")
    parser.add_argument("--quick", action="store_true", help="20 replays, 10 per shift")
    parser.add_argument("--trained", type=int, default=60_000)
    parser.add_argument("--window", type=int, default=4_000)
    parser.add_argument("--replays", type=int, default=100)
    parser.add_argument("--shifted", type=int, default=30)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.replays, args.shifted = 20, 10
    work = Path(tempfile.mkdtemp(prefix="atlasrec-bench-drift-"))
    try:
        outcome = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(outcome, args.out)


if __name__ == "__main__":
    main()
