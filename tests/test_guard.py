"""Serving never answers NaN or an empty list with status 0, and a run folder cannot ask for
unbounded work: non-finite weights, diverged adaptation, overflowing scores and hostile step
counts are clear errors (or, by explicit option, the meta-learned initialisation with a warning)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _helpers import TINY_RUN, tiny_run

from metarec._errors import CheckpointError, ConfigError, DataError
from metarec.cli.main import main
from metarec.config.limits import MAX_STEPS, check_steps
from metarec.recommend.load import load_adapted, load_run, open_recommender
from metarec.runs.checkpoint import load_tensors, save_tensors
from metarec.runs.guard import check_recommendations, check_scores

OVERRIDES = TINY_RUN


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("guard"), OVERRIDES)


@pytest.fixture
def run(run_dir, tmp_path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _support_csv(run: Path, tmp_path: Path, user: str = "cold") -> tuple[Path, list]:
    items = load_run(run).item_ids.values[:3]
    p = tmp_path / "support.csv"
    p.write_text(
        "user,item,rating\n"
        + "".join(f"{user},{i},{r}\n" for i, r in zip(items, (5, 1, 4), strict=True))
    )
    return p, items


def _poison(run: Path, value: float, name: str | None = None) -> str:
    """Set one parameter of best.pt to ``value`` everywhere (re-saved, so its checksum is valid)."""
    ck = load_tensors(run / "checkpoints" / "best.pt")
    name = name or next(k for k in ck["params"] if k.startswith("decision"))
    ck["params"][name] = torch.full_like(ck["params"][name], value)
    save_tensors(run / "checkpoints" / "best.pt", ck)
    return name


def test_nan_in_a_checkpoint_is_refused_not_an_empty_list(run, capsys) -> None:
    name = _poison(run, float("nan"))
    with pytest.raises(
        CheckpointError,
        match=rf"best.pt': {name!r} holds [\d,]+ non-finite value\(s\) \(NaN or infinity\).*re-train",
    ):
        load_run(run)
    assert main(["recommend", "--run", str(run), "--user", "u1", "--json"]) == 2
    out = capsys.readouterr()
    assert '"items": []' not in out.out and "non-finite" in out.err


def test_diverged_adaptation_is_an_error_or_by_option_the_initialisation(
    run, tmp_path, capsys
) -> None:
    meta = load_run(run)
    _, items = _support_csv(run, tmp_path)
    support = [("cold", i, 5.0) for i in items]
    with pytest.raises(
        ConfigError,
        match=r"adaptation diverged for 1 of 1 task\(s\) \(user 'cold'\): the adapted weights are not "
        r"finite \(inner lr=1e\+30.*--on-diverge fallback",
    ):
        meta.adapt(support, lr=1e30)
    with pytest.warns(
        UserWarning,
        match=r"adaptation diverged for 1 of 1 task\(s\) \(user 'cold'.*meta-learned initialisation",
    ):
        rec = meta.adapt(support, lr=1e30, on_diverge="fallback")
    assert all(bool(torch.isfinite(v).all()) for v in rec.adapted.fast.values())
    assert rec.recommend("cold", k=5, exclude_seen=False) == meta.initial().recommend(
        "cold", k=5, exclude_seen=False
    )
    # many users at once: only the diverged one falls back
    many = [("a", items[0], 5.0), ("b", items[1], 1.0)]
    with pytest.warns(UserWarning, match=r"diverged for 2 of 2 task\(s\) \(user 'a', user 'b'"):
        meta.adapt_many(many, lr=1e30, on_diverge="fallback")
    good = meta.adapt_many(many)
    assert all(bool(torch.isfinite(v).all()) for v in good.adapted.fast.values())


def test_cli_recommend_with_diverging_lr_fails_or_falls_back_by_option(
    run, tmp_path, capsys
) -> None:
    csv, _ = _support_csv(run, tmp_path)
    args = [
        "recommend",
        "--run",
        str(run),
        "--user",
        "cold",
        "--support",
        str(csv),
        "--lr",
        "1e30",
        "--json",
        "--k",
        "5",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "adaptation diverged" in err and "--on-diverge fallback" in err
    with pytest.warns(UserWarning, match="adaptation diverged"):
        assert main([*args, "--on-diverge", "fallback"]) == 0
    served = json.loads(capsys.readouterr().out)["items"]
    assert len(served) == 5 and all(isinstance(x["score"], float) for x in served)
    # a run whose own config asks for eval_lr = 1e30: the same clear error without --lr
    cfg = json.loads((run / "config.json").read_text())
    cfg["algorithm"]["eval_lr"] = 1e30
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(args[:7] + ["--json"]) == 2
    assert "adaptation diverged" in capsys.readouterr().err


def test_adapt_cli_refuses_diverged_weights_and_writes_nothing(run, tmp_path, capsys) -> None:
    csv, _ = _support_csv(run, tmp_path)
    out = tmp_path / "adapted"
    assert (
        main(["adapt", "--run", str(run), "--support", str(csv), "--out", str(out), "--lr", "1e30"])
        == 2
    )
    assert "adaptation diverged" in capsys.readouterr().err and not out.exists()
    assert main(["adapt", "--run", str(run), "--support", str(csv), "--out", str(out)]) == 0
    assert main(["adapt", "--run", str(run), "--support", str(csv), "--out", str(out)]) == 2
    assert "pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert (
        main(["adapt", "--run", str(run), "--support", str(csv), "--out", str(out), "--overwrite"])
        == 0
    )
    blob = load_tensors(out / "adapted.pt")
    blob["fast"] = {k: torch.full_like(v, float("inf")) for k, v in blob["fast"].items()}
    save_tensors(out / "adapted.pt", blob)
    with pytest.raises(CheckpointError, match=r"adapted.pt': .* holds [\d,]+ non-finite value"):
        load_adapted(out)


def test_finite_weights_that_overflow_are_an_error_not_clipped_scores(run) -> None:
    _poison(run, 1e30, name="decision.0.weight")
    _poison(run, 1e30, name="head.weight")  # each finite; their product is not (float32)
    rec = open_recommender(run)
    items = rec.meta.item_ids.values
    with pytest.raises(
        CheckpointError,
        match=r"score\(s\) for user 'u1' are not finite.*the run's weights overflow",
    ):
        rec.recommend("u1", k=3)
    with pytest.raises(CheckpointError, match=r"score\(s\) are not finite"):
        rec.predict("u1", items)  # explicit feedback: never silently clipped to the top rating


def test_hostile_step_counts_and_sizes_in_a_run_folder_are_refused(run, tmp_path) -> None:
    cfg = json.loads((run / "config.json").read_text())
    cfg["algorithm"]["eval_steps"] = 10**9
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError,
        match=r"config.json': algorithm.eval_steps=1000000000: must be an int in 0..10,000",
    ):
        load_run(run)
    cfg["algorithm"]["eval_steps"] = 3
    (run / "config.json").write_text(json.dumps(cfg))
    man = json.loads((run / "manifest.json").read_text())
    for key, value, msg in (
        ("inner_steps", 10**6, r"algorithm.inner_steps=1000000: must be an int"),
    ):
        bad = {**man, "algorithm": {**man["algorithm"], key: value}}
        (run / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=msg):
            load_run(run)
    for kw, msg in (
        (
            {"embedding_dim": 10**7},
            r"model.kwargs.embedding_dim=10000000: must be an int in 1..8,192",
        ),
        (
            {"hidden": [32, 10**8]},
            r"model.kwargs.hidden=\[32, 100000000\]: must be at most 64 widths",
        ),
    ):
        bad = {**man, "model": {**man["model"], "kwargs": {**man["model"]["kwargs"], **kw}}}
        (run / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=msg):
            load_run(run)
    (run / "manifest.json").write_text(json.dumps(man))
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config.json': holds a JSON list, not an object"):
        load_run(run)


def test_step_options_are_bounded(run, tmp_path, capsys) -> None:
    meta = load_run(run)
    item = meta.item_ids.values[0]
    with pytest.raises(ConfigError, match=rf"steps=100000: must be an int in 0..{MAX_STEPS:,}"):
        meta.adapt([("c", item, 4.0)], steps=100_000)
    csv, _ = _support_csv(run, tmp_path)
    assert (
        main(
            [
                "recommend",
                "--run",
                str(run),
                "--user",
                "cold",
                "--support",
                str(csv),
                "--steps",
                "100000",
            ]
        )
        == 2
    )
    assert "steps=100000: must be an int in 0..10,000" in capsys.readouterr().err
    assert check_steps(MAX_STEPS) == MAX_STEPS
    with pytest.raises(ConfigError, match="steps=True"):
        check_steps(True)


def test_unknown_items_fallback_is_reachable_from_the_cli(run, tmp_path, capsys) -> None:
    p = tmp_path / "s.csv"
    p.write_text("user,item,rating\ncold,no-such-item,5\n")
    args = ["recommend", "--run", str(run), "--user", "cold", "--support", str(p), "--json"]
    assert main(args) == 2
    assert "unknown_items='fallback'" in capsys.readouterr().err
    assert main([*args, "--unknown-items", "fallback"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 10


def test_empty_recommendation_and_score_checks() -> None:
    with pytest.raises(
        DataError,
        match=r"user 'u9': no item left to recommend: every item of the catalogue is in this "
        r"user's support set",
    ):
        check_recommendations([], "u9")
    check_recommendations([("i", 1.0)], "u9")
    check_scores(torch.tensor([1.0, -2.0]))
    with pytest.raises(
        ConfigError, match=r"1 of 2 score\(s\) for user 'u' are not finite.*smaller lr"
    ):
        check_scores(torch.tensor([1.0, float("nan")]), user="u", adapted=True)
