"""Stand-in model versions for the release registry's tests."""

from __future__ import annotations

from atlasrec.models.bundle import KIND
from atlasrec.platform import Platform
from atlasrec.releases import State, register
from atlasrec.tenancy import Scope


def publish(
    platform: Platform,
    scope: Scope,
    *,
    live: bool = False,
    metadata: dict[str, object] | None = None,
) -> tuple[str, State]:
    """A published model version (a stand-in bundle) entered into the registry."""
    plane = platform.plane(scope.region)
    artifact = plane.artifacts.publish(
        scope,
        KIND,
        lambda folder: (folder / "weights.bin").write_bytes(b"w"),
        actor="test",
        metadata=metadata,
        point_latest=False,
    )
    return artifact.version, register(plane, scope, artifact.version, live=live, actor="test")
