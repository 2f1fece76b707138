"""The benchmark on a ranking scenario (protocol.ranking): rows, primary metric, report, and the
shared catalogue scorer (fast path and fallback give the same metrics)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from metarec.bench import run_bench, score_pool
from metarec.bench.evaluation import Catalogue
from metarec.bench.ranking import RankingSpec
from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.episodes.build import build_splits, sampler_config
from metarec.methods import FitData, build_method
from metarec.metrics.catalogue import BEYOND_ACCURACY, RANKING_METRICS

RANKING = [
    "data.synthetic.n_domains=2",
    "data.synthetic.n_users=120",
    "data.synthetic.n_items=90",
    "data.synthetic.density=0.35",
    "protocol.ranking=true",
    "protocol.support_pool=10",
    "protocol.n_support=3",
    "protocol.min_interactions=11",
    "protocol.n_query=5",
    "protocol.max_interactions=none",
    "train.steps=4",
    "train.val_every=4",
    "train.val_tasks=32",
    "algorithm.meta_batch=4",
    "algorithm.inner_steps=1",
    "model.embedding_dim=8",
    "model.hidden=[8]",
    "learners.ease.lambdas=[10.0,100.0]",
    "learners.itemknn.neighbours=[20]",
    "learners.itemknn.shrinks=[0.0,10.0]",
]


def ranking_scenario(*extra: str):
    return load_scenario("tasks/synthetic-cold-start.toml", [*RANKING, *extra])


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("rank-bench")
    return run_bench(
        ranking_scenario(),
        algorithms=["popularity", "ease", "itemknn", "global"],
        seeds=2,
        shots=[1, 10],
        out=out,
        verbose=False,
        plots=False,
    )


def test_rows_carry_the_ranking_metrics_and_rank_scores_carry_no_mae(bench):
    rows = bench.rows
    assert len(rows) == 4 * 2 * 3  # algorithms x seeds x (1, 10, default)
    for r in rows:
        for m in (*RANKING_METRICS, *BEYOND_ACCURACY, "ndcg@10_neg", "auc_neg"):
            assert m in r["metrics"], (r["algorithm"], m)
            assert math.isfinite(r["metrics"][m])
        if r["algorithm"] in ("ease", "itemknn", "popularity"):
            assert "mae" not in r["metrics"]
            assert any("not ratings" in f for f in r["flags"])
        else:  # a rating model keeps its error metrics
            assert "mae" in r["metrics"]
    meta = json.loads((bench.out / "bench.json").read_text())
    assert meta["primary_metric"] == "ndcg@10_all"
    assert meta["protocol"]["ranking"] is True
    per_task = [
        json.loads(x) for x in __import__("gzip").open(bench.out / "per_task.jsonl.gz", "rt")
    ]
    assert {p["metric"] for p in per_task} == {"ndcg@10_all"}


def test_popularity_rows_are_identical_across_shots_and_the_query_is_the_same(bench):
    pop = [r for r in bench.rows if r["algorithm"] == "popularity" and r["seed"] == 0]
    by_shots = {r["shots"]: r for r in pop}
    # popularity ignores the support, and the candidates (catalogue minus the support pool) and the
    # query do not depend on the shots: every metric is the same at 1 and 10 shots
    for m in RANKING_METRICS:
        assert by_shots[1]["metrics"][m] == by_shots[10]["metrics"][m]
    ease = {
        r["shots"]: r["metrics"]["ndcg@10_all"]
        for r in bench.rows
        if r["algorithm"] == "ease" and r["seed"] == 0
    }
    assert ease[10] != ease[1]


def test_report_leads_with_the_catalogue_ranking(bench):
    text = bench.report.read_text()
    assert "primary metric: **ndcg@10_all**" in text
    first = text.index("ranking the catalogue (every relevant query item)")
    assert first < text.index("each relevant query item against its 100 sampled negatives")
    assert first < text.index("ranking within the query set")
    assert "| mae" not in text  # no error metric in a ranking scenario's tables
    assert "Metrics (catalogue ranking protocol)" in text


def test_fast_path_and_fallback_give_the_same_metrics():
    sc = ranking_scenario()
    table = load_table(sc.data)
    splits = build_splits(table, sc.protocol)
    fitted = build_method("ease", sc).fit(FitData(table, splits))
    spec = RankingSpec(splits, None, 100, seed=0)
    pool = splits.pools["meta-test"]
    scfg = sampler_config(sc.protocol)

    def without_fast_path(batch):
        adapted = fitted.adapt(batch.support)
        return lambda users, items: adapted.score(users, items)  # a plain function: fallback

    fast = score_pool(
        table,
        pool,
        scfg,
        lambda b: fitted.adapt(b.support).score,
        ranking=spec,
        cat=Catalogue(table),
    )
    slow = score_pool(table, pool, scfg, without_fast_path, ranking=spec, cat=Catalogue(table))
    for m in (*RANKING_METRICS, *BEYOND_ACCURACY, "ndcg@10_neg", "auc_neg"):
        assert fast[m] == pytest.approx(slow[m], abs=1e-12), m


def test_rating_scenarios_keep_the_single_positive_definitions():
    """Without protocol.ranking, score_pool's *_all / *_neg are the old single-positive metrics."""
    sc = load_scenario(
        "tasks/synthetic-cold-start.toml",
        [
            "data.synthetic.n_domains=2",
            "data.synthetic.n_users=60",
            "data.synthetic.n_items=60",
            "data.synthetic.density=0.4",
        ],
    )
    table = load_table(sc.data)
    splits = build_splits(table, sc.protocol)
    fitted = build_method("popularity", sc).fit(FitData(table, splits))
    assert fitted.by == "mean"  # a rating scenario: the shrunk mean
    ev = score_pool(
        table,
        splits.pools["meta-test"],
        sampler_config(sc.protocol),
        lambda b: fitted.adapt(b.support).score,
        catalogue=True,
    )
    assert "auc_all" in ev and "recall@20_all" not in ev and "coverage@10" not in ev
    assert "mae" in ev


def test_ml1m_ranking_scenarios_parse():
    for name in ("ml1m-cold-ranking", "ml1m-cross-genre-ranking"):
        sc = load_scenario(f"tasks/{name}.toml", data_root="/nonexistent")
        assert sc.protocol.ranking and sc.protocol.support_pool >= max(sc.bench.shots)
    for pair in (
        "sport-cloth",
        "cloth-electronic",
        "phone-electronic",
        "sport-phone",
        "sport-cloth-predefined",
    ):
        sc = load_scenario(f"tasks/amazon-{pair}-ranking.toml", data_root="/nonexistent")
        assert sc.protocol.ranking and sc.protocol.relevance is None


def test_catalogue_scoring_needs_users_on_the_fallback_path():
    from metarec._errors import ConfigError
    from metarec.methods.catalogue import score_catalogue

    with pytest.raises(ConfigError, match="has no score_catalogue fast path; pass users"):
        score_catalogue(lambda u, i: u.float(), torch.arange(3))
    got = score_catalogue(
        lambda u, i: (u * 10 + i).float(), torch.arange(3), torch.tensor([1, 2]), chunk=2
    )
    assert got.tolist() == [[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]]
    assert np.isfinite(got.numpy()).all()


@pytest.mark.data
def test_ml1m_cold_ranking_inspects_on_the_real_data(shared_data):
    """The shipped ranking scenario on MovieLens-1M: the MeLU states' catalogues come from the
    split (2,966 existing movies, 740 new ones), 20-rating support pools, leakage checks pass."""
    from metarec.episodes.build import inspect_scenario

    sc = load_scenario("tasks/ml1m-cold-ranking.toml", data_root=shared_data)
    rep = inspect_scenario(sc)
    assert all(v == "passed" for v in rep["leakage_checks"].values())
    cat = {name: s.get("catalogue") for name, s in rep["splits"].items()}
    assert cat["warm"] == cat["user-cold"] == cat["meta-val"] == 2966
    assert cat["item-cold"] == cat["user-item-cold"] == 740
    assert rep["splits"]["user-cold"]["query"]["min"] >= 1


def test_closed_form_rank_scores_are_not_clipped_to_the_rating_scale(tmp_path):
    """``elae`` scores order items and are not ratings: the bench must neither compute an error
    metric on them nor clip them to [1, 5] (which made them constant within every query)."""
    res = run_bench(
        ranking_scenario(),
        algorithms=["elae"],
        seeds=1,
        shots=[3],
        out=tmp_path / "elae",
        verbose=False,
        plots=False,
    )
    for r in res.rows:
        assert "mae" not in r["metrics"]
        assert any("not ratings" in f for f in r["flags"]), r["flags"]
        assert not any(f.startswith("constant predictions") for f in r["flags"]), r["flags"]
