"""Runs that cannot be mixed up: checkpoints bound to the run that wrote them, no write through a
symbolic link, ``--overwrite`` only over a run of its own kind, a missing extra refused before
anything is written (issue 22, problems 5, 6 and the extras of 7)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from _helpers import COLD_START, TINY_RUN

from metarec._errors import CheckpointError, ConfigError, MissingExtra
from metarec.cli.main import main
from metarec.config import load_scenario
from metarec.recommend.load import load_run
from metarec.runs.folder import RUN_FILE, folder_kind
from metarec.train.loop import train


def _train(out: Path, *extra: str) -> Path:
    train(load_scenario(COLD_START, [*TINY_RUN, *extra]), out, evaluate_test=False)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("integrity")
    return {
        "maml": _train(root / "maml"),
        "maml2": _train(root / "maml2"),  # same scenario, same data: only the run id differs
        "anil": _train(root / "anil", "algorithm.name=anil"),
        "other-data": _train(root / "other", "data.synthetic.seed=7"),
    }


@pytest.fixture
def run(runs, tmp_path) -> Path:
    return Path(shutil.copytree(runs["maml"], tmp_path / "run"))


def _swap(run: Path, other: Path, which: str = "best") -> None:
    for suffix in ("", ".sha256"):
        name = f"checkpoints/{which}.pt{suffix}"
        shutil.copy(other / name, run / name)


def test_every_checkpoint_carries_the_runs_identity(runs) -> None:
    from metarec.runs.checkpoint import load_tensors

    run = runs["maml"]
    man = json.loads((run / "manifest.json").read_text())
    rec = json.loads((run / RUN_FILE).read_text())
    assert man["run"]["run_id"] == rec["run_id"] and rec["kind"] == "train"
    assert man["run"]["method"] == "maml" and man["run"]["config_hash"] == man["config_hash"]
    for which in ("best", "last"):
        assert load_tensors(run / "checkpoints" / f"{which}.pt")["run"] == man["run"]
    assert json.loads((runs["maml2"] / RUN_FILE).read_text())["run_id"] != rec["run_id"]


@pytest.mark.parametrize(
    ("other", "says"),
    [("anil", "another method"), ("other-data", "other data"), ("maml2", "run id")],
)
def test_best_pt_copied_from_another_run_is_refused(runs, run, other, says) -> None:
    _swap(run, runs[other])
    with pytest.raises(CheckpointError, match=rf"best\.pt'.*belongs to .*{says}.*not to this run"):
        load_run(run)


def test_manifest_and_best_pt_copied_together_from_other_data_is_refused(runs, run) -> None:
    _swap(run, runs["other-data"])
    shutil.copy(runs["other-data"] / "manifest.json", run / "manifest.json")
    with pytest.raises(
        CheckpointError, match=r"fingerprint.json'.*other data than the run's manifest"
    ):
        load_run(run)


def test_resume_with_another_runs_last_pt_is_refused(runs, run) -> None:
    _swap(run, runs["maml2"], "last")
    before = (run / "metrics.jsonl").read_text()
    sc = load_scenario(COLD_START, [*TINY_RUN, "train.steps=4"])
    with pytest.raises(CheckpointError, match=r"last\.pt'.*belongs to run id .* not to this run"):
        train(sc, run, resume=True, evaluate_test=False)
    assert (run / "metrics.jsonl").read_text() == before


def test_train_overwrite_never_writes_through_a_linked_checkpoints_folder(run, tmp_path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.pt").write_text("not metarec's")
    (target / "best.pt").write_text("the user's own best.pt")
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(target)
    sc = load_scenario(COLD_START, TINY_RUN)
    with pytest.raises(
        ConfigError, match=r"'checkpoints' is a symbolic link .*never writes through a link"
    ):
        train(sc, run, overwrite=True, evaluate_test=False)
    assert sorted(p.name for p in target.iterdir()) == ["best.pt", "keep.pt"]
    assert (target / "best.pt").read_text() == "the user's own best.pt"


@pytest.mark.parametrize("overwrite", [False, True])
def test_train_into_a_foreign_folder_is_refused_and_its_files_kept(tmp_path, overwrite) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(ConfigError, match=r"holds 'config.json', but no metarec run wrote them"):
        train(load_scenario(COLD_START, TINY_RUN), out, overwrite=overwrite, evaluate_test=False)
    assert (out / "config.json").read_text() == '{"my": "settings"}'
    assert folder_kind(out) == "foreign"


def test_adapt_overwrite_refuses_a_folder_that_is_not_an_adapted_run(
    runs, run, tmp_path, capsys
) -> None:
    meta = load_run(runs["maml"])
    item = meta.item_ids.values[0]
    support = tmp_path / "s.csv"
    support.write_text(f"user,item,rating\ncold,{item},4\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("precious")
    args = ["adapt", "--run", str(runs["maml"]), "--support", str(support), "--overwrite"]
    assert main([*args, "--out", str(mine)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no metarec run wrote them" in err[0]
    assert (mine / "config.json").read_text() == "precious"
    # a trained run is not an adapted directory either: --overwrite must not replace it
    assert main([*args, "--out", str(run)]) == 2
    assert (
        "holds a training run (metarec train), not an adapted directory" in capsys.readouterr().err
    )
    load_run(run)  # intact
    # an adapted directory is replaced
    assert main([*args, "--out", str(tmp_path / "ad")]) == 0
    first = json.loads((tmp_path / "ad" / RUN_FILE).read_text())["run_id"]
    assert main([*args, "--out", str(tmp_path / "ad")]) == 0
    assert json.loads((tmp_path / "ad" / RUN_FILE).read_text())["run_id"] != first


def test_adapted_weights_of_another_adapted_directory_are_refused(runs, tmp_path) -> None:
    from metarec.recommend.load import load_adapted

    meta = load_run(runs["maml"])
    item = meta.item_ids.values[0]
    a = meta.adapt([("cold", item, 4.0)]).save(tmp_path / "a")
    b = meta.adapt([("cold", item, 1.0)]).save(tmp_path / "b")
    for suffix in ("", ".sha256"):
        shutil.copy(b / f"adapted.pt{suffix}", a / f"adapted.pt{suffix}")
    with pytest.raises(CheckpointError, match=r"adapted weights '.*adapted\.pt'.*belongs to"):
        load_adapted(a)


def test_a_missing_logger_extra_is_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    out = tmp_path / "run"
    with pytest.raises(
        MissingExtra, match=r'needs the "tensorboard" extra.*pip install "metarec\[tensorboard\]"'
    ):
        train(load_scenario(COLD_START, [*TINY_RUN, 'train.loggers=["tensorboard"]']), out)
    assert not out.exists()
    code = main(["train", COLD_START, "--out", str(out), "--set", 'train.loggers=["tensorboard"]'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("metarec: error:") and not out.exists()


def test_a_run_moved_with_its_data_still_resumes(tmp_path) -> None:
    """Data paths are absolute in the loaded scenario; moving a project (scenario, data, run)
    elsewhere must not break --resume (the data's identity is their fingerprint, not their path)."""
    from metarec.data.synthetic import make_synthetic

    a = tmp_path / "a"
    a.mkdir()
    frame = make_synthetic(2, 40, 50, density=0.4, seed=0).to_frame(raw_ids=True)
    frame[["user", "item", "rating"]].to_csv(a / "d.csv", index=False)
    (a / "s.toml").write_text(
        '[data]\nsource = "csv"\npath = "d.csv"\n[protocol]\nn_support = 3\nn_query = 3\n'
        'min_interactions = 6\n[model]\nname = "gmf"\n[train]\nprogress = false\nval_every = 2\n'
        "val_tasks = 8\ncheckpoint_every = 2\n"
    )
    train(load_scenario(a / "s.toml", ["train.steps=2"]), a / "run", evaluate_test=False)
    b = Path(shutil.copytree(a, tmp_path / "b"))
    shutil.rmtree(a)
    res = train(
        load_scenario(b / "s.toml", ["train.steps=4"]), b / "run", resume=True, evaluate_test=False
    )
    assert res.steps == 4
