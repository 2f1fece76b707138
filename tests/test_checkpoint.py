"""Run directories and checkpoints: loading never runs code from a file; damaged or mismatched
runs are refused with an error that names the file, the value, the rule and the fix."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from _helpers import TINY_RUN, tiny_run

from metarec._errors import CheckpointError
from metarec.config import load_scenario
from metarec.recommend.load import load_adapted, load_run
from metarec.runs.checkpoint import (
    FORMAT_VERSION,
    atomic_write_bytes,
    atomic_write_json,
    load_tensors,
    read_manifest,
    save_tensors,
)
from metarec.train.loop import train

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = TINY_RUN


class _Payload:
    """Unpickling this runs ``exec(code)``: what a malicious checkpoint would do."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def _touch_code(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('payload ran')"


def _raw_pickle(marker: Path) -> bytes:
    """A plain pickle (no torch container) whose loading creates ``marker``."""
    return pickle.dumps({"params": _Payload(_touch_code(marker))}, protocol=2)


def _torch_pickle(marker: Path) -> bytes:
    """A ``torch.save`` zip file with the same payload inside its ``data.pkl``."""
    buf = io.BytesIO()
    torch.save({"params": {"x": torch.zeros(2)}, "step": _Payload(_touch_code(marker))}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("ckpt"), OVERRIDES)


@pytest.fixture
def run(run_dir, tmp_path) -> Path:
    """A private copy of the trained run, free to damage."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def test_payloads_are_real(tmp_path) -> None:
    """Control: an unsafe load of these files would run the payload."""
    for k, make in enumerate((_raw_pickle, _torch_pickle)):
        marker = tmp_path / f"control{k}"
        blob = make(marker)
        if make is _raw_pickle:
            pickle.loads(blob)
        else:
            torch.load(io.BytesIO(blob), weights_only=False)
        assert marker.read_text() == "payload ran"


@pytest.mark.parametrize("make", [_raw_pickle, _torch_pickle], ids=["raw-pickle", "torch-zip"])
@pytest.mark.parametrize("target", ["checkpoints/best.pt", "features.pt"])
def test_malicious_pickle_is_refused_and_never_runs(run, tmp_path, make, target) -> None:
    """Without its checksum file the unpickler sees the file and refuses it (weights_only)."""
    marker = tmp_path / "pwned"
    (run / target).write_bytes(make(marker))
    (run / (target + ".sha256")).unlink()
    with pytest.raises(CheckpointError) as err:
        load_run(run)
    msg = str(err.value)
    assert str(run / target) in msg and "refused to load" in msg and "weights_only=True" in msg
    assert "never runs code" in msg and "metarec train" in msg  # the rule and the fix
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("target", ["checkpoints/best.pt", "features.pt"])
def test_checksum_is_checked_before_the_file_is_parsed(run, tmp_path, target, monkeypatch) -> None:
    """With its checksum file, a replaced file is refused as damaged before torch.load sees it."""
    marker = tmp_path / "pwned"
    (run / target).write_bytes(_torch_pickle(marker))
    parsed: list[str] = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: parsed.append(str(f)) or real(f, *a, **k))
    with pytest.raises(CheckpointError, match=r"damaged: its SHA-256 .* differs"):
        load_run(run)
    assert str(run / target) not in parsed and not marker.exists()


@pytest.mark.parametrize(
    "content", [b"root:x:0:0:root:/root:/bin/bash\n", b"\x80\x02}q\x00X", b"PK\x03\x04garbage"]
)
def test_a_non_weights_file_with_its_checksum_is_a_clear_error(run, content) -> None:
    """Text, a truncated pickle or a broken zip whose checksum was recorded (or a link to a
    system file): the parser's own KeyError / IndexError / ... becomes one CheckpointError."""
    from metarec._io.checksums import write_checked

    write_checked(run / "checkpoints" / "best.pt", content)
    with pytest.raises(
        CheckpointError, match=r"best\.pt.*refused to load: it is not a plain tensor file"
    ):
        load_run(run)


def test_a_special_file_as_checkpoint_is_named(run) -> None:
    best = run / "checkpoints" / "best.pt"
    best.unlink()
    best.symlink_to("/dev/zero")
    with pytest.raises(
        CheckpointError, match=r"best\.pt'.*is a character device, not a regular file"
    ):
        load_run(run)


def test_malicious_adapted_weights_are_refused(run, tmp_path) -> None:
    meta = load_run(run)
    item = meta.item_ids.values[0]
    out = meta.adapt([("cold", item, 4.0)]).save(tmp_path / "adapted")
    marker = tmp_path / "pwned"
    (out / "adapted.pt").write_bytes(_torch_pickle(marker))
    with pytest.raises(CheckpointError, match=r"adapted\.pt'?: damaged"):
        load_adapted(out)  # its checksum file still records the real weights
    (out / "adapted.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match=r"adapted\.pt'?: refused to load"):
        load_adapted(out)
    assert not marker.exists()


def test_load_tensors_round_trip_and_errors(tmp_path) -> None:
    p = tmp_path / "t.pt"
    save_tensors(p, {"a": torch.arange(3), "nested": {"b": torch.ones(2, 2)}, "step": 7})
    back = load_tensors(p)
    assert (
        back["step"] == 7
        and torch.equal(back["a"], torch.arange(3))
        and back["nested"]["b"].shape == (2, 2)
    )
    assert sorted(x.name for x in tmp_path.iterdir()) == [
        "t.pt",
        "t.pt.sha256",
    ]  # no temporary file left behind
    with pytest.raises(
        CheckpointError, match=r"checkpoint '.*missing\.pt': file not found; pass a run directory"
    ):
        load_tensors(tmp_path / "missing.pt")
    p.write_bytes(p.read_bytes()[:40])  # truncated
    with pytest.raises(CheckpointError, match=r"t\.pt'?: damaged: its SHA-256"):
        load_tensors(p)  # checked against its checksum file before parsing
    (tmp_path / "t.pt.sha256").unlink()
    with pytest.raises(
        CheckpointError, match=r"t\.pt'?: refused to load: it is not a plain tensor file"
    ):
        load_tensors(p)


def test_atomic_write_replaces_whole_file(tmp_path) -> None:
    p = tmp_path / "sub" / "f.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_bytes(p, b'{"a": 2}\n')
    assert json.loads(p.read_text()) == {"a": 2}
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.json"]


def test_missing_files(run, tmp_path) -> None:
    with pytest.raises(
        CheckpointError,
        match=r"run directory '.*nowhere': no manifest\.json; pass a folder written by 'metarec train'",
    ):
        load_run(tmp_path / "nowhere")
    (run / "checkpoints" / "best.pt").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint '.*best\.pt': file not found"):
        load_run(run)
    assert load_run(run, which="last").step >= 1  # the other checkpoint still loads
    (run / "encoders.json").unlink()
    with pytest.raises(
        CheckpointError, match=r"encoders\.json is missing; the run directory is incomplete"
    ):
        load_run(run, which="last")


def test_unknown_format_version(run) -> None:
    m = json.loads((run / "manifest.json").read_text())
    m["format_version"] = FORMAT_VERSION + 98
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError) as err:
        load_run(run)
    msg = str(err.value)
    assert str(run / "manifest.json") in msg and f"format_version={FORMAT_VERSION + 98}" in msg
    assert f"reads version {FORMAT_VERSION}" in msg and "re-train" in msg
    m["format_version"], m["format"] = FORMAT_VERSION, "someone-else"
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=r"format 'someone-else' is not 'metarec-run'"):
        read_manifest(run)
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(
        CheckpointError, match=r"manifest\.json: the manifest file is not valid JSON"
    ):
        read_manifest(run)


def test_model_config_not_matching_weights(run) -> None:
    m = json.loads((run / "manifest.json").read_text())
    dim = m["model"]["kwargs"]["embedding_dim"]
    m["model"]["kwargs"]["embedding_dim"] = dim * 2
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError) as err:
        load_run(run)
    msg = str(err.value)
    assert str(run / "manifest.json") in msg and f"'embedding_dim': {dim * 2}" in msg
    assert (
        "the checkpoint holds shape" in msg
        and "does not match the weights" in msg
        and "re-train" in msg
    )
    m["model"]["kwargs"]["embedding_dim"] = dim
    m["model"]["kwargs"]["hidden"] = [
        *m["model"]["kwargs"]["hidden"],
        8,
    ]  # one layer more than the weights
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        CheckpointError, match=r"has parameter 'decision\.2\.weight' .* which the checkpoint lacks"
    ):
        load_run(run)
    m["model"]["name"] = "no-such-model"
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=r"model 'no-such-model' .* cannot be built"):
        load_run(run)


def test_checkpoint_without_params(run) -> None:
    ident = json.loads((run / "manifest.json").read_text())["run"]
    save_tensors(run / "checkpoints" / "best.pt", {"weights": torch.zeros(3), "run": ident})
    with pytest.raises(
        CheckpointError, match=r"best\.pt'?: holds no 'params' dict; not a metarec checkpoint"
    ):
        load_run(run)


def test_format_1_run_is_refused_with_the_conversion_and_converts(tmp_path) -> None:
    """A version-1 run (parameters only) gets an error that shows convert_run; after it the id
    model's known-id buffers are exactly the ones training set (no inference from the weights)."""
    from metarec.methods.engine.run_files import convert_run

    sc = load_scenario(
        ROOT / "tasks" / "synthetic-cold-start.toml",
        [
            *OVERRIDES,
            "model.name='gmf'",
            "protocol.unit='domain'",
            "data.synthetic.n_domains=10",
            "protocol.fractions=[0.6,0.2,0.2]",
            "protocol.min_interactions=20",
            "protocol.max_interactions=none",
        ],
    )
    run = train(sc, tmp_path / "run", evaluate_test=False).run_dir
    trained = load_run(run)
    known = trained.model.known_users.clone(), trained.model.known_items.clone()
    assert known[0].any()  # domain tasks: the meta-train users are known
    m = json.loads((run / "manifest.json").read_text())
    m["format_version"] = 1
    atomic_write_json(run / "manifest.json", m)
    for which in ("best", "last"):  # what version 1 wrote: no buffers
        ck = load_tensors(run / "checkpoints" / f"{which}.pt")
        del ck["buffers"]
        save_tensors(run / "checkpoints" / f"{which}.pt", ck)
    with pytest.raises(
        CheckpointError,
        match=r"format_version=1 .* metarec\.convert_run\(.*\)\"` \(needs the run.s data",
    ):
        load_run(run)
    convert_run(run)
    back = load_run(run)
    assert read_manifest(run)["format_version"] == FORMAT_VERSION
    assert torch.equal(back.model.known_users, known[0]) and torch.equal(
        back.model.known_items, known[1]
    )


def test_checkpoints_hold_every_buffer(tmp_path) -> None:
    sc = load_scenario(
        ROOT / "tasks" / "synthetic-cold-start.toml", [*OVERRIDES, "model.name='gmf'"]
    )
    run = train(sc, tmp_path / "run", evaluate_test=False).run_dir
    meta = load_run(run)
    ck = load_tensors(run / "checkpoints" / "best.pt")
    assert (
        set(ck["buffers"])
        == {k for k, _ in meta.model.named_buffers()}
        >= {"known_users", "known_items"}
    )
