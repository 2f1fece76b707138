"""``metatower``: ranking on planted tastes (beats popularity over seeds; personal top-10s), cold
items ranked through their features, the source history moving the ranking, save/load through
``build_fitted``, task draws, settings errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from metarec._errors import CheckpointError, ConfigError
from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.pool import build_pool
from metarec.episodes.splits import MetaSplits
from metarec.methods import FitData, build_fitted, build_method
from metarec.methods.learners._catalogue_tasks import UserLists, fixed_tasks, log_uniform_shots
from metarec.methods.learners._neighbours import Neighbours
from metarec.methods.learners.elae import catalogue_ndcg
from metarec.methods.learners.metatower import MetaTowerSettings

N_GENRES = 4


@pytest.fixture(autouse=True)
def _one_thread():
    """These towers are tiny: one thread avoids intra-op synchronisation on a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


FAST = dict(dim=16, hidden=32, feature_dim=8, steps=150, batch=64, lr=1e-2, val_every=50)


def _planted(
    seed: int, n_users: int = 240, n_items: int = 100, cold_from: int = 80
) -> tuple[InteractionTable, MetaSplits, np.ndarray]:
    """Users of four hidden taste groups (``u % 4``); item ``i`` has genre ``i % 4``. Each user
    rates 10 random warm items of their genre 5 and 3 random warm items of other genres 2; the
    test users (the last sixth) also rate 4 cold items (ids >= ``cold_from``, never in meta-train
    or meta-val) of their genre 5 and one of another genre 2. Returns the table, hand-made splits
    (meta-train, meta-val, meta-test) and the cold items' indices."""
    rng = np.random.default_rng(seed)
    genre = np.arange(n_items) % N_GENRES
    warm = np.arange(cold_from)
    cold = np.arange(cold_from, n_items)
    n_test = n_users // 6
    u, i, r = [], [], []
    for user in range(n_users):
        g = user % N_GENRES
        picks = [(it, 5.0) for it in rng.choice(warm[genre[warm] == g], 10, replace=False)]
        picks += [(it, 2.0) for it in rng.choice(warm[genre[warm] != g], 3, replace=False)]
        if user >= n_users - n_test:
            picks += [(it, 5.0) for it in rng.choice(cold[genre[cold] == g], 4, replace=False)]
            picks += [(it, 2.0) for it in rng.choice(cold[genre[cold] != g], 1, replace=False)]
        for it, rating in picks:
            u.append(user), i.append(int(it)), r.append(rating)
    frame = pd.DataFrame({"user": u, "item": i, "rating": r})
    feats = pd.DataFrame({"item": np.arange(n_items), "genre": [f"g{x}" for x in genre]})
    table = InteractionTable.from_frame(
        frame,
        Columns(),
        rating_scale=(1.0, 5.0),
        item_features=feats,
        item_feature_specs=[FeatureSpec("genre")],
    )
    users = np.asarray(table.user_ids.decode(table.users), dtype=np.int64)
    n_train = n_users - 2 * n_test
    parts = {
        "meta-train": users < n_train,
        "meta-val": (users >= n_train) & (users < n_users - n_test),
        "meta-test": users >= n_users - n_test,
    }
    pools = {
        name: build_pool(table, np.nonzero(m)[0], table.users, name, "user")
        for name, m in parts.items()
    }
    cold_idx = table.item_ids.encode([str(x) for x in cold])
    return table, MetaSplits(table, pools, cold_items={"meta-test": cold_idx}), cold_idx


def _fit(table, splits, seed, **settings):
    s = {**FAST, "shots": (1, 3, 5), "val_tasks": 40, **settings}
    return build_method("metatower", None, **s).fit(FitData(table, splits, seed=seed))


def _one(table: InteractionTable, rows: np.ndarray, user: int) -> EpisodeSet:
    n = len(rows)
    return EpisodeSet(
        torch.full((1, n), user, dtype=torch.long),
        torch.from_numpy(table.items[rows])[None],
        torch.from_numpy(table.ratings[rows])[None],
        torch.ones(1, n, dtype=torch.bool),
    )


def _test_ndcg(table, splits, fitted, seed, candidates, n_shots=3):
    """Mean nDCG@10 over the test users of ``fitted`` and of count popularity: support = 3
    random warm own-genre rows, relevant = the held-out rows rated >= 4 among ``candidates``."""
    pool = splits.pools["meta-test"]
    counts = torch.from_numpy(
        np.bincount(table.items[splits.pools["meta-train"].rows], minlength=table.n_items)
    ).double()
    cand = torch.zeros(table.n_items, dtype=torch.bool)
    cand[torch.as_tensor(candidates)] = True
    rng = np.random.default_rng(seed)
    ours, pops = [], []
    for j in range(len(pool)):
        rows = pool.unit_rows(j)
        warm_liked = rows[(table.ratings[rows] >= 4) & ~np.isin(table.items[rows], candidates)]
        if not cand.all():  # ranking cold items: every warm row may be the support
            warm_liked = rows[(table.ratings[rows] >= 4) & ~cand.numpy()[table.items[rows]]]
        sup = rng.choice(warm_liked, n_shots, replace=False)
        qry = np.setdiff1d(rows, sup)
        s = _one(table, sup, int(table.users[rows[0]]))
        sc = fitted.adapt(s).score_catalogue(torch.arange(table.n_items)).double()
        ex = ~cand[None].clone()
        ex[0, table.items[sup]] = True
        rel = torch.zeros(1, table.n_items, dtype=torch.bool)
        rel[0, table.items[qry][table.ratings[qry] >= 4]] = True
        ours.append(catalogue_ndcg(sc, ex, rel)[0].item())
        pops.append(catalogue_ndcg(counts[None], ex, rel)[0].item())
    return float(np.nanmean(ours)), float(np.nanmean(pops))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beats_popularity_on_catalogue_ndcg_over_seeds(seed):
    table, splits, cold = _planted(seed)
    fitted = _fit(table, splits, seed)
    warm = np.setdiff1d(np.unique(table.items), cold)
    ours, pop = _test_ndcg(table, splits, fitted, seed, warm)
    assert ours > pop + 0.2, (ours, pop)
    log = fitted.training_log  # meta-training improved on the initial towers
    assert log.best_step > 0 and log.best_val[log.metric] > fitted.summary["initial_val"]


def test_cold_items_ranked_through_their_features_above_chance():
    table, splits, cold = _planted(0)
    fitted = _fit(table, splits, 0)
    assert fitted.summary["select"] == "ids and hidden ids"  # item features, a cold-item state
    assert fitted.training_log.metric == "ndcg@10_select"
    ours, _ = _test_ndcg(table, splits, fitted, 0, cold)
    # chance: the same tasks scored by seeded random orders
    g = torch.Generator().manual_seed(0)
    chance = []
    for _ in range(20):

        class _Random:
            def adapt(self, s):
                class _A:
                    def score_catalogue(self, items):
                        return torch.rand(1, items.shape[0], generator=g)

                return _A()

        chance.append(_test_ndcg(table, splits, _Random(), 0, cold)[0])
    assert ours > 0.6 and ours > float(np.mean(chance)) + 0.25, (ours, np.mean(chance))
    # without id dropout the towers never learn to place an item without its id
    assert fitted.summary["id_dropout"] == 0.25


def test_opposite_supports_get_personal_top10_lists():
    table, splits, cold = _planted(0)
    fitted = _fit(table, splits, 0)
    enc = lambda xs: torch.as_tensor(table.item_ids.encode([str(x) for x in xs]))  # noqa: E731
    items = torch.stack([enc([0, 4, 8]), enc([2, 6, 10])])  # genre 0 vs genre 2
    sup = EpisodeSet(
        torch.zeros(2, 3, dtype=torch.long), items, torch.full((2, 3), 5.0), torch.ones(2, 3).bool()
    )
    adapted = fitted.adapt(sup)
    assert adapted.score_kind == "rank"  # not ratings: never clipped to the rating scale
    scores = adapted.score_catalogue(torch.arange(table.n_items))
    scores[0, items[0]] = -math.inf
    scores[1, items[1]] = -math.inf
    scores[:, 0] = -math.inf  # the unknown-item slot
    top = torch.topk(scores, 10, dim=1).indices
    assert len(set(top[0].tolist()) & set(top[1].tolist())) <= 3
    genres = np.asarray(table.item_ids.decode(top.flatten().numpy()), dtype=int).reshape(2, 10) % 4
    assert (genres[0] == 0).sum() >= 8 and (genres[1] == 2).sum() >= 8


def _two_domain(seed: int) -> tuple[InteractionTable, MetaSplits]:
    """Source items 0..39 and target items 100..139, genre ``i % 4`` in each; a user of group
    ``u % 4`` rates 8 source items of their genre; in the target, 6 items of their genre and the
    two blockbusters 100 and 101 (genre 0 and 1; every user has them), all rated 5. The last
    third of the users are cold in the target (meta-val, meta-test); the last user also rates the
    target item 150, which nobody else has."""
    rng = np.random.default_rng(seed)
    u, i, r, d = [], [], [], []
    for user in range(240):
        g = user % 4
        src = rng.choice(np.arange(g, 40, 4), 8, replace=False)
        tgt = rng.choice(np.arange(100 + g, 140, 4)[1:], 6, replace=False)
        extra = [150] if user == 239 else []
        for it, dom in [(x, "source") for x in src] + [
            (x, "target") for x in [100, 101, *tgt, *extra]
        ]:
            u.append(user), i.append(int(it)), r.append(5.0), d.append(dom)
    frame = pd.DataFrame({"user": u, "item": i, "rating": r, "domain": d})
    table = InteractionTable.from_frame(frame, Columns(domain="domain"), rating_scale=(1.0, 5.0))
    users = np.asarray(table.user_ids.decode(table.users), dtype=np.int64)
    target = np.asarray(table.domain_ids.decode(table.domains)) == "target"
    parts = {
        "meta-train": ~target | (users < 160),
        "meta-val": target & (users >= 160) & (users < 200),
        "meta-test": target & (users >= 200),
    }
    pools = {
        n: build_pool(table, np.nonzero(m)[0], table.users, n, "user") for n, m in parts.items()
    }
    return table, MetaSplits(table, pools)


def test_source_history_moves_the_ranking():
    table, splits = _two_domain(0)
    fitted = _fit(table, splits, 0, steps=200, history_len=8, shots=(1, 2))
    assert fitted.has_history and fitted.training_log.best_step > 0
    # two cold users (groups 0 and 2) with the same one-shot support: the blockbuster 100
    enc = lambda xs: torch.as_tensor(table.item_ids.encode([str(x) for x in xs]))  # noqa: E731
    users = torch.as_tensor(table.user_ids.encode(["200", "202"]))
    sup = EpisodeSet(
        users[:, None], enc([100, 100])[:, None], torch.full((2, 1), 5.0), torch.ones(2, 1).bool()
    )
    target = enc(range(102, 140))  # the target items but the blockbusters
    scores = fitted.adapt(sup).score_catalogue(target)
    top = torch.topk(scores, 5, dim=1).indices
    genres = np.asarray(table.item_ids.decode(target[top].flatten().numpy()), dtype=int) % 4
    genres = genres.reshape(2, 5)
    assert (genres[0] == 0).sum() >= 4 and (genres[1] == 2).sum() >= 4, genres
    # without the history block the same supports get the same list
    flat = _fit(table, splits, 0, steps=200, history=False, shots=(1, 2))
    s2 = flat.adapt(sup).score_catalogue(target)
    torch.testing.assert_close(s2[0], s2[1])


def test_save_load_adapt_equality_and_shape_errors():
    table, splits, _ = _planted(0)
    fitted = _fit(table, splits, 0, steps=20, head="ridge", pool="attention")
    shell = build_fitted("metatower", fitted.config(), table)
    shell.load_state_dict(fitted.state_dict())
    sup = _one(table, np.arange(5), 3)
    every = torch.arange(table.n_items)
    torch.testing.assert_close(
        shell.adapt(sup).score_catalogue(every), fitted.adapt(sup).score_catalogue(every)
    )
    a = fitted.adapt(sup)
    items = torch.tensor([[1, 5, 9]])
    torch.testing.assert_close(a.score(items * 0, items), a.score_catalogue(every)[:, [1, 5, 9]])
    bad = dict(fitted.state_dict())
    key = "towers.items.ids.weight"
    bad[key] = bad[key][:-1]
    with pytest.raises(CheckpointError, match="ids.weight' has shape .* belong to another run"):
        shell.load_state_dict(bad)
    with pytest.raises(CheckpointError, match="differ from metatower's"):
        shell.load_state_dict({k: v for k, v in fitted.state_dict().items() if k != key})


def test_items_without_id_or_features_get_the_row_floor():
    table, splits = _two_domain(0)  # no item features; item 150 is only in a test user's rows
    fitted = _fit(table, splits, 0, steps=10)
    new = int(table.item_ids.encode(["150"])[0])
    sup = _one(table, np.arange(2), int(table.users[0]))
    a = fitted.adapt(sup)
    assert bool(a.unscorable[new]) and int(a.unscorable.sum()) == 2  # item 150 and slot 0
    s = a.score_catalogue(torch.arange(table.n_items))
    assert float(s[0, new]) == float(s[0].min())


def test_task_draws_respect_sizes_and_pins():
    table, splits, _ = _planted(0)
    rows = splits.pools["meta-train"].rows
    column = np.full(table.n_items, -1)
    items = np.unique(table.items[rows])
    column[items] = np.arange(len(items))
    rel = table.ratings >= 4
    lists = UserLists(table, rows, column, rel)
    assert int(lists.lengths.min()) == 13 and len(lists) == 160
    g = torch.Generator().manual_seed(0)
    b = lists.draw(torch.arange(8), (2, 5), g)
    k = b.mask.sum(1)
    assert int(k.min()) >= 2 and int(k.max()) <= 5
    tgt, ex = b.targets(len(items))
    assert not (tgt & ex).any()  # a support item is never a positive
    for t in range(8):  # the positives are exactly the user's other relevant items
        row = lists.cols[t][: lists.lengths[t]][lists.relevant[t][: lists.lengths[t]]]
        want = set(row.tolist()) - set(b.support[t][b.mask[t]].tolist())
        assert set(b.positives[t][b.pos_mask[t]].tolist()) == want
    pinned = fixed_tasks(lists, [1, 3], 10, seed=0)
    torch.testing.assert_close(pinned[0].positives, pinned[1].positives)  # same query at every k
    torch.testing.assert_close(pinned[0].support[:, 0], pinned[1].support[:, 0])
    ks = log_uniform_shots(1, torch.full((20000,), 20), torch.Generator().manual_seed(0))
    frac = torch.bincount(ks, minlength=21).double() / ks.numel()
    # log-uniform: P(k) = log((k + 1) / k) / log(21)
    assert abs(float(frac[1]) - math.log(2) / math.log(21)) < 0.02


def test_settings_errors_by_message():
    with pytest.raises(ConfigError, match=r"loss='softmx': must be one of \['auto', 'softmax'"):
        MetaTowerSettings(loss="softmx")
    with pytest.raises(ConfigError, match=r"id_dropout=1.0: must be in \[0, 1\)"):
        MetaTowerSettings(id_dropout=1.0)
    with pytest.raises(ConfigError, match=r"shots=\[0, 3\]: each support size must be >= 1"):
        MetaTowerSettings(shots=(0, 3))
    with pytest.raises(ConfigError, match="dim=0: must be >= 1; e.g. dim=128"):
        MetaTowerSettings(dim=0)
    with pytest.raises(ConfigError, match=r"unknown key 'metatower.stepz' \(did you mean 'steps'"):
        build_method("metatower", None, stepz=10)


def test_neighbours_and_the_own_share_against_a_loop():
    rng = np.random.default_rng(3)
    X = rng.random((7, 9)) < 0.45
    X[0, :3] = True
    u, i = np.nonzero(X)
    frame = pd.DataFrame({"user": u, "item": i, "rating": np.full(len(u), 5.0)})
    table = InteractionTable.from_frame(frame, Columns(), rating_scale=(1.0, 5.0))
    enc = table.item_ids.encode([str(x) for x in range(9)])
    catalogue = np.sort(enc[[1, 2, 4, 6, 7]])
    nb = Neighbours(table.users, table.items, table.n_users, table.n_items, catalogue)
    # the loop: K[i, j] = sum_u x_ui x_uj / sqrt(n_i n_j) in table indices
    Xt = np.zeros((table.n_users, table.n_items))
    Xt[table.users, table.items] = 1.0
    n = Xt.sum(0)
    inv = np.where(n > 0, 1 / np.sqrt(np.maximum(n, 1)), 0.0)
    K = (Xt.T @ Xt) * inv[:, None] * inv[None, :]
    torch.testing.assert_close(
        nb.K.double(), torch.from_numpy(K[:, catalogue]), rtol=1e-6, atol=1e-7
    )
    user = int(table.users[0])
    mine = np.flatnonzero(Xt[user])
    items = torch.as_tensor(mine[:3])[None]
    w = torch.tensor([[1.0, -0.5, 2.0]])
    mask = torch.tensor([[True, True, False]])
    want = (w[0, :2, None].numpy() * K[mine[:2]][:, catalogue]).sum(0)
    torch.testing.assert_close(nb.scores(items, w, mask)[0].double(), torch.from_numpy(want))
    own = torch.from_numpy(Xt[user, catalogue] > 0)[None]
    share = nb.own_share(items, w, mask, own, mask)[0].double()
    ref = sum(w[0, s].item() * inv[mine[s]] * inv[catalogue] * Xt[user, catalogue] for s in (0, 1))
    torch.testing.assert_close(share, torch.from_numpy(ref), rtol=1e-6, atol=1e-7)
