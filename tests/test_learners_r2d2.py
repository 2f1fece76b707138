"""R2-D2: the closed-form heads against hand solutions (float64); beats feature-global."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metarec.methods.learners  # noqa: F401
from metarec._errors import ConfigError
from metarec.data.synthetic_personal import make_taste_table
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import random_split
from metarec.methods import FitData, build_method
from metarec.methods.learners import R2D2, R2D2Settings, evaluate_fitted
from metarec.methods.learners.r2d2 import logistic_head, ridge_head


def _support(t, T=3, N=6, seed=0, labels=False) -> EpisodeSet:
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(1, t.n_users, (T, 1), generator=g).expand(T, N).clone()
    items = torch.randint(1, t.n_items, (T, N), generator=g)
    hi = 2 if labels else 6
    lo = 0 if labels else 1
    y = torch.randint(lo, hi, (T, N), generator=g).double()
    mask = torch.ones(T, N, dtype=torch.bool)
    mask[0, 4:] = False
    return EpisodeSet(users, items, y, mask)


def test_ridge_head_matches_numpy_per_task(f64) -> None:
    g = torch.Generator().manual_seed(0)
    phi, resid = torch.randn(4, 7, 3, generator=g), torch.randn(4, 7, generator=g)
    mask = torch.rand(4, 7, generator=g) > 0.3
    mask[1] = False  # an empty task: w = 0
    lam = torch.tensor([0.5, 2.0, 0.1])
    w = ridge_head(phi, resid, mask, lam)
    for t in range(4):
        rows = mask[t].numpy()
        P, e = phi[t].numpy()[rows], resid[t].numpy()[rows]
        # the ridge problem as one least-squares fit with sqrt(lam) rows appended
        A = np.vstack([P, np.diag(np.sqrt(lam.numpy()))])
        b = np.concatenate([e, np.zeros(3)])
        hand = np.linalg.lstsq(A, b, rcond=None)[0]
        np.testing.assert_allclose(w[t].numpy(), hand, rtol=1e-10, atol=1e-12)
    assert torch.equal(w[1], torch.zeros(3))


def test_logistic_head_reaches_the_regularised_optimum(f64) -> None:
    g = torch.Generator().manual_seed(1)
    phi, off = torch.randn(3, 9, 4, generator=g), torch.randn(3, 9, generator=g)
    y = (torch.rand(3, 9, generator=g) > 0.5).double()
    mask = torch.rand(3, 9, generator=g) > 0.2
    lam = torch.tensor([0.3, 1.0, 2.0, 0.5])
    w = logistic_head(phi, off, y, mask, lam, steps=25)
    x = w.clone().requires_grad_(True)  # the objective's gradient by autograd must vanish
    z = off + (phi @ x.unsqueeze(-1)).squeeze(-1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
    obj = (bce * mask).sum() + 0.5 * (lam * x.square()).sum()
    (grad,) = torch.autograd.grad(obj, x)
    assert grad.abs().max() < 1e-10
    # one Newton step by hand from w = 0: w1 = (Phi^T W Phi + diag(lam))^-1 Phi^T (y - p)
    w1 = logistic_head(phi, off, y, mask, lam, steps=1)
    for t in range(3):
        rows = mask[t]
        P, p = phi[t][rows], torch.sigmoid(off[t][rows])
        H = P.T @ torch.diag(p * (1 - p)) @ P + torch.diag(lam)
        torch.testing.assert_close(w1[t], torch.linalg.solve(H, P.T @ (y[t][rows] - p)))


def test_adapt_and_score_are_the_documented_formulas(f64) -> None:
    t = make_taste_table(n_users=20, n_items=30, per_user=10, seed=0)
    m = R2D2(t, R2D2Settings(dim=4, hidden=(8,), rank=3, ridge=0.7))
    s = _support(t)
    w = m.adapt(s)
    g, phi = m.parts(s.users, s.items)
    assert torch.equal(phi[..., -1], torch.ones_like(g))  # the offset column
    lam = torch.full((4,), 0.7)
    torch.testing.assert_close(w, ridge_head(phi, s.targets - g, s.mask, lam))
    items = torch.randint(1, t.n_items, (3, 5))
    users = s.users[:, :5]
    gq, pq = m.parts(users, items)
    out = m.score(w, users, items)
    for ti in range(3):
        for n in range(5):
            torch.testing.assert_close(out[ti, n], gq[ti, n] + pq[ti, n] @ w[ti])
    empty = EpisodeSet(s.users, s.items, s.targets, torch.zeros_like(s.mask))
    torch.testing.assert_close(m.score(m.adapt(empty), users, items), gq)  # no support: the prior


@pytest.mark.parametrize("feedback", ["explicit", "implicit"])
def test_padding_changes_nothing(f64, feedback: str) -> None:
    t = make_taste_table(n_users=20, n_items=30, per_user=10, feedback=feedback, seed=0)
    m = R2D2(t, R2D2Settings(dim=4, hidden=(8,), rank=3))
    s = _support(t, labels=feedback == "implicit")
    junk = EpisodeSet(
        s.users, torch.where(s.mask, s.items, 7), torch.where(s.mask, s.targets, 99.0), s.mask
    )
    torch.testing.assert_close(m.adapt(s), m.adapt(junk))


def test_hidden_items_lose_their_id_and_get_the_cold_prior(f64) -> None:
    t = make_taste_table(n_users=20, n_items=30, per_user=10, seed=0)
    m = R2D2(t, R2D2Settings(dim=4, hidden=(8,), rank=2, id_dropout=0.5))
    m.uses_prior = True
    m.set_prior(torch.full((t.n_items,), 3.0), torch.full((t.n_items,), 2.0))
    idx = torch.arange(1, 25).reshape(2, 12)
    users = torch.ones_like(idx)
    torch.testing.assert_close(m.items(idx), m.item_enc(idx))
    hide = torch.zeros_like(idx, dtype=torch.bool)
    hide[:, ::2] = True
    got = m.items(idx, hide)
    unknown = m.item_enc.ids.weight[0]
    assert torch.equal(got[hide][:, -4:], unknown.expand(12, 4))  # hidden: the unknown id
    torch.testing.assert_close(got[~hide], m.item_enc(idx)[~hide])  # the rest untouched
    torch.testing.assert_close(got[..., :-4], m.item_enc(idx)[..., :-4])  # features kept
    g, _ = m.parts(users, idx)  # evaluation: no entry hidden, the item's own prior
    h = m.body(torch.cat([m.user_enc(users), m.item_enc(idx)], -1))
    torch.testing.assert_close(g, 3.0 + m.prior(h).squeeze(-1))
    torch.manual_seed(0)
    g_all, _ = m.parts(users, idx, drop=0.999999)  # training, every id hidden
    h0 = m.body(torch.cat([m.user_enc(users), m.items(idx, torch.ones_like(hide))], -1))
    torch.testing.assert_close(g_all, 2.0 + m.prior(h0).squeeze(-1))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"ridge=0.0: must be a finite number > 0"):
        build_method("r2d2", None, ridge=0.0)
    with pytest.raises(ConfigError, match=r"id_dropout=1.0: must be in \[0, 1\)"):
        build_method("r2d2", None, id_dropout=1.0)
    with pytest.raises(ConfigError, match=r"rank=-1: must be >= 0"):
        build_method("r2d2", None, rank=-1)
    with pytest.raises(ConfigError, match=r"newton_steps=0: must be >= 1"):
        build_method("r2d2", None, newton_steps=0)
    with pytest.raises(ConfigError, match="unknown key 'r2d2.rnak'.*did you mean 'rank'"):
        build_method("r2d2", None, rnak=3)


@pytest.mark.parametrize(
    ("feedback", "metric", "margin", "steps"),
    [("explicit", "mae", -0.1, 60), ("implicit", "auc", 0.05, 150)],
)
def test_r2d2_beats_feature_global_over_seeds(
    feedback: str, metric: str, margin: float, steps: int
) -> None:
    wins = []
    for seed in range(3):
        t = make_taste_table(
            n_users=100, n_items=80, per_user=25, taste=1.5, feedback=feedback, seed=seed
        )
        sp = random_split(
            t,
            "user",
            (0.6, 0.2, 0.2),
            n_query=10,
            min_interactions=15,
            max_interactions=None,
            seed=seed,
        )
        scfg = SamplerConfig(n_support=10, n_query=10)
        got = {}
        for name in ("r2d2", "feature-global"):
            m = build_method(name, None, steps=steps, val_every=30, lr=3e-3, dim=4, meta_batch=16)
            m.sampler = scfg
            f = m.fit(FitData(t, sp, seed=seed))
            got[name] = evaluate_fitted(f, t, sp.pools["meta-test"], scfg)[metric]
        diff = got["r2d2"] - got["feature-global"]
        wins.append(diff < margin if metric == "mae" else diff > margin)
    assert all(wins), (feedback, wins, got)


def test_random_shots_keeps_between_one_and_all_real_entries() -> None:
    from metarec.methods.learners.r2d2 import random_shots

    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(400, 8, dtype=torch.bool)
    mask[:, :5] = True
    mask[-1] = False  # an empty task stays empty
    kept = random_shots(mask, g)
    assert not (kept & ~mask).any()  # only real entries
    counts = kept[:-1].sum(1)
    assert int(counts.min()) == 1 and int(counts.max()) == 5
    assert set(counts.tolist()) == {1, 2, 3, 4, 5}  # every size occurs
    assert not kept[-1].any()
    per_position = kept[:-1, :5].float().mean(0)  # no position favoured
    assert float(per_position.max() - per_position.min()) < 0.15


def test_r2d2_is_first_class_in_the_tooling(tmp_path, capsys, monkeypatch) -> None:
    """``metarec train`` prints r2d2's real step count and rate and writes its log; the TensorBoard
    logger gets its rows; the benchmark draws its learning curve."""
    import json
    import re
    import sys
    import types

    from _helpers import COLD_START

    from metarec.bench import run_bench
    from metarec.cli.main import main
    from metarec.config import load_scenario

    sets = [
        "algorithm.name=r2d2",
        "data.synthetic.n_domains=3",
        "data.synthetic.n_users=60",
        "data.synthetic.n_items=80",
        "train.steps=4",
        "train.val_every=2",
        "train.val_tasks=8",
        "learners.r2d2.hidden=[8]",
        "learners.r2d2.rank=3",
    ]
    scalars: list[tuple[str, float, int]] = []

    class Writer:  # torch.utils.tensorboard's SummaryWriter, as the TensorBoard logger uses it
        def __init__(self, log_dir: str) -> None:
            pass

        def add_scalar(self, key: str, value: float, step: int) -> None:
            scalars.append((key, value, step))

        def close(self) -> None:
            pass

    monkeypatch.setitem(
        sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer)
    )
    run = tmp_path / "run"
    argv = ["train", COLD_START, "--out", str(run), "--set", "train.loggers=['tensorboard']"]
    assert main([*argv, *sum((["--set", s] for s in sets), [])]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"trained 4 steps in [\d.]+ s \(\d+ tasks/s\); best validation at step [24]:", out
    )
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and "val" in rows[1]
    assert {s for k, _, s in scalars if k == "loss"} == {1, 2, 3, 4}
    assert {s for k, _, s in scalars if k == "val/mae"} == {2, 4}
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    # the benchmark's learning curves (loss and meta-val metric vs step) include r2d2
    sc = load_scenario(COLD_START, [*sets, "train.loggers=[]"])
    res = run_bench(sc, algorithms=["r2d2"], seeds=1, shots=[3], out=tmp_path / "b", verbose=False)
    curves = [json.loads(x) for x in (tmp_path / "b" / "curves.jsonl").read_text().splitlines()]
    learning = [c for c in curves if c["kind"] == "learning" and c["algorithm"] == "r2d2"]
    val = [c for c in curves if c["kind"] == "validation" and c["algorithm"] == "r2d2"]
    assert learning[0]["step"] == [1, 2, 3, 4] and val[0]["step"] == [2, 4]
    assert all(r["steps"] == 4 for r in res.rows)
    if res.plots:  # matplotlib installed: the learning-curve plot is drawn from them
        assert (tmp_path / "b" / "plots" / "learning_curves.png").exists()
