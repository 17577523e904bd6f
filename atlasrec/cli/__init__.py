"""The `atlasrec` command line (contract: ARCHITECTURE.md, "Command-line contract").

One module per command or command group, each with a Typer `app`; a module is imported only
when one of its commands runs. Commands parse their options, call one operation (in
`atlasrec.pipelines` or the module owning the concern) and format its result.
"""

from __future__ import annotations

import os
import sys

import typer

from atlasrec.cli.errors import run
from atlasrec.cli.lazy import Lazy, LazyGroup
from atlasrec.files import PRIVATE_UMASK

COMMANDS = {
    "ingest": Lazy(
        "atlasrec.cli.ingest",
        "Load a tenant's catalog and interactions (one transaction; nothing on error).",
    ),
    "train": Lazy(
        "atlasrec.cli.train",
        "Train a tenant's model in its home region (user-level DP unless --no-dp).",
    ),
    "federate": Lazy(
        "atlasrec.cli.federate",
        "Run federated rounds of a region's backbone (resumes an unfinished run).",
    ),
    "evaluate": Lazy(
        "atlasrec.cli.evaluate",
        "Offline evaluation against Popularity, EASE and ALS on the same splits.",
        command="evaluate",
    ),
    "recommend": Lazy(
        "atlasrec.cli.evaluate",
        "Recommendations for the users in a file, as JSON lines (seen items excluded).",
        command="recommend",
    ),
    "serve": Lazy(
        "atlasrec.cli.serve",
        "Serve a region's tenants over HTTP (the process is pinned to that region).",
    ),
    "demo": Lazy(
        "atlasrec.cli.demo",
        "The platform end to end on the MovieLens tenant mix: ingest, train, serve, audit.",
    ),
    "events": Lazy(
        "atlasrec.cli.events", "The region's event log, its consumers and the offline store."
    ),
    "monitor": Lazy(
        "atlasrec.cli.monitor",
        "What the platform watches in a region: freshness, drift and budgets.",
    ),
    "rollout": Lazy(
        "atlasrec.cli.rollout",
        "A tenant's model releases: candidates, the live version, promotion and rollback.",
    ),
    "experiments": Lazy(
        "atlasrec.cli.experiments",
        "A/B and interleaving experiments on a tenant's traffic.",
    ),
    "simulate": Lazy(
        "atlasrec.cli.simulate",
        "Synthetic tenants with known preferences, and a click simulator against serving.",
    ),
    "tenants": Lazy("atlasrec.cli.tenants", "Register tenants and manage their API keys."),
    "privacy": Lazy("atlasrec.cli.privacy", "Differential-privacy budgets and empirical audits."),
    "audit": Lazy("atlasrec.cli.audit", "The hash-chained audit ledger of each region."),
    "officers": Lazy(
        "atlasrec.cli.officers",
        "Privacy officer accounts of the audit UI (/audit on each regional server).",
    ),
    "regions": Lazy(
        "atlasrec.cli.regions",
        "Residency regions and their serving endpoints (the audit UI's platform view).",
    ),
}
"""Every command, in the order `atlasrec --help` lists them, with its one-line summary."""


class _Commands(LazyGroup):
    lazy = COMMANDS


app = typer.Typer(
    cls=_Commands,
    help="AtlasRec: privacy-preserving multi-tenant recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """AtlasRec: privacy-preserving multi-tenant recommendations."""


def main() -> None:
    """Console entry point: typed errors become one line on stderr and exit status 1.

    Everything the process creates (databases, artifacts, the offline store) is its user's
    only: files 0600, folders 0700.
    """
    os.umask(PRIVATE_UMASK)
    sys.exit(run(app))


__all__ = ["COMMANDS", "app", "main"]
