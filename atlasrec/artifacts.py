"""A region's artifact store: versioned, scoped, atomically published folders of files.

Layout: `<root>/<tenant>/<kind>/<version>/` with a `manifest.json` (tenant, region, files
and their SHA-256), and `<root>/<tenant>/<kind>/LATEST` naming the newest version. A version
is written in a hidden temporary folder and renamed into place, then LATEST is replaced
atomically, so a reader never sees a half-written version.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atlasrec.boundary import Boundary
from atlasrec.errors import InvalidInputError, UnavailableError
from atlasrec.files import fsync_dir, write_atomic
from atlasrec.tenancy import Region, Scope

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{6}$")
MANIFEST = "manifest.json"
QUARANTINED = "QUARANTINED"
"""A version folder holding this file is quarantined: never `latest`, so never served."""


@dataclass(frozen=True)
class Artifact:
    """A published artifact version."""

    tenant_id: str
    region: Region
    kind: str
    version: str
    path: Path
    manifest: dict[str, Any]


def _check_name(value: str, what: str) -> str:
    if not (VERSION if what == "version" else _NAME).fullmatch(value):
        raise InvalidInputError(f"invalid artifact {what} {value!r}")
    return value


def new_version() -> str:
    """A fresh version name: sortable UTC time plus a random suffix."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"


FULL_BELOW = 16 * 2**20
"""A publish that failed with less free space than this failed for want of space."""


def publish_version(
    kind_dir: Path,
    write: Callable[[Path], None],
    owner: dict[str, Any],
    metadata: dict[str, Any],
    *,
    point_latest: bool = True,
) -> tuple[str, Path, dict[str, Any]]:
    """Publish a new version folder under `kind_dir` atomically and point LATEST at it.

    `write(folder)` fills a private staging folder; the manifest (owner fields, file hashes,
    metadata) is added, everything is fsynced, and the folder is renamed into place. With
    `point_latest=False` the caller moves LATEST later (`write_atomic`), once the version is
    recorded elsewhere.
    """
    kind_dir.mkdir(parents=True, exist_ok=True)
    version = new_version()
    staging = Path(tempfile.mkdtemp(dir=kind_dir, prefix=f".staging-{version}-"))
    try:
        write(staging)
        files = {
            str(p.relative_to(staging)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        manifest = {
            **owner,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
            "files": files,
            "metadata": metadata,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        for p in staging.rglob("*"):
            if p.is_file():
                with p.open("rb") as fh:
                    os.fsync(fh.fileno())
        final = kind_dir / version
        staging.rename(final)
    except BaseException as exc:
        full = _disk_full(kind_dir, exc)
        shutil.rmtree(staging, ignore_errors=True)
        if full is not None:
            raise full from exc
        raise
    try:
        fsync_dir(kind_dir)
        if point_latest:
            write_atomic(kind_dir / "LATEST", version.encode())
    except OSError as exc:
        full = _disk_full(kind_dir, exc)
        if full is not None:
            raise full from exc
        raise
    return version, final, manifest


def _disk_full(folder: Path, exc: BaseException) -> UnavailableError | None:
    """The one-line error to raise when `exc` came from a full disk under `folder`, else None.

    Some writers (torch.save) lose the errno: a disk left with less than `FULL_BELOW` bytes
    free by the failed write counts as full too.
    """
    try:
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
        free is not None and free < FULL_BELOW
    ):
        return UnavailableError(
            f"the artifact store is full ({free if free is not None else '?'} bytes free under "
            f"{folder}): nothing was published; free space and retry"
        )
    return None


def usable_versions(folder: Path) -> list[str]:
    """Versions published under `folder`, oldest first, without the quarantined ones."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if VERSION.fullmatch(p.name) and (p / MANIFEST).is_file() and not (p / QUARANTINED).exists()
    )


def latest_usable(folder: Path) -> str | None:
    """The version `LATEST` names, or the newest older one if it is quarantined; or None.

    What a request may read: the pointer and one marker, unless the newest is quarantined.
    """
    pointer = folder / "LATEST"
    if not pointer.exists():
        return None
    newest = pointer.read_text().strip()
    if not (folder / newest / QUARANTINED).exists():
        return newest
    older = [v for v in usable_versions(folder) if v < newest]
    return older[-1] if older else None


def quarantine_version(path: Path, reason: str, *, actor: str) -> None:
    """Mark a published version folder quarantined (never latest again); idempotent."""
    write_atomic(path / QUARANTINED, json.dumps({"reason": reason, "by": actor}).encode())


class ArtifactStore:
    """Artifacts of one region's tenants, reachable only through the region's boundary."""

    def __init__(self, region: Region, root: Path, boundary: Boundary) -> None:
        self.region = region
        self.root = root
        self.boundary = boundary

    def _kind_dir(self, scope: Scope, kind: str, *, actor: str, action: str) -> Path:
        self.boundary.admit(scope, actor=actor, action=action, subject=f"artifact:{kind}")
        return self.root / scope.tenant_id / _check_name(kind, "kind")

    def publish(
        self,
        scope: Scope,
        kind: str,
        write: Callable[[Path], None],
        *,
        actor: str,
        metadata: dict[str, Any] | None = None,
        point_latest: bool = True,
    ) -> Artifact:
        """Publish a new version: `write(folder)` fills a private folder, then it goes live.

        With `point_latest=False` it is published but LATEST stays (`point_latest` later).
        """
        kind_dir = self._kind_dir(scope, kind, actor=actor, action="artifact.publish")
        owner = {"tenant_id": scope.tenant_id, "region": scope.region.value, "kind": kind}
        version, final, manifest = publish_version(
            kind_dir, write, owner, metadata or {}, point_latest=point_latest
        )
        return Artifact(scope.tenant_id, self.region, kind, version, final, manifest)

    def latest(self, scope: Scope, kind: str, *, actor: str) -> Artifact | None:
        """The newest published version not quarantined, or None."""
        kind_dir = self._kind_dir(scope, kind, actor=actor, action="artifact.read")
        version = latest_usable(kind_dir)
        return None if version is None else self._load(scope, kind, kind_dir / version)

    def pointed(self, scope: Scope, kind: str, *, actor: str) -> str | None:
        """The version LATEST names (the live one, quarantined or not), or None."""
        pointer = self._kind_dir(scope, kind, actor=actor, action="artifact.read") / "LATEST"
        return pointer.read_text().strip() if pointer.exists() else None

    def point_latest(self, scope: Scope, kind: str, version: str, *, actor: str) -> None:
        """Make a published, unquarantined version the one LATEST names (atomically)."""
        kind_dir = self._kind_dir(scope, kind, actor=actor, action="artifact.point")
        path = kind_dir / _check_name(version, "version")
        if not (path / MANIFEST).exists():
            raise InvalidInputError(f"tenant {scope.tenant_id!r} has no {kind} version {version!r}")
        if (path / QUARANTINED).exists():
            raise InvalidInputError(
                f"tenant {scope.tenant_id!r}: {kind} version {version!r} is quarantined"
            )
        write_atomic(kind_dir / "LATEST", version.encode())

    def quarantine(self, artifact: Artifact, reason: str, *, actor: str) -> None:
        """Take a version out of use for good (`latest` passes it over); idempotent."""
        scope = Scope(artifact.tenant_id, artifact.region)
        kind_dir = self._kind_dir(scope, artifact.kind, actor=actor, action="artifact.quarantine")
        quarantine_version(kind_dir / artifact.version, reason, actor=actor)

    @staticmethod
    def quarantined(artifact: Artifact) -> bool:
        """Whether the version is quarantined."""
        return (artifact.path / QUARANTINED).exists()

    def get(self, scope: Scope, kind: str, version: str, *, actor: str) -> Artifact:
        """One published version."""
        kind_dir = self._kind_dir(scope, kind, actor=actor, action="artifact.read")
        path = kind_dir / _check_name(version, "version")
        if not (path / MANIFEST).exists():
            raise InvalidInputError(f"tenant {scope.tenant_id!r} has no {kind} version {version!r}")
        return self._load(scope, kind, path)

    def versions(self, scope: Scope, kind: str, *, actor: str) -> list[str]:
        """Published versions, oldest first."""
        kind_dir = self._kind_dir(scope, kind, actor=actor, action="artifact.read")
        if not kind_dir.exists():
            return []
        return sorted(
            p.name
            for p in kind_dir.iterdir()
            if VERSION.fullmatch(p.name) and (p / MANIFEST).exists()
        )

    def _load(self, scope: Scope, kind: str, path: Path) -> Artifact:
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("tenant_id") != scope.tenant_id or manifest.get("region") != self.region:
            self.boundary.refuse(
                scope,
                InvalidInputError(f"artifact {path.name} is not attributed to {scope}"),
                actor="artifact-store",
                action="artifact.read",
                subject=f"artifact:{kind}/{path.name}",
            )
        return Artifact(scope.tenant_id, self.region, kind, path.name, path, manifest)
