"""Cross-domain ranking: a cold target user's source history changes their top-10, for
``r2d2-source`` trained to rank and for ``elae`` over a two-domain table (synthetic: the target
taste is a function of the source taste)."""

from __future__ import annotations

import copy

import pytest
import torch

from metarec.config import load_scenario
from metarec.config.objective import RankingObjective
from metarec.data.synthetic_crossdomain import make_two_domain
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.build import build_splits
from metarec.episodes.ranking import state_catalogue
from metarec.methods import FitData, build_method
from metarec.methods.learners.elae import make_elae


@pytest.fixture(scope="module")
def two_domains():
    table = make_two_domain(n_users=200, seed=0)
    sc = load_scenario(
        None,
        data={"source": "synthetic"},
        protocol={
            "split": "cold_domain_users",
            "target_domain": "target",
            "beta": 0.3,
            "val_fraction": 0.3,
            "ranking": True,
            "relevance": 4.0,
            "support_pool": 10,
            "n_support": 3,
            "n_query": 10,
            "min_interactions": 11,
            "max_interactions": "none",
        },
        algorithm={"loss": "softmax", "meta_batch": 16},
        train={"steps": 100, "val_every": 50, "val_tasks": 40, "outer_lr": 0.01, "progress": False},
    )
    splits = build_splits(table, sc.protocol)
    return table, splits, sc


def _cold_users(table, splits, n: int = 8) -> list[int]:
    return [int(u // table.n_domains) for u in splits.pools["meta-test"].units[:n]]


def _top10(fitted, table, splits, users: list[int]) -> list[set[int]]:
    """Each user's top-10 of the target catalogue after one and the same target shot (the
    catalogue's first item, rated 5), that item left out."""
    cat = torch.as_tensor(state_catalogue(splits, "meta-test"))
    T = len(users)
    sup = EpisodeSet(
        torch.tensor(users)[:, None],
        torch.full((T, 1), int(cat[0])),
        torch.full((T, 1), 5.0),
        torch.ones(T, 1, dtype=torch.bool),
    )
    scores = fitted.adapt(sup).score(
        torch.tensor(users)[:, None].expand(-1, len(cat)), cat.expand(T, -1)
    )
    scores[:, 0] = -torch.inf
    return [set(cat[torch.topk(row, 10).indices].tolist()) for row in scores]


def _overlaps(tops: list[set[int]]) -> list[int]:
    return [len(tops[0] & other) for other in tops[1:]]


def test_r2d2_source_trained_to_rank_lists_follow_the_source_history(two_domains):
    table, splits, sc = two_domains
    method = build_method(
        "r2d2-source", sc, dim=8, hidden=[16], rank=4, pretrain_epochs=1, history_len=30
    )
    fitted = method.fit(FitData(table, splits, seed=0))
    assert fitted.ranking == RankingObjective("softmax", 4.0)
    users = _cold_users(table, splits)
    overlaps = _overlaps(_top10(fitted, table, splits, users))
    # the same target shot, different source histories: different lists
    assert max(overlaps) <= 7 and sum(overlaps) / len(overlaps) <= 5, overlaps
    # each user's own list without their history (the same shot, the same sampled negatives)
    blind = copy.deepcopy(fitted)
    blind.learner.hist_mask.zero_()
    own = _top10(fitted, table, splits, users)
    without = _top10(blind, table, splits, users)
    changed = [len(a & b) for a, b in zip(own, without, strict=True)]
    # on average a user's own history replaces at least 3 of their 10 (a user with a short
    # history may keep the blind list)
    assert sum(changed) / len(changed) <= 7, changed


def test_elae_lists_follow_the_source_history(two_domains):
    table, splits, _ = two_domains
    fitted = make_elae(None, shots=(1, 3), val_tasks=40).fit(FitData(table, splits, seed=0))
    assert len(fitted.source_items) > 0  # a source block in its input rows
    users = _cold_users(table, splits)
    overlaps = _overlaps(_top10(fitted, table, splits, users))
    assert max(overlaps) <= 7 and sum(overlaps) / len(overlaps) <= 5, overlaps
    blind = copy.copy(fitted)
    blind.hist_ptr = torch.zeros_like(fitted.hist_ptr)  # every history empty
    without = _top10(blind, table, splits, users)
    assert _overlaps(without) == [10] * (len(users) - 1)  # nothing else tells users apart
    own = _top10(fitted, table, splits, users)
    changed = [len(a & b) for a, b in zip(own, without, strict=True)]
    assert max(changed) <= 7, changed
