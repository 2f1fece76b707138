"""Cross-domain transfer: DA regularisers, gradient reversal, joint loss, bridges, the method
entry point and its benchmark rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from metarec._errors import ConfigError
from metarec.data.synthetic_crossdomain import make_two_domain
from metarec.episodes.splits import cold_domain_users_split, random_split
from metarec.methods.crossdomain import (
    EMCDR,
    MF,
    DomainDiscriminator,
    JointLoss,
    Mapping,
    RowBatches,
    coral,
    cross_domain_view,
    dann_loss,
    fit_and_evaluate,
    fit_finetune,
    fit_mapping,
    gaussian_kl,
    grad_reverse,
    mmd_rbf,
    parse_method,
    sliced_wasserstein,
)
from metarec.methods.crossdomain.settings import CrossDomainConfig, config_from_scenario

# fit_and_evaluate (deprecated, a wrapper over the method interface) stays tested for one release
pytestmark = pytest.mark.filterwarnings("ignore:fit_and_evaluate is deprecated:DeprecationWarning")

ROOT = Path(__file__).resolve().parent.parent
FAST = {"epochs": 8, "mf_epochs": 8, "batch_size": 512, "mapping_epochs": 80, "val_tasks": 64}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is faster than two (and fairer on a shared machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def two_domain():
    """Explicit two-domain data (target taste = a linear map of source taste) and a cold split."""
    table = make_two_domain(n_users=300, transfer="linear", feedback="explicit", seed=0)
    splits = cold_domain_users_split(
        table, "target", beta=0.3, n_query=10, min_interactions=12, seed=0
    )
    return table, splits


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ regularisers
def test_mmd_near_zero_for_one_distribution_and_grows_with_shift() -> None:
    g = _gen()
    xs, xt = torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g)
    same = float(mmd_rbf(xs, xt))
    shifted = [float(mmd_rbf(xs, xt + s)) for s in (0.25, 0.5, 1.0, 2.0)]
    assert abs(same) < 0.01
    assert shifted[0] > 3 * abs(same)
    assert all(a < b for a, b in zip(shifted, shifted[1:])), shifted
    # fixed bandwidths and the biased estimate (>= 0 always)
    assert float(mmd_rbf(xs, xt, bandwidths=(0.5, 1.0, 2.0), unbiased=False)) >= 0.0
    assert float(mmd_rbf(xs, xt + 1.0, bandwidths=(1.0,))) > 10 * abs(
        float(mmd_rbf(xs, xt, bandwidths=(1.0,)))
    )


def test_coral_zero_for_equal_covariances(f64) -> None:
    g = _gen(1)
    xs = torch.randn(50, 3, generator=g)
    assert float(coral(xs, xs + torch.tensor([3.0, -1.0, 0.5]))) == pytest.approx(
        0.0, abs=1e-12
    )  # means differ, covs equal
    assert float(coral(xs, 2.0 * xs)) > 0.0
    # the formula: ||C_s - C_t||_F^2 / (4 d^2)
    xt = torch.randn(40, 3, generator=g)
    cs, ct = np.cov(xs.numpy(), rowvar=False), np.cov(xt.numpy(), rowvar=False)
    assert float(coral(xs, xt)) == pytest.approx(((cs - ct) ** 2).sum() / 36.0, rel=1e-10)


def test_gaussian_kl_matches_closed_form(f64) -> None:
    g = _gen(2)
    xs = torch.randn(200, 3, generator=g) @ torch.tensor(
        [[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 1.2]]
    )
    xt = torch.randn(150, 3, generator=g) * 1.5 + 0.7
    ridge = 1e-3
    ms, mt = xs.mean(0).numpy(), xt.mean(0).numpy()
    ss = np.cov(xs.numpy(), rowvar=False) + ridge * np.eye(3)
    st = np.cov(xt.numpy(), rowvar=False) + ridge * np.eye(3)
    inv = np.linalg.inv(st)
    ref = 0.5 * (
        np.trace(inv @ ss)
        + (mt - ms) @ inv @ (mt - ms)
        - 3
        + np.log(np.linalg.det(st) / np.linalg.det(ss))
    )
    assert float(gaussian_kl(xs, xt, ridge)) == pytest.approx(ref, rel=1e-10)
    # 1-D: ln(s_t / s_s) + (s_s^2 + (mu_s - mu_t)^2) / (2 s_t^2) - 1/2
    a, b = torch.randn(100, 1, generator=g), torch.randn(80, 1, generator=g) * 2 + 1
    vs, vt = float(a.var()) + ridge, float(b.var()) + ridge
    ref1 = (
        0.5 * math.log(vt / vs) + (vs + (float(a.mean()) - float(b.mean())) ** 2) / (2 * vt) - 0.5
    )
    assert float(gaussian_kl(a, b, ridge)) == pytest.approx(ref1, rel=1e-10)
    assert float(gaussian_kl(xs, xs)) == pytest.approx(0.0, abs=1e-12)


def test_sliced_wasserstein_zero_for_identical_and_grows_with_shift() -> None:
    g = _gen(3)
    xs = torch.randn(128, 4, generator=g)
    assert float(sliced_wasserstein(xs, xs, generator=_gen())) == 0.0
    near = float(sliced_wasserstein(xs, xs + 0.5, generator=_gen()))
    far = float(sliced_wasserstein(xs, xs + 2.0, generator=_gen()))
    assert 0.0 < near < far
    assert (
        float(sliced_wasserstein(xs, torch.randn(64, 4, generator=g), generator=_gen())) >= 0.0
    )  # unequal sizes


def test_gradient_reversal_flips_the_sign() -> None:
    x = torch.randn(5, 3, generator=_gen(4), requires_grad=True)
    w = torch.randn(3)
    (g_plain,) = torch.autograd.grad((x * w).sum(), x)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (g_rev,) = torch.autograd.grad((y * w).sum(), x)
    torch.testing.assert_close(g_rev, -0.5 * g_plain)


def test_dann_loss_trains_the_discriminator_and_confuses_the_encoder() -> None:
    torch.manual_seed(0)
    disc = DomainDiscriminator(2, hidden=8)
    zs = torch.randn(64, 2, requires_grad=True)
    zt = (torch.randn(64, 2) + 2.0).requires_grad_(True)
    loss = dann_loss(disc, zs, zt, lambda_=1.0)
    loss.backward()
    # the encoder side receives the reversed gradient of the domain loss
    zs2 = zs.detach().requires_grad_(True)
    plain = 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(
        disc.net(zs2).squeeze(-1), torch.zeros(64)
    )
    (g,) = torch.autograd.grad(plain, zs2)
    torch.testing.assert_close(zs.grad, -g)
    assert all(p.grad is not None for p in disc.parameters())


def test_joint_loss_fixed_and_uncertainty_weights() -> None:
    ls, lt = torch.tensor(2.0), torch.tensor(3.0)
    assert float(JointLoss(weights=(0.5, 1.0))(ls, lt)) == pytest.approx(4.0)
    j = JointLoss(uncertainty=True)
    assert float(j(ls, lt).detach()) == pytest.approx(5.0)  # s = 0: plain sum
    opt = torch.optim.SGD(j.parameters(), lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        j(torch.tensor(0.5), torch.tensor(4.0)).backward()
        opt.step()
    w = j.weights
    assert w[0] > 1.5 and w[1] < 0.35  # optimum exp(-s_i) = 1 / L_i
    with pytest.raises(ConfigError, match="uncertainty=True"):
        JointLoss(weights=(1.0, 1.0), uncertainty=True)
    with pytest.raises(ConfigError, match="got 1 losses"):
        JointLoss()(ls)


# ------------------------------------------------------------------------------ bridges
def test_emcdr_linear_mapping_recovers_a_known_map() -> None:
    g = _gen(5)
    x = torch.randn(400, 5, generator=g)
    a = torch.randn(5, 3, generator=g)
    c = torch.tensor([0.5, -1.0, 0.2])
    f, log = fit_mapping(x, x @ a + c, kind="linear", epochs=300, lr=0.05, seed=0)
    torch.testing.assert_close(f.net.weight.T.detach(), a, atol=0.02, rtol=0)
    torch.testing.assert_close(f.net.bias.detach(), c, atol=0.02, rtol=0)
    assert log["history"][-1]["loss"] < 1e-3


def test_emcdr_recovers_a_known_map_between_two_mf_models() -> None:
    g = _gen(6)
    source, target = MF(300, 5, 3, seed=0), MF(300, 5, 3, seed=1)
    a = torch.randn(4, 4, generator=g) / 2
    with torch.no_grad():
        source.user.copy_(torch.randn(300, 3, generator=g))
        source.user_bias.copy_(torch.randn(300, generator=g))
        mapped = (
            source.user_vectors(torch.arange(300)) @ a
        )  # target vectors [p_u, b_u] = [p_u, b_u]^s A
        target.user.copy_(mapped[:, :3])
        target.user_bias.copy_(mapped[:, 3])
    model = EMCDR(source, target, Mapping(4, 4, "linear"))
    model.fit_mapping(np.arange(1, 250), kind="linear", epochs=300, lr=0.05, seed=0)
    torch.testing.assert_close(model.mapping.net.weight.T.detach(), a, atol=0.02, rtol=0)
    cold = torch.arange(250, 300)  # users the mapping never saw
    with torch.no_grad():
        torch.testing.assert_close(
            model.user_vectors(cold), target.user_vectors(cold), atol=0.05, rtol=0
        )


def test_bridges_beat_no_transfer_on_cold_users(two_domain) -> None:
    table, splits = two_domain
    mae = {
        m: fit_and_evaluate(m, table, splits, shots=3, seed=0, config=FAST)["states"]["meta-test"][
            "mae"
        ]
        for m in ("no-transfer", "emcdr", "ptupcdr")
    }
    assert mae["ptupcdr"] < mae["no-transfer"] - 0.05, mae
    assert mae["emcdr"] < mae["no-transfer"], mae


def test_adapt_result_shape_and_no_cold_rows_in_training(two_domain) -> None:
    table, splits = two_domain
    view = cross_domain_view(table, splits)
    cold_target = np.isin(table.users, view.cold_users) & (table.domains == view.target)
    assert not np.isin(np.nonzero(cold_target)[0], view.train_rows).any()
    res = fit_and_evaluate(
        "no-transfer+adapt", table, splits, shots=3, seed=0, config={**FAST, "epochs": 3}
    )
    test = res["states"]["meta-test"]
    assert res["adapt"] is not None and res["adapt"]["lr"] in CrossDomainConfig().adapt_lrs
    assert test["per_task"]["mae"].shape == (test["n_tasks"],) == test["units"].shape
    assert res["target_domain"] == "target" and set(res["seconds"]) == {
        "fit",
        "select",
        "test",
        "total",
    }


def test_training_negatives_are_training_items_only() -> None:
    """Implicit feedback: sampled negatives come from the items of the training rows, never from
    items that only the cold users' held-out rows contain."""
    table = make_two_domain(
        n_users=200, n_target_items=1500, n_target=10, feedback="implicit", seed=0
    )  # long tail
    splits = cold_domain_users_split(
        table, "target", beta=0.5, n_query=5, min_interactions=8, seed=0
    )
    view = cross_domain_view(table, splits)
    train_items = set(table.items[view.train_rows].tolist())
    assert set(table.items.tolist()) - train_items  # some items are held-out only
    batches = RowBatches(view, view.train_rows, batch_size=512, negatives=4, seed=0)
    negs = set()
    for _, items, y, _ in batches.epoch():
        negs |= set(items[y == 0].tolist())
    assert negs and negs <= train_items


def test_finetune_freeze_keeps_the_user_embeddings(two_domain) -> None:
    table, splits = two_domain
    view = cross_domain_view(table, splits)
    cfg = CrossDomainConfig(epochs=2, mf_epochs=2, batch_size=1024)
    scorer, log = fit_finetune(view, cfg, 0, freeze="embeddings")
    assert log["freeze"] == "embeddings" and not scorer.model.user.requires_grad
    assert scorer.model.tower[0].weight.requires_grad
    scorer, _ = fit_finetune(view, cfg, 0, freeze="all-but-head")
    assert not scorer.model.tower[0].weight.requires_grad and scorer.model.head_w.requires_grad


def test_da_and_dann_methods_run_and_learn_weights(two_domain) -> None:
    table, splits = two_domain
    cfg = {**FAST, "epochs": 1, "mf_epochs": 1, "uncertainty": True, "val_tasks": 16}
    for m in ("da-mmd", "da-coral", "da-kl", "da-swd", "dann"):
        res = fit_and_evaluate(m, table, splits, shots=3, seed=0, config=cfg)
        assert math.isfinite(res["states"]["meta-test"]["mae"]), m
        assert res["log"]["joint_weights"] != [1.0, 1.0], m


def test_joint_weights_chosen_on_meta_val(two_domain) -> None:
    table, splits = two_domain
    grid = ((1.0, 1.0), (0.1, 1.0))
    res = fit_and_evaluate(
        "joint",
        table,
        splits,
        shots=3,
        seed=0,
        config={**FAST, "epochs": 2, "val_tasks": 16, "joint_weight_grid": grid},
    )
    tried = res["log"]["weight_grid"]
    assert set(tried) == {str(w) for w in grid}
    assert res["log"]["best_val"] == max(tried.values())
    with pytest.raises(ConfigError, match="joint_weight_grid"):
        CrossDomainConfig(joint_weight_grid=((1.0, 1.0),), uncertainty=True)


# ------------------------------------------------------------------------------ errors
def test_bad_inputs_give_clear_errors(two_domain) -> None:
    table, splits = two_domain
    with pytest.raises(ConfigError, match=r"unknown cross-domain method.*did you mean 'emcdr'"):
        parse_method("emcdrr")
    with pytest.raises(ConfigError, match=r"'\+adapt'"):
        parse_method("emcdr+tune")
    with pytest.raises(ConfigError, match="shots=0"):
        fit_and_evaluate("emcdr", table, splits, shots=0)
    with pytest.raises(ConfigError, match=r"unknown key.*epoch"):
        fit_and_evaluate("emcdr", table, splits, shots=3, config={"epoch": 3})
    with pytest.raises(ConfigError, match="da_weight"):
        CrossDomainConfig(da_weight=-1.0)
    with pytest.raises(ConfigError, match="freeze='head'"):
        fit_finetune(cross_domain_view(table, splits), CrossDomainConfig(), 0, freeze="head")
    with pytest.raises(ConfigError, match="cold_domain_users"):
        fit_and_evaluate("emcdr", table, random_split(table, unit="user", seed=0), shots=3)
    with pytest.raises(ConfigError, match="same representation space"):
        mmd_rbf(torch.randn(4, 2), torch.randn(4, 3))
    with pytest.raises(ConfigError, match="at least 2 samples"):
        coral(torch.randn(1, 2), torch.randn(4, 2))
    with pytest.raises(ConfigError, match="2-D"):
        gaussian_kl(torch.randn(4), torch.randn(4))
    with pytest.raises(ConfigError, match="bandwidths"):
        mmd_rbf(torch.randn(4, 2), torch.randn(4, 2), bandwidths=(0.0,))


def test_bench_accepts_crossdomain_names_with_suggestions() -> None:
    from metarec.bench.variants import check_algorithms

    assert check_algorithms(["emcdr", "ptupcdr+adapt", "maml"]) == (
        "emcdr",
        "ptupcdr+adapt",
        "maml",
    )
    with pytest.raises(ConfigError, match=r"did you mean 'ptupcdr'"):
        check_algorithms(["ptupcdrr"])


def test_bench_rows_beside_the_meta_learners(tmp_path) -> None:
    from metarec.bench import run_bench
    from metarec.config import scenario_from_dict

    t = make_two_domain(
        n_users=120, n_source_items=60, n_target_items=50, n_source=12, n_target=10, seed=1
    )
    frame = pd.DataFrame(
        {
            "user": t.user_ids.decode(t.users),
            "item": t.item_ids.decode(t.items),
            "rating": t.ratings,
            "domain": t.domain_ids.decode(t.domains),
        }
    )
    frame.to_csv(tmp_path / "two.csv", index=False)
    sc = scenario_from_dict(
        {
            "name": "two-domain-csv",
            "data": {
                "source": "csv",
                "path": str(tmp_path / "two.csv"),
                "columns": {"domain": "domain"},
            },
            "protocol": {
                "split": "cold_domain_users",
                "target_domain": "target",
                "beta": 0.4,
                "n_support": 3,
                "n_query": 5,
                "min_interactions": 8,
            },
            "model": {"name": "gmf", "embedding_dim": 8},
            "train": {"steps": 4, "val_every": 2, "val_tasks": 16},
        }
    )
    algos = ["no-transfer+adapt", "emcdr", "emcdr+adapt", "global"]
    res = run_bench(
        sc,
        algorithms=algos,
        seeds=2,
        shots=[2],
        quick=True,
        out=tmp_path / "b",
        plots=False,
        verbose=False,
    )
    rows = [json.loads(x) for x in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert {r["algorithm"] for r in rows} == set(algos)
    by = {(r["algorithm"], r["seed"], r["shots"]): r for r in rows}
    for seed in (0, 1):
        # same tasks for every algorithm; emcdr+adapt reuses emcdr's fit
        assert by[("emcdr", seed, 2)]["n_tasks"] == by[("global", seed, 2)]["n_tasks"]
        assert by[("emcdr+adapt", seed, 2)]["fit_shared_with"] == f"emcdr-s{seed}"
        assert (
            by[("emcdr", seed, 2)]["eval_steps"] == 0
            and by[("emcdr+adapt", seed, 2)]["eval_steps"] > 0
        )
    configs = json.loads((tmp_path / "b" / "configs.json").read_text())
    assert configs[by[("emcdr", 0, 2)]["config_hash"]]["benchmark_algorithm"] == "emcdr"
    assert "emcdr" in res.report.read_text()
    assert "vs EMCDR / PTUPCDR" in (tmp_path / "b" / "transfer-summary.md").read_text()


@pytest.mark.slow
def test_amazon_pair_bridges_run_on_the_beta_protocol(shared_data) -> None:
    from metarec.config import load_scenario
    from metarec.data.load import load_table
    from metarec.episodes.build import build_splits

    sc = load_scenario(str(ROOT / "tasks" / "amazon-sport-cloth.toml"), data_root=str(shared_data))
    table = load_table(sc.data)
    splits = build_splits(table, sc.protocol)
    cfg = config_from_scenario(
        sc, {"mf_epochs": 2, "epochs": 2, "mapping_epochs": 5, "val_tasks": 64}
    )
    for method in ("no-transfer", "emcdr", "ptupcdr+adapt"):
        res = fit_and_evaluate(method, table, splits, shots=3, seed=0, config=cfg)
        test = res["states"]["meta-test"]
        assert res["target_domain"] == "cloth" and test["n_tasks"] > 100
        assert 0.0 <= test["auc"] <= 1.0, (method, test["auc"])


@pytest.mark.filterwarnings("default::DeprecationWarning")
def test_fit_and_evaluate_is_a_deprecated_wrapper_over_the_interface(two_domain) -> None:
    from metarec.episodes.sampler import SamplerConfig
    from metarec.methods import FitData
    from metarec.methods.crossdomain import CrossDomainMethod, as_config
    from metarec.metrics.evaluate import evaluate_fitted

    table, splits = two_domain
    cfg = as_config({**FAST, "epochs": 2, "mf_epochs": 2})
    with pytest.warns(DeprecationWarning, match="fit_and_evaluate is deprecated"):
        res = fit_and_evaluate("emcdr+adapt", table, splits, shots=3, seed=0, config=cfg)
    scfg = SamplerConfig(n_support=3, n_query=cfg.n_query, negatives=cfg.negatives)
    fitted = CrossDomainMethod("emcdr+adapt", cfg, sampler=scfg).fit(FitData(table, splits))
    a = fitted.adaptation(scfg)
    mine = evaluate_fitted(fitted, table, splits.pools["meta-test"], scfg, steps=a.steps, lr=a.lr)
    assert res["adapt"] == {"steps": a.steps, "lr": a.lr, "l2": cfg.adapt_l2}
    assert res["states"]["meta-test"]["mae"] == mine["mae"]
