"""The files of a training run: ``config.json`` and ``manifest.json``, the weight and checkpoint
files written by :func:`metarec.train.loop.train`, the log truncation and the config check on
resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from metarec._errors import CheckpointError
from metarec.algorithms import (
    AlgorithmConfig,
    adapt_patterns,
)
from metarec.config import Scenario, config_hash, to_dict
from metarec.data.table import InteractionTable
from metarec.runs.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    atomic_write_bytes,
    atomic_write_json,
    save_table_meta,
    save_tensors,
)
from metarec.runs.fingerprint import fingerprint
from metarec.runs.folder import read_run_id
from metarec.runs.identity import make_identity
from metarec.train.setup import model_kwargs

__all__: list[str] = []


def _write_run_files(
    out: Path,
    sc: Scenario,
    table: InteractionTable,
    model,
    algo: AlgorithmConfig,
    method: str | None = None,
) -> None:
    atomic_write_json(out / "config.json", to_dict(sc))
    name = method or sc.algorithm.name
    atomic_write_json(
        out / "manifest.json",
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config_hash": config_hash(sc),
            # hook (metarec.runs.identity): every checkpoint of the run carries this record
            "run": make_identity(read_run_id(out), name, config_hash(sc), fingerprint(table)),
            "method": {"name": name, "engine": True},
            "model": {
                "name": sc.model.name,
                "kwargs": model_kwargs(sc),
                "adapt": list(adapt_patterns(algo, model)),
            },
            "algorithm": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in algo.__dict__.items()
            },
            "feedback": table.feedback,
            "parameters": {k: list(v.shape) for k, v in model.named_parameters()},
        },
    )
    save_table_meta(table, out)


def _identity(path: Path) -> dict[str, Any]:
    """``{"run": identity}`` of the run whose checkpoint ``path`` (``RUN/checkpoints/X.pt``) is,
    read from its manifest (empty for a run written before identities)."""
    try:
        man = json.loads((Path(path).parent.parent / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    run = man.get("run") if isinstance(man, dict) else None
    return {"run": run} if isinstance(run, dict) else {}


def _buffers(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.named_buffers()}


def _save_weights(path: Path, model, params, state, step: int) -> None:
    save_tensors(
        path,
        {
            "params": {k: v.detach().cpu() for k, v in params.items()},
            "buffers": _buffers(model),
            "state": {k: v.detach().cpu() for k, v in state.items()},
            "step": step,
            **_identity(path),
        },
    )


def _save_checkpoint(
    path,
    model,
    params,
    state,
    opt,
    sampler,
    step,
    skipped,
    best_score,
    best_step,
    ewg,
    best_val,
    sc,
) -> None:
    save_tensors(
        path,
        {
            "params": {k: v.detach().cpu() for k, v in params.items()},
            "buffers": _buffers(model),
            "state": {k: v.detach().cpu() for k, v in state.items()},
            "optimizer": opt.state_dict(),
            "sampler_rng": json.dumps(sampler.rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "skipped": skipped,
            "best_score": best_score,
            "best_step": best_step,
            "evals_without_gain": ewg,
            "best_val": json.dumps(best_val),
            "config_hash": config_hash(_resume_key(sc)),
            **_identity(path),
        },
    )


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log rows of steps up to ``step`` (a killed run may have logged a few more)."""
    if not path.exists():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= step
    ]
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


def _resume_key(sc: Scenario) -> Scenario:
    """The config that must match to resume (the step budget and progress bar may change, and so
    may where the data lie: a run and its data moved together still resume; that the data are
    the same is checked by their fingerprint, :func:`metarec.runs.fingerprint.check_same_data`)."""
    data = replace(
        sc.data,
        path=None if sc.data.path is None else "<data>",
        files=tuple(replace(f, path="<data>") for f in sc.data.files),
        user_features=tuple(replace(f, path="<data>") for f in sc.data.user_features),
        item_features=tuple(replace(f, path="<data>") for f in sc.data.item_features),
    )
    return replace(sc, data=data, train=replace(sc.train, steps=0, progress=False, loggers=()))


def _check_same_config(ck: dict, sc: Scenario) -> None:
    if ck.get("config_hash") != config_hash(_resume_key(sc)):
        raise CheckpointError(
            "--resume: the scenario differs from the one the checkpoint was trained with (config "
            f"hash {ck.get('config_hash')} vs {config_hash(_resume_key(sc))}); resume with the "
            "same scenario and --set values"
        )
