"""Serving's warm-up applies the ingested files' rows (from the offline store) once each."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from utils.factories import music_interactions, seed_music_tenant

from atlasrec.online_store import MemoryBackend, OnlineStore, ScopedOnlineStore
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope
from serving import runtime as runtime_module
from serving.runtime import RegionRuntime


def test_ingested_rows_warm_the_online_store_once_even_after_a_failure(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = seed_music_tenant(platform, "shop", Region.EU, tmp_path)
    expected = Counter[str]()
    for _, item, _, _, weight in music_interactions():
        expected[item] += weight
    plane = platform.plane(Region.EU)
    runtime = RegionRuntime(
        platform, Region.EU, online=OnlineStore(Region.EU, MemoryBackend(), plane.boundary)
    )
    store = runtime.online.scoped(scope, actor="t")
    monkeypatch.setattr(runtime_module, "WARM_CHUNK", 7)  # several chunks per file
    real, calls = ScopedOnlineStore.record_marked, []

    def flaky(self: ScopedOnlineStore, *args: object, **kwargs: object) -> int:
        calls.append(args[1:])
        if len(calls) == 3:
            raise ConnectionError("redis hiccup")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ScopedOnlineStore, "record_marked", flaky)
    with pytest.raises(ConnectionError):
        runtime._warm(scope, store)  # two chunks applied, then the failure
    runtime._warm(scope, store)  # the claim was released: warmed again, from the start
    runtime._warm(scope, store)  # claimed: nothing
    counts = store.item_counts(sorted(expected))
    assert counts == {item: pytest.approx(w) for item, w in expected.items()}
    assert runtime._counts(scope) == pytest.approx(dict(expected))  # popularity at load


def test_build_counts_only_ingested_rows(platform: Platform, tmp_path: Path) -> None:
    scope = seed_music_tenant(platform, "shop", Region.EU, tmp_path)
    offline = platform.plane(Region.EU).offline.scoped(scope, actor="t")
    runtime = RegionRuntime(
        platform,
        Region.EU,
        online=OnlineStore(Region.EU, MemoryBackend(), platform.plane(Region.EU).boundary),
    )
    before = runtime._counts(scope)
    from atlasrec.eventlog.records import LogEvent

    offline.write([1], [LogEvent("e1", "k", "i1", 1_700_000_000, "view", 5.0)])
    assert runtime._counts(Scope("shop", Region.EU)) == before
