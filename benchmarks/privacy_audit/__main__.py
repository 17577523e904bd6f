"""`python -m benchmarks.privacy_audit`: DP releases at several epsilons, each audited.

One synthetic retail tenant is trained with DP at each epsilon (the platform's default model
configuration), and each release is audited as `atlasrec privacy audit` does: the canary
run under the release's mechanism, and the same run without DP (the control). JSON on
stdout (and --out).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from atlasrec.datasets.synthetic import SyntheticTenantSpec, generate_synthetic_tenant
from atlasrec.ingest import ingest
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.privacy_audit import audit_release
from atlasrec.settings import Settings
from atlasrec.tenancy import Region, Scope, SharingPolicy
from benchmarks.output import emit
from benchmarks.stamp import stamp, versions

TENANT = "audit-bench"


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Ingest once; per epsilon, train with DP and audit the release."""
    spec = SyntheticTenantSpec(
        TENANT, Region.EU, SharingPolicy.SOLO, args.items, args.users, args.interactions
    )
    data = generate_synthetic_tenant(spec, work / "data")
    # audits up to epsilon 16 and more, in one tenant: a research budget above the default maximum
    platform = Platform(Settings(home=work / "home", max_epsilon_cap=1000.0))
    platform.create_tenant(
        TENANT, region=Region.EU, sharing=SharingPolicy.SOLO, actor="bench", epsilon_cap=1000.0
    )
    scope = Scope(TENANT, Region.EU)
    ingest(
        platform.plane(Region.EU),
        scope,
        secret=platform.secret,
        actor="bench",
        items=data.items_csv,
        interactions=data.interactions_csv,
    )
    releases = []
    for eps in args.epsilons:
        started = time.perf_counter()
        version = train_tenant(platform, TENANT, actor="bench", epsilon=eps).model_version
        trained = time.perf_counter() - started
        started = time.perf_counter()
        audit = audit_release(platform, TENANT, actor="bench", version=version)
        releases.append(
            {
                "requested_epsilon": eps,
                "claimed_epsilon": round(audit["claimed_epsilon"], 3),
                "epsilon_lower_bound": round(audit["epsilon_lower_bound"], 3),
                "auc": round(audit["auc"], 3),
                "guesses": audit["guesses"],
                "correct": audit["correct"],
                "control": {
                    k: round(audit["control"][k], 3) for k in ("epsilon_lower_bound", "auc")
                },
                "canaries": audit["canaries"],
                "alarm": audit["alarm"],
                "train_s": round(trained, 1),
                "audit_s": round(time.perf_counter() - started, 1),
            }
        )
    platform.close()
    return {
        **stamp(),
        "command": "python -m benchmarks.privacy_audit" + (" --quick" if args.quick else ""),
        "versions": versions(["torch", "opacus", "scipy", "scikit-learn"]),
        "tenant": {"items": args.items, "users": args.users, "interactions": args.interactions},
        "releases": releases,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print the results as JSON (and write them with --out)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-privacy-audit")
    parser.add_argument("--quick", action="store_true", help="one release (epsilon 4)")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--users", type=int, default=1_500)
    parser.add_argument("--interactions", type=int, default=30_000)
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.epsilons = [4.0]
    work = Path(tempfile.mkdtemp(prefix="atlasrec-bench-privacy-audit-"))
    try:
        outcome = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(outcome, args.out)


if __name__ == "__main__":
    main()
