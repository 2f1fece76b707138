"""Item warm-up protocol, MetaEmb and MWUF: phases, generated embedding, two-stage loss, scaling/shifting (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metarec.methods.learners  # noqa: F401
from metarec._errors import ConfigError, DataError
from metarec.config.warmup import WarmupConfig
from metarec.data.synthetic_personal import make_taste_table
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.warmup import (
    PHASES,
    click_table,
    item_warmup_split,
    load_warmup_scenario,
    warmup_phases,
)
from metarec.methods import FitData, build_method
from metarec.methods.learners import MWUF, MetaEmb, WarmupBase, WarmupSettings
from metarec.methods.learners.metaemb import metaemb_loss
from metarec.metrics.warmup import evaluate_warmup


def _table(seed=0):
    return make_taste_table(n_users=200, n_items=40, per_user=25, feedback="implicit", seed=seed)


def test_split_and_phases() -> None:
    t = _table()
    cfg = WarmupConfig(k=5, min_test=10, new_fraction=0.4, seed=0)
    sp = item_warmup_split(t, cfg)
    new = np.concatenate([sp.cold_items["meta-val"], sp.cold_items["meta-test"]])
    assert not np.isin(t.items[sp.pools["meta-train"].rows], new).any()
    pool = sp.pools["meta-test"]
    phases = warmup_phases(t, pool, 5)
    assert [p for p, _, _ in phases] == list(PHASES)
    for p, (_, sup, qry) in enumerate(phases):
        assert sup.sizes().tolist() == [5 * p] * len(pool)
        assert torch.equal(
            sup.items[:, 0], torch.from_numpy(pool.units)
        )  # the item, even when empty
        for j in range(len(pool)):
            rows = pool.unit_rows(j)
            assert sup.rows[j, : 5 * p].tolist() == rows[: 5 * p].tolist()  # time order
            ts_s, ts_q = t.timestamps[rows[:15]], t.timestamps[qry.rows[j][qry.mask[j]].numpy()]
            assert ts_s.max() <= ts_q.min()


def test_bad_protocol_input() -> None:
    t = make_taste_table(n_users=20, n_items=30, per_user=10, seed=0)
    with pytest.raises(DataError, match="threshold=9"):
        click_table(t, 9.0)
    with pytest.raises(ConfigError, match="new_fraction=1.5"):
        WarmupConfig(new_fraction=1.5)
    with pytest.raises(DataError, match="3 \\* k \\+ min_test"):
        item_warmup_split(click_table(t), WarmupConfig(k=50))


def test_scenario_file_loads(tmp_path) -> None:
    sc, cfg = load_warmup_scenario(
        "tasks/ml1m-item-warmup.toml", ["warmup.k=10"], data_root=tmp_path
    )
    assert sc.name == "ml1m-item-warmup" and cfg.k == 10
    with pytest.raises(ConfigError, match="unknown key 'warmup.kk'"):
        load_warmup_scenario("tasks/ml1m-item-warmup.toml", ["warmup.kk=10"], data_root=tmp_path)


def _models(t):
    s = WarmupSettings(dim=4, hidden=(6,), meta_hidden=5)
    base = WarmupBase(t, s, known_users=np.arange(1, t.n_users), old_items=np.arange(1, 20))
    return MetaEmb(base, s), MWUF(base, s)


def test_generated_embedding_and_two_stage_loss(f64) -> None:
    t = _table()
    me, _ = _models(t)
    items = torch.tensor([25, 30])
    e0 = me.cold_start(items)
    f = me.base.item_feat(items)
    l1, l2 = me.generator[0], me.generator[2]
    torch.testing.assert_close(e0, torch.relu(f @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias)
    g = torch.Generator().manual_seed(0)
    a = EpisodeSet(
        torch.randint(1, 200, (2, 4), generator=g),
        items.unsqueeze(1).expand(2, 4),
        torch.randint(0, 2, (2, 4), generator=g).double(),
        torch.ones(2, 4, dtype=torch.bool),
    )
    b = EpisodeSet(
        torch.randint(1, 200, (2, 3), generator=g),
        items.unsqueeze(1).expand(2, 3),
        torch.randint(0, 2, (2, 3), generator=g).double(),
        torch.ones(2, 3, dtype=torch.bool),
    )
    loss = metaemb_loss(me, e0, a, b, 0.3, 0.5)
    hand = 0.0
    for t_ in range(2):  # one task at a time, plain autograd
        e = e0[t_].detach().clone().requires_grad_(True)
        logit_a = me.base.logits(a.users[t_], a.items[t_], e.expand(4, -1))
        la = torch.nn.functional.binary_cross_entropy_with_logits(logit_a, a.targets[t_])
        (ga,) = torch.autograd.grad(la, e)
        e1 = (e - 0.5 * ga).detach()
        lb = torch.nn.functional.binary_cross_entropy_with_logits(
            me.base.logits(b.users[t_], b.items[t_], e1.expand(3, -1)), b.targets[t_]
        )
        hand = hand + (0.3 * la + 0.7 * lb) / 2
    torch.testing.assert_close(loss, hand)


def test_mwuf_scaling_and_shifting(f64) -> None:
    t = _table()
    _, mw = _models(t)
    for net in (mw.scaling, mw.shifting):
        net[-1].weight.data.normal_()
        net[-1].bias.data.normal_()
    s = EpisodeSet(
        torch.tensor([[3, 4, 0]]),
        torch.tensor([[25, 25, 0]]),
        torch.tensor([[1.0, 0.0, 0.0]]),
        torch.tensor([[True, True, False]]),
    )
    e = torch.randn(1, 4)
    out = mw.transform(e, s)
    u = (mw.base.user_enc(torch.tensor(3)) + mw.base.user_enc(torch.tensor(4))) / 2
    hand = e[0] * 2 * torch.sigmoid(mw.scaling(mw.base.item_feat(torch.tensor(25)))) + mw.shifting(
        u
    )
    torch.testing.assert_close(out[0], hand)


def _warmup_logloss(name: str, seed: int) -> float:
    t = make_taste_table(
        n_users=300, n_items=80, per_user=40, feedback="implicit", item_bias=0.6, seed=seed
    )
    sp = item_warmup_split(t, WarmupConfig(k=5, min_test=20, new_fraction=0.4, seed=seed))
    m = build_method(
        name,
        None,
        steps=0 if name == "warmup-base" else 150,
        val_every=50,
        lr=3e-3,
        pretrain_epochs=10,
        batch_size=256,
    )
    m.sampler = SamplerConfig(n_support=5, n_query=5)
    r = evaluate_warmup(m.fit(FitData(t, sp, seed=seed)), t, sp.pools["meta-test"], 5)
    return float(np.mean([r[p]["logloss"] for p in PHASES]))


@pytest.mark.slow
def test_metaemb_beats_the_base_model_in_most_seeds() -> None:
    wins = [_warmup_logloss("metaemb", s) < _warmup_logloss("warmup-base", s) for s in range(3)]
    assert sum(wins) >= 2, wins


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason=(
        "MWUF does not beat the warm-up base on this synthetic table (0 of 3 seeds; mean logloss "
        "over the phases, MWUF vs base: 0.4664/0.4566, 0.4783/0.4758, 0.5165/0.4985); without "
        "meta-training it equals the base, and what its meta networks learn (meta-val gains "
        "under 0.01 logloss, also when trained on new items) does not carry to held-out items"
    ),
)
def test_mwuf_beats_the_base_model_in_most_seeds() -> None:
    wins = [_warmup_logloss("mwuf", s) < _warmup_logloss("warmup-base", s) for s in range(3)]
    assert sum(wins) >= 2, wins


def test_serving_warms_each_cold_item_of_a_user_support_on_its_own_rows(f64) -> None:
    t = _table()
    me, mw = _models(t)
    for model in (me, mw):
        for net in (getattr(model, "generator", None), getattr(model, "scaling", None)):
            if net is not None:
                net[-1].weight.data.normal_()
        model.warm_lr.fill_(0.7)
    # one user task: cold items 25 (twice), 30, an old item 5 and padding
    s = EpisodeSet(
        torch.tensor([[3, 3, 3, 3, 0]]),
        torch.tensor([[25, 5, 30, 25, 0]]),
        torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0]]),
        torch.tensor([[True, True, True, True, False]]),
    )
    q = torch.tensor([[25, 30, 5, 31]])
    for model in (me, mw):
        got = model.score(model.adapt(s, steps=2), torch.full_like(q, 3), q)
        # hand loop: the task's loss over its 4 rows, each cold item's own embedding, 2 steps
        # (scored through transform_slots: MWUF warms up through its meta networks)
        e = {i: model.cold_start(torch.tensor(i)).detach() for i in (25, 30)}
        u = model.base.user_enc(torch.tensor(3))
        for _ in range(2):
            leaves = {i: v.clone().requires_grad_(True) for i, v in e.items()}
            logits = []
            for j in range(4):
                it = int(s.items[0, j])
                if it in leaves:
                    emb = model.transform_slots(leaves[it], torch.tensor(it), u)
                else:
                    emb = model.base.item_id(torch.tensor(it))
                logits.append(model.base.logits(torch.tensor(3), torch.tensor(it), emb))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                torch.stack(logits), s.targets[0, :4]
            )
            grads = torch.autograd.grad(loss, list(leaves.values()))
            e = {i: (leaves[i] - 0.7 * g).detach() for i, g in zip(leaves, grads, strict=True)}
        for n, it in enumerate(q[0].tolist()):
            if it in e:
                emb = model.transform_slots(e[it], torch.tensor(it), u)
            else:
                emb = model.default_embedding(torch.tensor(it))
            torch.testing.assert_close(
                got[0, n], model.base.logits(torch.tensor(3), torch.tensor(it), emb)
            )
        # an item task (the warm-up protocol) is unchanged: warm() of the item's cold start
        item = EpisodeSet(
            torch.tensor([[3, 4, 0]]),
            torch.tensor([[25, 25, 25]]),
            torch.tensor([[1.0, 0.0, 0.0]]),
            torch.tensor([[True, True, False]]),
        )
        with torch.enable_grad():
            e1 = model.warm(model.cold_start(torch.tensor([25])), item, 2, 0.7)
        emb = model.transform(e1.detach(), item)[0]
        out = model.score(model.adapt(item, steps=2), torch.tensor([[6]]), torch.tensor([[25]]))
        torch.testing.assert_close(
            out[0, 0], model.base.logits(torch.tensor(6), torch.tensor(25), emb)
        )
