"""Federated meta-learning: config, partition, aggregation, local-training equivalence, faults,
resume and DP (the ``local`` backend: the same clients and server loop without Flower)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from federated_scenarios import fed_scenario as _scenario

from metarec._errors import CheckpointError, ConfigError, DataError
from metarec.algorithms import meta_loss_and_grads
from metarec.config import scenario_from_dict
from metarec.data.load import load_table
from metarec.data.synthetic import make_synthetic
from metarec.episodes.build import sampler_config
from metarec.episodes.sampler import TaskSampler
from metarec.federated import FederatedConfig, aggregate, run_federated
from metarec.federated.client import FederatedClient, init_params, local_algorithm, round_seed
from metarec.federated.data import check_client_table, client_data, client_names, pooled_splits
from metarec.federated.privacy import clip_update, noise_std, update_norm
from metarec.federated.server import sample_clients
from metarec.runs.checkpoint import load_tensors


# ------------------------------------------------------------------ config and data
def test_federated_section_is_validated_like_the_others():
    sc = _scenario(rounds=4, clients_per_round=2, dp_clip=1.0, dp_noise=0.5)
    assert sc.federated == FederatedConfig(
        rounds=4,
        local_steps=2,
        clients_per_round=2,
        dp_clip=1.0,
        dp_noise=0.5,
        backend="local",
        round_timeout=120.0,
    )
    with pytest.raises(
        ConfigError, match=r"unknown key 'federated.rouns' \(did you mean 'rounds'\?\)"
    ):
        scenario_from_dict({"name": "x", "federated": {"rouns": 3}})
    with pytest.raises(ConfigError, match=r"federated.rounds=0: must be >= 1"):
        scenario_from_dict({"name": "x", "federated": {"rounds": 0}})
    with pytest.raises(
        ConfigError, match=r"dp_noise=0.5: noise is calibrated to the clipping norm; set dp_clip"
    ):
        FederatedConfig(dp_noise=0.5)
    with pytest.raises(ConfigError, match=r"clients=\"cohorts\" needs cohort_by"):
        FederatedConfig(clients="cohorts")
    with pytest.raises(ConfigError, match=r"fault_injection\['d0'\]='explode': expected one of"):
        FederatedConfig(fault_injection={"d0": "explode"})
    with pytest.raises(ConfigError, match=r"federated.algorithm"):
        scenario_from_dict({"name": "x", "federated": {"algorithm": "fedprox"}})


def test_config_module_imports_neither_torch_nor_flwr():
    import subprocess
    import sys

    code = (
        "import sys, metarec.config.federated; print('torch' in sys.modules, 'flwr' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]


def test_each_client_holds_only_its_domain_rows():
    sc = _scenario()
    table = load_table(sc.data)
    names = client_names(table, sc.federated)
    assert names == ["d0", "d1", "d2"]
    seen = []
    for i in range(3):
        c = client_data(table, sc, i)
        d = int(table.domain_ids.encode([names[i]])[0])
        assert set(np.unique(c.table.domains)) == {d}
        assert len(c.table) == int((table.domains == d).sum())
        train, test = c.splits.pools["meta-train"], c.splits.pools["meta-test"]
        assert not set(train.units) & set(test.units)  # cold users are never trained on
        seen.append(c.rows)
    assert sorted(np.concatenate(seen).tolist()) == list(range(len(table)))
    pooled = pooled_splits(table, [client_data(table, sc, i) for i in range(3)])
    assert pooled.states == ["cold:d0", "cold:d1", "cold:d2"]


def test_cohort_clients_split_users_by_a_user_column():
    table = make_synthetic(2, 150, 50, density=0.3, n_user_features=1, seed=0)
    col = sorted(table.user_features.categorical)[0]
    sc = replace(_scenario(), federated=FederatedConfig(clients="cohorts", cohort_by=col))
    names = client_names(table, sc.federated)
    assert len(names) >= 2 and all(n.startswith(f"{col}=") for n in names)
    users = [set(np.unique(client_data(table, sc, i).table.users)) for i in range(len(names))]
    assert all(
        not (a & b) for i, a in enumerate(users) for b in users[i + 1 :]
    )  # a user is in one cohort


def test_invalid_client_data_is_refused_with_the_client_named():
    sc = _scenario()
    table = load_table(sc.data)
    with pytest.raises(
        DataError, match=r"client 'd1': \d+ rating\(s\) are not finite or lie off the rating scale"
    ):
        client_data(table, sc, 1, corrupt=True)
    bad = table.subset(np.arange(10))
    bad.ratings = bad.ratings.copy()
    bad.ratings[3] = 9.0
    with pytest.raises(
        DataError, match=r"client 'x': 1 rating\(s\) .* \(first: row 3, rating 9.0\)"
    ):
        check_client_table(bad, "x")


# ------------------------------------------------------------------ aggregation
def test_aggregation_weights_clients_by_size():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(3.0)}
    b = {"w": torch.tensor([4.0, 8.0]), "b": torch.tensor(-1.0)}
    got = aggregate([a, b], [1, 3])
    assert torch.allclose(got["w"], torch.tensor([(1 + 12) / 4, (2 + 24) / 4]))
    assert torch.allclose(got["b"], torch.tensor((3 - 3) / 4))
    assert got["w"].dtype == torch.float32
    with pytest.raises(ValueError, match="one weight per update"):
        aggregate([a, b], [1.0])


def test_server_round_uses_client_sizes_as_weights(tmp_path: Path):
    res = run_federated(_scenario(rounds=1), tmp_path / "run", dtype=torch.float64)
    row = json.loads((tmp_path / "run" / "rounds.jsonl").read_text().splitlines()[0])
    sizes = {c["name"]: c["num-examples"] for c in res.summary["clients"]}
    assert row["weights"] == [float(sizes[n]) for n in row["ok"]]
    assert len(set(row["weights"])) > 1  # the clients differ in size, so the weights matter


def test_client_sampling_is_seeded_and_covers_the_round():
    assert sample_clients(5, None, 0, 1) == [0, 1, 2, 3, 4]
    picks = [sample_clients(5, 2, 0, r) for r in range(1, 6)]
    assert all(len(p) == 2 for p in picks) and picks == [
        sample_clients(5, 2, 0, r) for r in range(1, 6)
    ]
    assert len({tuple(p) for p in picks}) > 1


# ------------------------------------------------------------------ FedAvg with one client = local training
def test_fedavg_with_one_client_equals_local_training(tmp_path: Path, f64):
    sc = _scenario(n_domains=1, algorithm="fedavg", local_optimizer="sgd", rounds=3, local_steps=2)
    run_federated(sc, tmp_path / "fed", dtype=torch.float64)
    fed_params = load_tensors(tmp_path / "fed" / "final.pt")["params"]
    # the reference: one uninterrupted SGD loop on the same tasks, with the engine directly
    table = load_table(sc.data)
    data = client_data(table, sc, 0)
    client = FederatedClient(data, sc, torch.float64)
    p = {
        k: torch.as_tensor(v).clone().requires_grad_(True)
        for k, v in init_params(sc, data, torch.float64).items()
    }
    opt = torch.optim.SGD(list(p.values()), lr=sc.train.outer_lr)
    algo = local_algorithm(sc, table.feedback)
    assert algo.name == "finetune"
    scfg = replace(sampler_config(sc.protocol), negatives_from="pool")
    for r in range(1, 4):
        sampler = TaskSampler(
            data.table,
            data.splits.pools["meta-train"],
            scfg,
            seed=round_seed(0, 0, r),
            dtype=torch.float64,
        )
        for _ in range(2):
            _, grads = meta_loss_and_grads(
                algo, client.model, p, sampler.sample(sc.algorithm.meta_batch)
            )
            for k, t in p.items():
                t.grad = grads[k]
            torch.nn.utils.clip_grad_norm_(list(p.values()), sc.train.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
    for k, v in p.items():
        assert fed_params[k].dtype == torch.float64
        torch.testing.assert_close(fed_params[k], v.detach(), rtol=1e-10, atol=1e-12)
    start = init_params(sc, data, torch.float64)
    assert any(
        not np.allclose(start[k], p[k].detach().numpy()) for k in p
    )  # training moved the weights


# ------------------------------------------------------------------ faults
def test_a_client_dropping_out_mid_round_does_not_stop_the_round(tmp_path: Path):
    res = run_federated(_scenario(fault_injection={"d1": "drop@2"}), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [r["ok"] for r in rows] == [["d0", "d1", "d2"], ["d0", "d2"], ["d0", "d1", "d2"]]
    (fail,) = rows[1]["failed"]
    assert fail["client"] == "d1" and fail["status"] == "error"
    assert "dropped out after 1 of 2 local steps in round 2" in fail["error"]
    assert len(rows[1]["weights"]) == 2 and "skipped" not in rows[1]
    s = res.summary
    assert s["finished"] and s["failures"] == [{"round": 2, **fail}]
    assert all(
        "mae" in c["cold"] for c in s["clients"]
    )  # every client, the dropped one too, is scored


def test_a_straggler_past_the_timeout_is_left_behind(tmp_path: Path):
    res = run_federated(
        _scenario(rounds=2, round_timeout=4.0, fault_injection={"d0": "straggle@2"}),
        tmp_path / "run",
    )
    rows = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert rows[1]["ok"] == ["d1", "d2"]
    assert rows[1]["failed"] == [
        {"client": "d0", "status": "timeout", "error": "no reply within round_timeout=4.0 s"}
    ]
    assert res.summary["finished"]


def test_a_client_with_invalid_data_fails_clearly_and_the_others_go_on(tmp_path: Path):
    res = run_federated(_scenario(rounds=2, fault_injection={"d2": "invalid"}), tmp_path / "run")
    s = res.summary
    bad = [c for c in s["clients"] if c["name"] == "d2"][0]
    assert bad["status"] == "error" and "rating(s) are not finite" in bad["error"]
    assert [f["round"] for f in s["failures"]] == [1, 2] and all(
        f["client"] == "d2" for f in s["failures"]
    )
    assert all("client 'd2'" in f["error"] for f in s["failures"])
    assert [c["name"] for c in s["clients"] if "mae" in c.get("cold", {})] == ["d0", "d1"]


def test_a_round_with_too_few_clients_keeps_the_model(tmp_path: Path):
    sc = _scenario(rounds=2, min_clients=3, fault_injection={"d1": "drop@2"})
    run_federated(sc, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert "fewer than min_clients=3; the model is kept" in rows[1]["skipped"]
    ck = load_tensors(tmp_path / "run" / "checkpoints" / "last.pt")["params"]
    run_federated(
        replace(sc, federated=replace(sc.federated, rounds=1, fault_injection={})), tmp_path / "one"
    )
    one = load_tensors(tmp_path / "one" / "final.pt")["params"]
    for k in ck:
        torch.testing.assert_close(ck[k], one[k])  # round 2 changed nothing


# ------------------------------------------------------------------ checkpoints and resume
def test_a_killed_run_resumes_from_its_last_round_to_the_same_weights(tmp_path: Path):
    sc = _scenario(rounds=3)
    run_federated(sc, tmp_path / "full")
    part = run_federated(sc, tmp_path / "part", stop_after=2)
    assert part.summary["rounds"] == 2 and not part.summary["finished"]
    assert load_tensors(tmp_path / "part" / "checkpoints" / "last.pt")["round"] == 2
    with pytest.raises(ConfigError, match="already holds a federated run; pass --resume"):
        run_federated(sc, tmp_path / "part")
    with pytest.raises(CheckpointError, match="written by another configuration"):
        run_federated(
            replace(sc, federated=replace(sc.federated, local_steps=3)),
            tmp_path / "part",
            resume=True,
        )
    res = run_federated(sc, tmp_path / "part", resume=True)
    assert res.summary["finished"] and res.summary["rounds"] == 3
    a, b = (
        load_tensors(tmp_path / "full" / "final.pt")["params"],
        load_tensors(tmp_path / "part" / "final.pt")["params"],
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    rounds = [
        json.loads(x)["round"]
        for x in (tmp_path / "part" / "rounds.jsonl").read_text().splitlines()
    ]
    assert rounds == [1, 2, 3]


def test_checkpoints_hold_tensors_only(tmp_path: Path):
    run_federated(_scenario(rounds=1), tmp_path / "run")
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert set(ck) == {"params", "round", "history", "config_key", "run_id"}
    assert all(isinstance(v, torch.Tensor) for v in ck["params"].values())


def _rounds(run: Path) -> list[int]:
    return [json.loads(x)["round"] for x in (run / "rounds.jsonl").read_text().splitlines()]


def test_no_dead_end_before_the_first_round_checkpoint(tmp_path: Path, monkeypatch, capsys):
    """Killed, or stopped by a full disk, before the first round's checkpoint: --resume said
    "start without --resume" and a plain rerun said "pass --resume". Now --resume starts from
    round 0, a plain rerun names --resume and --overwrite, and --overwrite starts afresh."""
    import errno

    import metarec.federated.server as server

    sc = _scenario(rounds=2)
    out = tmp_path / "run"
    real, calls = server.save_tensors, []

    def full_disk(path, obj):
        calls.append(path)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(server, "save_tensors", full_disk)
    with pytest.raises(CheckpointError, match=r"federated run stopped: the disk is full.*--resume"):
        run_federated(sc, out)
    monkeypatch.setattr(server, "save_tensors", real)
    assert calls and not (out / "checkpoints" / "last.pt").exists()
    with pytest.raises(
        ConfigError, match="pass --resume to continue it, --overwrite to start it afresh"
    ):
        run_federated(sc, out)
    res = run_federated(sc, out, resume=True)
    assert "no round checkpoint yet; the run starts from round 0" in capsys.readouterr().err
    assert res.summary["finished"] and _rounds(out) == [1, 2]
    res = run_federated(sc, out, overwrite=True)
    assert res.summary["finished"] and _rounds(out) == [1, 2]
    with pytest.raises(ConfigError, match="--resume and --overwrite: choose one"):
        run_federated(sc, out, resume=True, overwrite=True)


def test_another_federated_runs_checkpoint_is_refused(tmp_path: Path):
    import shutil

    sc = _scenario(rounds=3)
    run_federated(sc, tmp_path / "a", stop_after=1)
    run_federated(sc, tmp_path / "b", stop_after=1)
    for suffix in ("", ".sha256"):
        shutil.copy(
            tmp_path / "b" / f"checkpoints/last.pt{suffix}",
            tmp_path / "a" / f"checkpoints/last.pt{suffix}",
        )
    with pytest.raises(CheckpointError, match=r"last\.pt' belongs to another federated run"):
        run_federated(sc, tmp_path / "a", resume=True)


def test_overwrite_refuses_a_folder_that_is_not_a_federated_run(tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text("mine")
    with pytest.raises(ConfigError, match="no metarec run wrote them"):
        run_federated(_scenario(rounds=1), out, overwrite=True)
    assert (out / "config.json").read_text() == "mine"


def test_a_missing_extra_is_one_line_before_anything_is_written(tmp_path: Path, monkeypatch):
    import sys

    from metarec._errors import MissingExtra

    monkeypatch.setitem(sys.modules, "flwr", None)
    for backend in ("loopback", "simulation"):
        with pytest.raises(
            MissingExtra, match=r'needs the "federated" extra.*metarec\[federated\]'
        ):
            run_federated(_scenario(rounds=1), tmp_path / backend, backend=backend)
        assert not (tmp_path / backend).exists()


def test_relative_data_paths_are_saved_absolute_for_the_clients(tmp_path: Path, monkeypatch):
    """loopback runs its clients in the run folder: a relative path must reach them resolved."""
    t = make_synthetic(3, 30, 40, density=0.4, seed=0)
    frame = t.to_frame(raw_ids=True)
    frame["domain"] = frame["domain"].astype(str)
    (tmp_path / "d.csv").write_text(frame[["user", "item", "rating", "domain"]].to_csv(index=False))
    monkeypatch.chdir(tmp_path)
    base = _scenario(rounds=1)
    sc = replace(
        base,
        data=replace(base.data, source="csv", path="d.csv", columns={"domain": "domain"}),
        model=replace(base.model, name="gmf"),
    )
    run_federated(sc, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]["path"]
    assert saved == str(tmp_path / "d.csv")


# ------------------------------------------------------------------ differential privacy
def test_clip_update_bounds_the_norm_and_keeps_small_updates():
    old = {"a": torch.zeros(3), "b": torch.ones(2)}
    new = {"a": torch.tensor([3.0, 0.0, 0.0]), "b": torch.tensor([1.0, 5.0])}  # update norm 5
    clipped, norm = clip_update(new, old, 1.0)
    assert norm == pytest.approx(5.0) and update_norm(clipped, old) == pytest.approx(1.0)
    torch.testing.assert_close(clipped["a"], torch.tensor([0.6, 0.0, 0.0]))
    same, _ = clip_update(new, old, 10.0)
    torch.testing.assert_close(same["b"], new["b"])
    assert noise_std(0.5, 2.0, 4) == pytest.approx(0.25)


def test_dp_clips_each_client_update_and_reports_the_noise(tmp_path: Path):
    sc = _scenario(rounds=2, dp_clip=0.05, dp_noise=0.8)
    table = load_table(sc.data)
    client = FederatedClient(client_data(table, sc, 0), sc)
    start = init_params(sc, client.data)
    res = client.fit(start, 1)
    assert res.metrics["update-norm"] > 0.05  # it had to clip
    got = update_norm(
        {k: torch.as_tensor(v) for k, v in res.params.items()},
        {k: torch.as_tensor(v) for k, v in start.items()},
    )
    assert got == pytest.approx(0.05, rel=1e-4)
    s = run_federated(sc, tmp_path / "run", table=table).summary
    assert s["dp"]["clipping_norm"] == 0.05 and s["dp"]["noise_multiplier"] == 0.8
    assert s["dp"]["noise_std_per_round"] == [pytest.approx(0.8 * 0.05 / 3)] * 2
    rows = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert rows[0]["weights"] == [1.0, 1.0, 1.0]  # with DP every client weighs the same


# ------------------------------------------------------------------ learning
@pytest.mark.slow
def test_federated_maml_beats_the_unadapted_global_model_over_seeds(tmp_path: Path):
    wins = 0
    for seed in range(3):
        sc = _scenario(rounds=8, local_steps=4, seed=seed)
        sc = replace(sc, train=replace(sc.train, seed=seed))
        maml = run_federated(sc, tmp_path / f"maml{seed}").summary["cold_mean_over_users"]["mae"]
        glob = replace(
            sc,
            federated=replace(sc.federated, algorithm="fedavg"),
            algorithm=replace(sc.algorithm, eval_steps=0),
        )
        base = run_federated(glob, tmp_path / f"glob{seed}").summary["cold_mean_over_users"]["mae"]
        wins += maml < base
    assert wins == 3


def test_cli_runs_a_federated_scenario(tmp_path: Path, capsys):
    from metarec.cli.main import main

    sc = tmp_path / "s.toml"
    sc.write_text(
        'name = "cli-fed"\n[data]\nsource = "synthetic"\n'
        "[data.synthetic]\nn_domains = 2\nn_users = 30\nn_items = 40\ndensity = 0.4\n"
        "[protocol]\nn_support = 5\nn_query = 5\nmin_interactions = 10\n"
        "[model]\nembedding_dim = 8\nhidden = [8]\n"
        "[algorithm]\ninner_steps = 1\nmeta_batch = 4\n[train]\nprogress = false\n"
        "[federated]\nrounds = 2\nlocal_steps = 1\n"
    )
    assert (
        main(
            [
                "federated",
                str(sc),
                "--out",
                str(tmp_path / "run"),
                "--backend",
                "local",
                "--set",
                "federated.algorithm=reptile",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "federated reptile (local): 2 round(s)" in out and "d0" in out and "mae=" in out
    assert (
        json.loads((tmp_path / "run" / "config.json").read_text())["federated"]["algorithm"]
        == "reptile"
    )
