"""Artifacts: scoped, versioned, attributed, and published atomically."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from atlasrec.errors import CrossRegionError, InvalidInputError, UnavailableError
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope
from tests.utils.factories import make_tenant


def writer(payload: bytes):  # type: ignore[no-untyped-def]
    def write(folder: Path) -> None:
        (folder / "model.bin").write_bytes(payload)
        (folder / "sub").mkdir()
        (folder / "sub" / "meta.txt").write_text("x")

    return write


def test_publish_and_read_back(platform: Platform) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    store = platform.plane(Region.EU).artifacts
    first = store.publish(scope, "model", writer(b"v1"), actor="t", metadata={"epochs": 1})
    second = store.publish(scope, "model", writer(b"v2"), actor="t")
    latest = store.latest(scope, "model", actor="t")
    assert latest is not None and latest.version == second.version
    assert (latest.path / "model.bin").read_bytes() == b"v2"
    assert store.versions(scope, "model", actor="t") == [first.version, second.version]
    old = store.get(scope, "model", first.version, actor="t")
    assert old.manifest["metadata"] == {"epochs": 1}
    assert old.manifest["tenant_id"] == "shop" and old.manifest["region"] == "eu"
    assert set(old.manifest["files"]) == {"model.bin", "sub/meta.txt"}


def test_a_crash_mid_write_publishes_nothing(platform: Platform) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    store = platform.plane(Region.EU).artifacts
    good = store.publish(scope, "model", writer(b"v1"), actor="t")

    def crash(folder: Path) -> None:
        (folder / "model.bin").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.publish(scope, "model", crash, actor="t")
    assert store.versions(scope, "model", actor="t") == [good.version]
    assert store.latest(scope, "model", actor="t").version == good.version  # type: ignore[union-attr]
    leftovers = [
        p.name for p in (store.root / "shop" / "model").iterdir() if p.name.startswith(".")
    ]
    assert leftovers == []


def test_other_regions_and_tenants_cannot_reach_artifacts(platform: Platform) -> None:
    eu = make_tenant(platform, "shop", Region.EU)
    platform.plane(Region.EU).artifacts.publish(eu, "model", writer(b"v1"), actor="t")
    with pytest.raises(CrossRegionError):
        platform.plane(Region.US).artifacts.latest(Scope("shop", Region.US), "model", actor="t")
    other = make_tenant(platform, "other", Region.EU)
    assert platform.plane(Region.EU).artifacts.latest(other, "model", actor="t") is None
    refused = platform.plane(Region.US).ledger.records(action="boundary.refused")
    assert len(refused) == 1


def test_misattributed_artifact_is_refused(platform: Platform) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    store = platform.plane(Region.EU).artifacts
    art = store.publish(scope, "model", writer(b"v1"), actor="t")
    manifest = json.loads((art.path / "manifest.json").read_text())
    manifest["tenant_id"] = "someone-else"
    (art.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInputError, match="not attributed"):
        store.latest(scope, "model", actor="t")


@pytest.mark.parametrize("kind", ["../x", "Model", "", "a/b"])
def test_unsafe_names_are_refused(platform: Platform, kind: str) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    with pytest.raises(InvalidInputError):
        platform.plane(Region.EU).artifacts.publish(scope, kind, writer(b""), actor="t")


def test_a_full_disk_is_one_clear_error_and_publishes_nothing(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = make_tenant(platform, "shop", Region.EU)
    store = platform.plane(Region.EU).artifacts
    good = store.publish(scope, "model", writer(b"v1"), actor="t")

    def no_space(folder: Path) -> None:
        (folder / "model.bin").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UnavailableError, match=r"artifact store is full.*nothing was published"):
        store.publish(scope, "model", no_space, actor="t")

    def errno_lost(folder: Path) -> None:  # as torch.save reports a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    usage = shutil.disk_usage(store.root)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=4096))
    with pytest.raises(UnavailableError, match="4096 bytes free"):
        store.publish(scope, "model", errno_lost, actor="t")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=2**40))
    with pytest.raises(RuntimeError, match="enforce fail"):  # space left: not a full disk
        store.publish(scope, "model", errno_lost, actor="t")
    assert store.versions(scope, "model", actor="t") == [good.version]
