"""The Flower ServerApp: one aggregator per region (`flwr run .`, or a region's SuperLink).

The run config names the region and the rounds (`[tool.flwr.app.config]` in pyproject.toml,
overridable with `flwr run . --run-config`). The aggregator is given public keys only.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from atlasrec.platform import Platform
from atlasrec.tenancy import parse_region
from server import global_tier
from server.federation import FederationConfig, run_federation

app = ServerApp()


def config_from(run_config: dict[str, bool | float | int | str]) -> FederationConfig:
    """The federation's settings from Flower's run config."""
    defaults = FederationConfig()
    return FederationConfig(
        rounds=int(run_config.get("num-server-rounds", defaults.rounds)),
        round_epsilon=float(run_config.get("round-epsilon", defaults.round_epsilon)),
        local_epochs=int(run_config.get("local-epochs", defaults.local_epochs)),
        min_participants=int(run_config.get("min-participants", defaults.min_participants)),
        encrypt=bool(run_config.get("encrypt", defaults.encrypt)),
        timeout_s=float(run_config.get("round-timeout", defaults.timeout_s)),
        seed=int(run_config.get("seed", defaults.seed)),
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the region's federation, then refresh the cross-region backbone."""
    region = parse_region(str(context.run_config["region"]))
    platform = Platform()
    try:
        run_federation(
            platform, region, grid, config_from(context.run_config), actor="flower-serverapp"
        )
        global_tier.combine(platform, actor="flower-serverapp")
    finally:
        platform.close()
