"""``content-bias``: the ridge and the offsets against float64 references, cold items placed by
their text beating the item mean (and the same method without text) over seeds, and its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metarec._errors import CheckpointError, ConfigError
from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.pool import build_pool
from metarec.episodes.sampler import SamplerConfig, pin_queries
from metarec.episodes.splits import MetaSplits
from metarec.methods import FitData, build_method
from metarec.methods.learners.content_bias import (
    ContentBiasFitted,
    ContentBiasMethod,
    make_content_bias,
    task_offsets,
    weighted_ridge,
)
from metarec.methods.popularity import PopularityMethod
from metarec.metrics.evaluate import evaluate_fitted

MOOD = {"good": 0.9, "bad": -0.9, "meh": 0.0}


class WordEncoder:
    """Deterministic bag of words over a tiny vocabulary (a stand-in for a pretrained model)."""

    name = "words-test-v1"
    vocab = ("good", "bad", "meh", "space", "love", "war", "sea", "toys")

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for k, t in enumerate(texts):
            for w in t.split():
                if w in self.vocab:
                    out[k, self.vocab.index(w)] += 1.0
        return out


def _table(seed: int, text: bool) -> tuple[InteractionTable, MetaSplits]:
    """Items' bias set by one mood word of their title; items 61..100 are never in meta-train."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 150, 100
    moods = rng.choice(list(MOOD), size=n_items)
    titles = [f"{m} {rng.choice(WordEncoder.vocab[3:])}" for m in moods]
    off = rng.normal(0, 0.5, size=n_users)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=30, replace=False):
            r = 3.3 + MOOD[moods[i]] + off[u] + rng.normal(0, 0.4)
            rows.append((u + 1, i + 1, float(np.clip(np.round(r), 1, 5))))
    inter = pd.DataFrame(rows, columns=["user", "item", "rating"])
    feats = pd.DataFrame({"item": np.arange(1, n_items + 1), "title": titles})
    specs = [FeatureSpec("title", "text", encoder=WordEncoder())] if text else []  # type: ignore[arg-type]
    table = InteractionTable.from_frame(
        inter,
        Columns(),
        rating_scale=(1.0, 5.0),
        item_features=feats if text else None,
        item_feature_specs=specs if text else None,
    )
    raw_items = np.asarray(table.item_ids.decode(table.items))
    cold = raw_items > 60
    users = np.asarray(table.user_ids.decode(table.users))
    spec = {
        "meta-train": (users <= 100) & ~cold,
        "meta-val": (users > 100) & (users <= 120) & ~cold,
        "item-cold": (users > 120) & cold,
    }
    pools = {}
    for name, mask in spec.items():
        p = build_pool(table, np.nonzero(mask)[0], table.users, name, "user", min_interactions=4)
        pools[name] = p if name == "meta-train" else pin_queries(table, p, 3, seed=seed)
    splits = MetaSplits(
        table, pools, states=["item-cold"], disjoint_units=["meta-val", "item-cold"]
    )
    return table, splits


def test_ridge_and_offsets_match_float64_references() -> None:
    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(40, 6)), rng.normal(size=40), rng.uniform(0.1, 1.0, size=40)
    alpha = 2.5
    # reference: least squares on the augmented system [sqrt(w) x; sqrt(alpha) I] b = [sqrt(w) y; 0]
    a = np.vstack([x * np.sqrt(w)[:, None], np.sqrt(alpha) * np.eye(6)])
    ref = np.linalg.lstsq(a, np.concatenate([y * np.sqrt(w), np.zeros(6)]), rcond=None)[0]
    np.testing.assert_allclose(weighted_ridge(x, y, w, alpha), ref, rtol=1e-10, atol=1e-12)
    bias = torch.as_tensor(rng.normal(size=9), dtype=torch.float64)
    items = torch.as_tensor(rng.integers(1, 9, size=(3, 5)))
    targets = torch.as_tensor(rng.integers(1, 6, size=(3, 5)), dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    s = EpisodeSet(torch.zeros_like(items), items, targets, mask)
    got = task_offsets(s, 3.5, bias, 2.0)
    for t in range(3):
        res = [float(targets[t, j] - 3.5 - bias[items[t, j]]) for j in range(5) if mask[t, j]]
        assert got[t].item() == pytest.approx(sum(res) / (len(res) + 2.0), abs=1e-12)


def test_cold_items_placed_by_text_beat_the_item_mean(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    scfg = SamplerConfig(n_support=None, n_query=3)
    for seed in (0, 1, 2):
        mae = {}
        for text in (True, False):
            table, splits = _table(seed, text)
            fitted = ContentBiasMethod(scfg).fit(FitData(table, splits, seed=seed))
            mae[text] = evaluate_fitted(
                fitted, table, splits["item-cold"], scfg, dtype=torch.float64
            )["mae"]
        pop = PopularityMethod().fit(FitData(table, splits))
        mae["item-mean"] = evaluate_fitted(
            pop, table, splits["item-cold"], scfg, dtype=torch.float64
        )["mae"]
        assert mae[True] < mae["item-mean"] - 0.15, (seed, mae)  # the text places the cold items
        assert mae[True] < mae[False] - 0.1, (seed, mae)  # ... not the offset alone


def test_state_round_trip_and_errors(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path))
    table, splits = _table(0, True)
    fitted = build_method("content-bias", None).fit(FitData(table, splits))
    shell = ContentBiasFitted.build("content-bias", fitted.config(), table)
    shell.load_state_dict(fitted.state_dict())
    assert torch.equal(shell.bias, fitted.bias) and shell.mu == fitted.mu
    with pytest.raises(CheckpointError, match="'bias' has shape"):
        shell.load_state_dict({"bias": torch.zeros(3), "mu": torch.tensor(1.0)})
    with pytest.raises(ConfigError, match="unknown setting 'alpha'"):
        make_content_bias(alpha=3)
    with pytest.raises(ConfigError, match=r"alphas=\[\]"):
        ContentBiasMethod(alphas=[])
    with pytest.raises(ConfigError, match="folds=1"):
        ContentBiasMethod(folds=1)
