"""Checkpoint checksums: a flipped byte is caught on load, naming the file; an interrupted write never is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _helpers import TINY_RUN, tiny_run

import metarec._io.checksums as checksums
from metarec._errors import CheckpointError
from metarec._io.checksums import recorded, sha256_file, sidecar, verify
from metarec.cli.main import main
from metarec.recommend.load import load_run
from metarec.runs.checkpoint import load_tensors, save_tensors

OVERRIDES = [*TINY_RUN, "model.name=gmf"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("sums"), OVERRIDES)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_tensor_file_of_a_run_has_its_checksum(run_dir) -> None:
    for rel in ("checkpoints/best.pt", "checkpoints/last.pt", "features.pt"):
        assert recorded(run_dir / rel) == [sha256_file(run_dir / rel)], rel


def test_flipped_byte_in_best_pt_is_caught_naming_the_file(run_dir, tmp_path, capsys) -> None:
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    best = run / "checkpoints" / "best.pt"
    ck = load_tensors(best)
    name = next(iter(ck["params"]))
    raw = best.read_bytes()
    # a byte inside the first parameter's stored values: the file still loads, with changed weights
    at = raw.index(ck["params"][name].numpy().tobytes()[-32:])
    _flip(best, at + 3)
    assert not torch.equal(torch.load(best, weights_only=True)["params"][name], ck["params"][name])
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint '.*best.pt': damaged: its SHA-256 [0-9a-f]{12}\.\.\. differs from "
        r"the [0-9a-f]{12}\.\.\. recorded in 'best.pt.sha256'.*restore the file from a copy, "
        r"or re-create the run \('metarec train SCENARIO --out RUN --overwrite'\)",
    ):
        load_run(run)
    assert main(["recommend", "--run", str(run), "--user", "u1"]) == 2
    assert "best.pt': damaged" in capsys.readouterr().err


def test_interrupted_write_leaves_a_file_that_still_verifies(tmp_path, monkeypatch) -> None:
    p = tmp_path / "last.pt"
    save_tensors(p, {"step": 1, "w": torch.zeros(3)})
    real = checksums.atomic_write

    def killed_before_replace(path, data):
        if path == p:
            raise KeyboardInterrupt  # the process dies between the checksum update and the file's replacement
        real(path, data)

    monkeypatch.setattr(checksums, "atomic_write", killed_before_replace)
    with pytest.raises(KeyboardInterrupt):
        save_tensors(p, {"step": 2, "w": torch.ones(3)})
    monkeypatch.setattr(checksums, "atomic_write", real)
    assert len(recorded(p)) == 2  # old and new both accepted for now
    assert load_tensors(p)["step"] == 1
    save_tensors(p, {"step": 3, "w": torch.ones(3)})
    assert recorded(p) == [sha256_file(p)] and load_tensors(p)["step"] == 3


def test_damaged_or_missing_checksum_file(tmp_path) -> None:
    p = tmp_path / "t.pt"
    save_tensors(p, {"a": torch.arange(3)})
    sidecar(p).write_text("{not json")
    with pytest.raises(
        CheckpointError,
        match=r"checksum file '.*t.pt.sha256': damaged.*delete it to load 't.pt' unchecked",
    ):
        load_tensors(p)
    sidecar(p).unlink()
    verify(p)  # no record: not checked (files written before checksums existed)
    assert load_tensors(p)["a"].tolist() == [0, 1, 2]
    save_tensors(p, {"a": torch.arange(4)})  # an unrecorded file gets a record on its next write
    assert json.loads(sidecar(p).read_text())["sha256"] == [sha256_file(p)]
