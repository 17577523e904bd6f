"""`train`, `recommend` and `privacy report` on a small tenant, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from atlasrec.errors import InvalidInputError
from atlasrec.ingest import ingest
from atlasrec.models.bundle import KIND, NEIGHBOURS, RANKER, ModelBundle
from atlasrec.models.dp_ease import DpEaseConfig
from atlasrec.models.ranking.features import FEATURES
from atlasrec.models.ranking.ranker import DEFAULT_RANKER, LinearRanker, prior_ranker
from atlasrec.models.two_tower import TwoTowerConfig
from atlasrec.pipelines.privacy_report import privacy_report
from atlasrec.pipelines.recommend import recommend_users
from atlasrec.pipelines.train import train_tenant
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, Scope, SharingPolicy
from privacy.budget import BudgetExceededError
from tests.utils.factories import (
    INTERACTIONS_HEADER,
    ITEMS_HEADER,
    MUSIC_ITEMS,
    music_interactions,
    seed_music_tenant,
    write_csv,
)

FAST = TwoTowerConfig(
    dim=16, hidden=32, history=10, positives=4, negatives=16, epochs=3, batch_size=8
)
ITEMS, interactions = MUSIC_ITEMS, music_interactions


@pytest.fixture
def shop(platform: Platform, tmp_path: Path) -> Scope:
    return seed_music_tenant(platform, "shop", Region.SG, tmp_path, epsilon_cap=6.0)


def test_train_publishes_a_versioned_model_with_lineage(platform: Platform, shop: Scope) -> None:
    result = train_tenant(platform, "shop", actor="t", no_dp=True, config=FAST)
    artifact = platform.plane(Region.SG).artifacts.latest(shop, KIND, actor="t")
    assert artifact is not None and artifact.version == result.model_version
    lineage = artifact.manifest["metadata"]
    assert lineage["dp"] is None and lineage["canaries"] == {"users": 3, "items": 3}
    assert lineage["users"] == 16 + 3 and lineage["items"] == 30 + 3  # canaries included
    assert len(lineage["data_snapshot"]) == 64 and lineage["code_version"]
    assert lineage["hyperparameters"]["epochs"] == 3
    assert artifact.manifest["tenant_id"] == "shop" and artifact.manifest["region"] == "sg"
    trained = platform.plane(Region.SG).ledger.records(action="model.trained")
    assert [r.subject for r in trained] == [f"model:{KIND}/{result.model_version}"]
    assert privacy_report(platform, "shop", actor="t")["runs"] == []  # no DP, no charge


def test_no_dp_training_publishes_a_fitted_ranker(platform: Platform, shop: Scope) -> None:
    result = train_tenant(platform, "shop", actor="t", no_dp=True, config=FAST)
    artifact = platform.plane(Region.SG).artifacts.latest(shop, KIND, actor="t")
    assert artifact is not None
    entry = artifact.manifest["metadata"]["ranker"]
    assert entry == result.lineage["ranker"]
    # 16 users with 6 distinct items and 3 canary users with 3: 19 lists, in 5 folds of users
    assert entry["fitted"] and entry["lists"] == entry["users"] == 16 + 3  # 3 canaries
    assert entry["folds"] == 5
    assert entry["retrieval_model"] == "retrained on all data"
    saved = LinearRanker.from_json((artifact.path / RANKER).read_text())
    loaded = ModelBundle.load(artifact).ranker
    assert loaded == saved
    if entry["used"]:
        assert saved.fitted and list(saved.weights) == [entry["weights"][f] for f in FEATURES]
        assert entry["validation"]["ndcg@10"] > entry["validation"]["default_ndcg@10"]
    else:  # the retrieval order: a non-DP model has no popularity prior
        assert ModelBundle.load(artifact).model.popularity_weight == 0.0
        assert saved == DEFAULT_RANKER and "did not beat" in entry["reason"]
    assert saved.to_json() == LinearRanker.from_json(saved.to_json()).to_json()
    # the co-occurrence neighbours ship exactly when the published ranker scores with them
    assert (artifact.path / NEIGHBOURS).is_file() == saved.uses_cooccurrence


def test_dp_training_charges_the_budget_and_records_it(platform: Platform, shop: Scope) -> None:
    result = train_tenant(platform, "shop", actor="t", epsilon=2.0, config=FAST)
    dp = result.lineage["dp"]
    assert dp is not None and dp["steps"] > 0 and dp["epsilon"] == pytest.approx(2.0, rel=0.01)
    report = privacy_report(platform, "shop", actor="t")
    # one training run is three charged mechanisms: the count release, the Gram release
    # (DP-EASE), then DP-SGD
    release, gram, run = report["runs"]
    assert [release["kind"], gram["kind"], run["kind"]] == ["popularity", "ease", "train"]
    assert dp["popularity_release"]["dp_run_id"] == release["run_id"]
    assert dp["ease_release"]["dp_run_id"] == gram["run_id"]
    assert (release["sample_rate"], release["steps"]) == (1.0, 1)
    assert (gram["sample_rate"], gram["steps"]) == (1.0, 1)
    for charged in (release, gram, run):
        assert charged["status"] == "completed"
        assert charged["model_version"] == result.model_version
    assert run["epsilon_total_after"] == pytest.approx(dp["epsilon"], rel=0.01)
    assert report["epsilon_spent"] == pytest.approx(dp["epsilon"], rel=0.01)
    assert report["epsilon_spent"] == pytest.approx(report["epsilon_spent_independent"], rel=0.01)
    assert report["epsilon_remaining"] == pytest.approx(6.0 - report["epsilon_spent"])
    assert len(platform.plane(Region.SG).ledger.records(action="dp.charged")) == 3
    assert result.lineage["ranker"] == {
        "fitted": False,
        "reason": "DP run: not fitted on user data",
    }
    artifact = platform.plane(Region.SG).artifacts.latest(shop, KIND, actor="t")
    assert artifact is not None
    bundle = ModelBundle.load(artifact)
    # the published ranker is the model's own DP-trained scoring, with its popularity prior
    assert bundle.ranker == prior_ranker(FAST.temperature, bundle.model.popularity_weight)
    # and no exact co-occurrence neighbours: they would fall outside the run's guarantee
    assert bundle.neighbours is None and not (artifact.path / NEIGHBOURS).exists()
    # but DP-EASE over the head of the released counts, served by default
    assert bundle.profile is not None and bundle.order.order == "profile"
    assert len(bundle.profile.head) == min(DpEaseConfig().head, len(bundle.item_ids))
    assert result.lineage["default_order"]["chosen"] == "profile"
    # and the artifact holds the released counts (noisy), never the exact whole-number ones
    assert {r[4] for r in interactions()} == {1.0}
    noisy = bundle.popularity[bundle.popularity > 0]
    assert len(noisy) and not np.allclose(noisy, np.round(noisy))


def test_a_tenant_large_enough_to_validate_on_gets_a_dp_validated_default_order(
    platform: Platform, tmp_path: Path
) -> None:
    seed_music_tenant(platform, "big", Region.SG, tmp_path, n_users=30)
    result = train_tenant(platform, "big", actor="t", epsilon=4.0, config=FAST)
    runs = privacy_report(platform, "big", actor="t")["runs"]
    assert [r["kind"] for r in runs] == ["popularity", "ease", "validation", "train"]
    dp = result.lineage["dp"]
    assert dp["validation_release"]["dp_run_id"] == runs[2]["run_id"]
    assert dp["epsilon"] == pytest.approx(4.0, rel=0.01)  # all four, composed
    chosen = result.lineage["default_order"]
    assert chosen["dp_validation"]["users"] == 30 + 3  # 3 canary users
    artifact = platform.plane(Region.SG).artifacts.latest(Scope("big", Region.SG), KIND, actor="t")
    assert artifact is not None
    bundle = ModelBundle.load(artifact)
    assert bundle.order.order == chosen["chosen"] in ("next", "profile", "popularity")
    assert list(bundle.order.below_popularity) == chosen["below_popularity"]


def test_a_small_epsilon_trains_without_a_popularity_prior(platform: Platform, shop: Scope) -> None:
    result = train_tenant(platform, "shop", actor="t", epsilon=0.3, config=FAST)
    runs = privacy_report(platform, "shop", actor="t")["runs"]
    assert [r["kind"] for r in runs] == ["train"]  # a share of 0.3 buys no useful release
    dp = result.lineage["dp"]
    assert dp["popularity_release"] is None and dp["epsilon"] == pytest.approx(0.3, rel=0.01)
    assert dp["ease_release"] is None  # no released head to release a Gram matrix over
    artifact = platform.plane(Region.SG).artifacts.latest(shop, KIND, actor="t")
    assert artifact is not None
    bundle = ModelBundle.load(artifact)
    assert bundle.model.popularity_weight == 0.0 and not bundle.popularity.any()
    assert bundle.profile is None and bundle.order.order == "next"
    assert bundle.ranker.weights[FEATURES.index("popularity")] == 0.0


def test_a_run_over_the_cap_is_refused_before_it_starts(platform: Platform, shop: Scope) -> None:
    train_tenant(platform, "shop", actor="t", epsilon=5.0, config=FAST)
    before = platform.plane(Region.SG).artifacts.versions(shop, KIND, actor="t")
    with pytest.raises(BudgetExceededError, match="cap is 6"):
        train_tenant(platform, "shop", actor="t", epsilon=3.0, config=FAST)
    assert platform.plane(Region.SG).artifacts.versions(shop, KIND, actor="t") == before
    runs = privacy_report(platform, "shop", actor="t")["runs"]
    assert [r["kind"] for r in runs] == ["popularity", "ease", "train"]  # the first run's only


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epsilon": 0.0}, "--epsilon must be"),
        ({"epsilon": -1.0}, "--epsilon must be"),
        ({"epsilon": float("nan")}, "--epsilon must be"),
        ({"epsilon": 1e-300}, "--epsilon must be a number from 0.05"),  # not "exhausted"
        ({"epsilon": 1e308}, "--epsilon must be"),
        ({"epsilon": 1.0, "no_dp": True}, "not both"),
    ],
)
def test_bad_training_options(
    platform: Platform, shop: Scope, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        train_tenant(platform, "shop", actor="t", config=FAST, **options)  # type: ignore[arg-type]


def test_a_tenant_without_interactions_cannot_train(platform: Platform, tmp_path: Path) -> None:
    platform.create_tenant("empty", region=Region.SG, sharing=SharingPolicy.SOLO, actor="t")
    scope = Scope("empty", Region.SG)
    ingest(
        platform.plane(Region.SG),
        scope,
        secret=platform.secret,
        actor="t",
        items=write_csv(tmp_path / "i.csv", ITEMS_HEADER, ITEMS[:3]),
    )
    with pytest.raises(InvalidInputError, match="no interactions"):
        train_tenant(platform, "empty", actor="t", no_dp=True, config=FAST)


def test_recommend_excludes_seen_items_and_uses_the_tenants_ids(
    platform: Platform, shop: Scope
) -> None:
    train_tenant(platform, "shop", actor="t", no_dp=True, config=FAST)
    seen = {f"i{(0 % 3) + 3 * ((0 + n) % 10)}" for n in range(6)}
    recs = list(recommend_users(platform, "shop", ["user-0", "stranger"], 5, actor="t"))
    assert [r.user_id for r in recs] == ["user-0", "stranger"]
    assert len(recs[0].items) == 5 and not set(recs[0].items) & seen and not recs[0].cold_start
    assert recs[1].cold_start and len(recs[1].items) == 5


def test_before_a_model_recommend_uses_content_embeddings(platform: Platform, shop: Scope) -> None:
    (rec,) = recommend_users(platform, "shop", ["user-0"], 5, actor="t")
    seen = {f"i{3 * (n % 10)}" for n in range(6)}  # user-0 listens to jazz (i0, i3, ...)
    assert rec.model_version == "content-embeddings" and not rec.cold_start
    assert len(rec.items) == 5 and not set(rec.items) & seen
    # nearest by the text of jazz items: jazz records first
    assert all(int(item[1:]) % 3 == 0 for item in rec.items[:3]), rec.items


def test_recommend_needs_a_sane_k(platform: Platform, shop: Scope) -> None:
    for k in (0, 5000):
        with pytest.raises(InvalidInputError, match="--k"):
            list(recommend_users(platform, "shop", ["user-0"], k, actor="t"))


def test_cli_train_recommend_and_report(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.atlasrec.test_cli import cli

    cli(capsys, "tenants", "create", "--id", "shop", "--region", "eu", "--sharing", "solo")
    items = write_csv(tmp_path / "items.csv", ITEMS_HEADER, ITEMS)
    inter = write_csv(tmp_path / "inter.csv", INTERACTIONS_HEADER, interactions())
    cli(capsys, "ingest", "--tenant", "shop", "--items", str(items), "--interactions", str(inter))
    code, out, err = cli(capsys, "train", "--tenant", "shop", "--no-dp", "--json")
    assert code == 0, err
    version = json.loads(out)["model_version"]
    users = tmp_path / "users.txt"
    users.write_text("user_id\nuser-1\nnobody\n")
    code, out, err = cli(
        capsys, "recommend", "--tenant", "shop", "--users-file", str(users), "--k", "3"
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["user_id"] for line in lines] == ["user-1", "nobody"]
    assert all(len(line["items"]) == 3 for line in lines) and "1 of 2 users had no history" in err
    args = ("recommend", "--tenant", "shop", "--users-file", str(users), "--k", "3")
    code, out, err = cli(capsys, *args, "--intent", "profile")
    assert code == 0, err
    assert [len(json.loads(line)["items"]) for line in out.splitlines()] == [3, 3]
    code, _, err = cli(capsys, *args, "--intent", "later")
    assert code == 2 and "--intent" in err
    code, out, _ = cli(capsys, "train", "--tenant", "shop", "--epsilon", "50")
    assert code == 1
    code, out, _ = cli(capsys, "privacy", "report", "--tenant", "shop", "--json")
    assert code == 0 and json.loads(out)["runs"] == [] and version
    code, _, err = cli(
        capsys, "recommend", "--tenant", "shop", "--users-file", str(tmp_path / "missing")
    )
    assert code == 1 and "cannot read users file" in err


def test_evaluate_reports_every_model_on_both_splits(platform: Platform, shop: Scope) -> None:
    from atlasrec.pipelines.evaluate import evaluate_tenant

    report = evaluate_tenant(platform, "shop", 5, actor="t", epsilon=4.0, config=FAST)
    assert set(report["splits"]) == {
        "temporal-leave-last-out",
        "random-user(test_fraction=0.25, seed=0)",
    }
    for split in report["splits"].values():
        assert split["tested_users"] == 16
        expected = {
            "popularity",
            "als",
            "two_tower",
            "two_tower+ranker",
            "two_tower+ranker, profile intent",
            "default (no intent)",
            "ease",
            "dp (as train publishes)",
        }
        assert set(split["models"]) == expected
        # 16 tested users: too few to validate on, said so (the next order)
        assert split["default_order"]["chosen"] == "next"
        assert "too few users" in split["default_order"]["reason"]
        for model in split["models"].values():
            assert 0.0 <= model["all"]["ndcg"] <= 1.0 and model["all"]["users"] == 16
            assert model["cold"]["users"] + model["warm"]["users"] == 16
    assert privacy_report(platform, "shop", actor="t")["runs"] == []  # evaluation charges nothing
    with pytest.raises(InvalidInputError, match="--k"):
        evaluate_tenant(platform, "shop", 0, actor="t")


def test_secure_mode_trains_charges_and_records_it(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    platform = Platform(make_settings(dp_secure_mode=True))
    try:
        seed_music_tenant(platform, "sec", Region.EU, tmp_path)
        result = train_tenant(platform, "sec", actor="t", epsilon=2.0, config=FAST)
        assert result.lineage["dp"]["secure_mode"] is True
        assert result.lineage["dp"]["popularity_release"] is not None
        runs = privacy_report(platform, "sec", actor="t")["runs"]
        assert sorted(r["kind"] for r in runs) == ["ease", "popularity", "train"]
    finally:
        platform.close()
