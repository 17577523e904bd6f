"""`atlasrec simulate ...`: synthetic tenants with known preferences, and their clicks."""

from __future__ import annotations

from typing import Annotated

import httpx
import typer

from atlasrec.cli.options import JsonOpt, TenantOpt, actor, group, open_platform
from atlasrec.cli.output import print_json
from atlasrec.datasets.synthetic import SyntheticTenantSpec, synthetic_truth
from atlasrec.tenancy import SharingPolicy, parse_region
from simulations.clicks import ClickModel, create_sim_tenant, load_sim_tenant, simulate

app = group("Synthetic tenants with known preferences, and a click simulator against serving.")


@app.command("tenant")
def tenant(
    tenant_id: Annotated[str, typer.Option("--id", help="The new tenant's id")],
    region: Annotated[str, typer.Option("--region", help="Its home region")],
    users: Annotated[int, typer.Option("--users")] = 2_000,
    items: Annotated[int, typer.Option("--items")] = 500,
    interactions: Annotated[int, typer.Option("--interactions")] = 40_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    hidden_share: Annotated[
        float,
        typer.Option(
            "--hidden-share",
            help="Share of taste interactions from hidden segments no item text names",
        ),
    ] = 0.5,
) -> None:
    """Create and ingest a synthetic tenant whose users' preferences the simulator knows."""
    spec = SyntheticTenantSpec(
        tenant_id,
        parse_region(region),
        SharingPolicy.SOLO,
        n_items=items,
        n_users=users,
        n_interactions=interactions,
        seed=seed,
        hidden_share=hidden_share,
    )
    made = create_sim_tenant(open_platform(), spec, actor=actor())
    print_json(
        {
            "tenant": tenant_id,
            "region": region,
            "users": users,
            "items": items,
            "interactions": interactions,
            "seed": seed,
            "hidden_share": hidden_share,
            "api_key": made.api_key,
        }
    )


@app.command("clicks")
def clicks(
    tenant: TenantOpt,
    port: Annotated[int, typer.Option("--port", help="The region's server port")],
    requests: Annotated[int, typer.Option("--requests", help="Recommendations to ask for")],
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Simulated users sending at once")
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Real HTTP traffic: recommendations for the tenant's users, then their clicks."""
    sim = load_sim_tenant(open_platform(), tenant)
    model = ClickModel(synthetic_truth(sim.spec))
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=30.0) as client:
        report = simulate(
            client, sim.api_key, model, requests=requests, seed=seed, concurrency=concurrency
        ).as_dict()
    if as_json:
        print_json({"tenant": tenant, **report})
        return
    for version, t in report["versions"].items():
        typer.echo(
            f"{version}: {t['requests']} requests, CTR {t['ctr']:.4f} ({t['clicks']} clicks, "
            f"{t['purchases']} purchases)"
        )
    if report["failed"]:
        typer.echo(f"failed: {report['failed']}")
