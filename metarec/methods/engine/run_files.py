"""Reading a run directory back: manifest, encoders, model, weights, buffers, algorithm state.

:func:`load_run_parts` is the one reader of ``checkpoints/<which>.pt`` (the serving layer, the
benchmark and the method interface all go through it). Since format version 2 a checkpoint
holds the model's whole ``state_dict`` (``"params"`` and ``"buffers"``, so the id models'
``known_users`` / ``known_items`` come back as they were trained), the algorithm ``"state"``
(learned rates) and the ``"step"``. A version-1 run (parameters only) is refused with a
:class:`~metarec._errors.CheckpointError` that names :func:`convert_run`, which rebuilds the
missing buffers exactly as training set them (from the run's own scenario and data).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarec._errors import CheckpointError, ConfigError, suggest
from metarec.algorithms import AlgorithmConfig, adapt_patterns, init_algorithm_state
from metarec.config import load_scenario
from metarec.data.files import read_json_object
from metarec.data.load import load_table
from metarec.data.table import InteractionTable
from metarec.episodes.build import build_splits
from metarec.models import build_model
from metarec.models.base import split_params
from metarec.models.graph.training import restore_graph
from metarec.runs.checkpoint import (
    FORMAT_VERSION,
    WHICH,
    atomic_write_json,
    load_best,
    load_tensors,
    save_tensors,
)
from metarec.runs.guard import check_finite_weights
from metarec.runs.reader import OpenRun, open_run
from metarec.train.loop import build_training_model

__all__ = ["RunParts", "load_run_parts", "read_engine_parts", "load_best", "convert_run", "WHICH"]


@dataclass
class RunParts:
    """What a run directory holds, validated.

    ``model`` / ``params`` / ``state`` / ``algo`` are ``None`` for runs of methods outside the
    meta-learning engine (``manifest["method"]`` names them; see :mod:`metarec.methods.run_dir`).
    """

    run_dir: Path
    manifest: dict[str, Any]
    table: InteractionTable
    method_name: str
    model: nn.Module | None
    params: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    algo: AlgorithmConfig | None
    model_config: dict[str, Any]
    steps: int | None
    lr: float | None
    step: int


def load_run_parts(
    run_dir: str | os.PathLike[str], *, which: str = "best", device: str | torch.device = "cpu"
) -> RunParts:
    """Read and validate a run directory (see the module docstring).

    Raises:
        CheckpointError: missing or damaged files, an unsupported format version (version 1:
            the message shows the conversion), or weights that do not match the manifest's
            model (naming the tensor and both shapes).
    """
    if which not in WHICH:
        raise ConfigError(f"which={which!r}: choose one of {WHICH}{suggest(str(which), WHICH)}")
    return read_engine_parts(open_run(run_dir), which=which, device=device)


def read_engine_parts(
    opened: OpenRun, *, which: str = "best", device: str | torch.device = "cpu"
) -> RunParts:
    """The MAML family's parts of an opened run directory (see :func:`load_run_parts`)."""
    run, manifest, table = opened.run_dir, opened.manifest, opened.table
    method = manifest.get("method")
    if isinstance(method, dict) and method.get("engine") is False:
        return RunParts(
            run, manifest, table, str(method.get("name")), None, {}, {}, None, {}, None, None, 0
        )
    mcfg = _section(manifest, "model", run)
    name, kwargs, patterns = mcfg.get("name"), dict(mcfg.get("kwargs") or {}), mcfg.get("adapt")
    if "hidden" in kwargs and isinstance(kwargs["hidden"], list):
        kwargs["hidden"] = tuple(kwargs["hidden"])
    try:
        model = build_model(str(name), table, adapt=tuple(patterns) if patterns else None, **kwargs)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(
            f"{str(run / 'manifest.json')!r}: model {name!r} with kwargs {kwargs} cannot be built "
            f"({e}); the manifest is damaged or from another metarec version; restore it or "
            "re-train"
        ) from None
    algo = _algorithm(manifest, run)
    ck = load_best(run, which=which)
    where = run / "checkpoints" / f"{which}.pt"
    restore_graph(
        model, ck.get("buffers") or {}, where
    )  # hook (metarec.models.graph): its edge buffers' size
    if not isinstance(ck.get("params"), Mapping):
        raise CheckpointError(
            f"{str(where)!r}: holds no 'params' dict; not a metarec checkpoint; re-train"
        )
    mpath = run / "manifest.json"
    params = _match(
        dict(model.named_parameters()), ck["params"], mpath, "parameter", str(name), kwargs
    )
    buffers = _match(
        dict(model.named_buffers()), ck.get("buffers") or {}, mpath, "buffer", str(name), kwargs
    )
    fast, _ = split_params(model, adapt_patterns(algo, model), params)
    state = _match_state(init_algorithm_state(algo, fast), ck.get("state") or {}, run)
    check_finite_weights(
        {**params, **state}, where
    )  # hook (metarec.runs.guard): never serve NaN weights
    model.load_state_dict({**params, **buffers})
    for p in model.parameters():
        p.requires_grad_(False)
    dev = torch.device(device)
    model = model.to(dev).eval()
    params = dict(model.named_parameters())
    state = {k: v.detach().to(dev) for k, v in state.items()}
    steps, lr = _eval_defaults(run, algo)
    method_name = (
        manifest.get("method", {}).get("name", algo.name)
        if isinstance(manifest.get("method"), dict)
        else algo.name
    )
    mc = {"name": name, "kwargs": mcfg.get("kwargs") or {}, "adapt": patterns}
    return RunParts(
        run,
        manifest,
        table,
        str(method_name),
        model,
        params,
        state,
        algo,
        mc,
        steps,
        lr,
        int(ck.get("step", 0)),
    )


def convert_run(
    run_dir: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None
) -> Path:
    """Convert a format-1 run directory in place to the current format.

    Version 1 stored parameters only; the id models' known-id buffers are recomputed from the
    run's own scenario (``config.json``) exactly as training set them (same data, same split),
    and written beside the parameters of ``best.pt`` and ``last.pt``.

    Raises:
        CheckpointError: the folder is not a format-1 run, or its ``config.json`` is missing.

    Example:
        >>> import tempfile, metarec as mr
        >>> sc = mr.load_scenario("tasks/synthetic-cold-start.toml", [  # a tiny MAML run
        ...     "data.synthetic.n_domains=3", "data.synthetic.n_users=60", "data.synthetic.n_items=80",
        ...     "model.embedding_dim=4", "model.hidden=[8]", "algorithm.inner_steps=1", "algorithm.meta_batch=4",
        ...     "train.steps=2", "train.val_every=2", "train.val_tasks=8", "train.progress=false"])
        >>> run = mr.train(sc, tempfile.mkdtemp() + "/run", evaluate_test=False).run_dir
        >>> convert_run(run)  # a current run needs nothing
        Traceback (most recent call last):
        ...
        metarec._errors.CheckpointError: '...manifest.json': format_version=...; only version 1 runs need converting

        What :func:`metarec.load_run` says of a version-1 run, and the conversion it asks for:

        >>> import json
        >>> manifest = json.loads((run / "manifest.json").read_text())
        >>> _ = (run / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
        >>> mr.load_run(run)
        Traceback (most recent call last):
        ...
        metarec._errors.CheckpointError: '...manifest.json': format_version=1 (parameters only,
        no buffers) is no longer read; ...
        >>> convert_run(run) == run, mr.load_run(run).name
        (True, 'maml')
    """
    run = Path(run_dir)
    p = run / "manifest.json"
    manifest = read_json_object(
        p,
        "manifest",
        error=CheckpointError,
        fix="not a run directory; pass a folder written by 'metarec train'",
    )
    if manifest.get("format_version") != 1:
        raise CheckpointError(
            f"{str(p)!r}: format_version={manifest.get('format_version')!r}; only version 1 runs "
            "need converting"
        )
    sc = load_scenario(run / "config.json", data_root=data_root)
    table = load_table(sc.data)
    model = build_training_model(sc, table, build_splits(table, sc.protocol))
    buffers = {k: v.detach().cpu() for k, v in model.named_buffers()}
    for which in WHICH:
        path = run / "checkpoints" / f"{which}.pt"
        if path.is_file():
            ck = load_tensors(path)
            ck["buffers"] = buffers
            save_tensors(path, ck)
    manifest["format_version"] = FORMAT_VERSION
    atomic_write_json(p, manifest)
    return run


# ---------------------------------------------------------------------- validation helpers
def _section(manifest: dict[str, Any], key: str, run: Path) -> dict[str, Any]:
    sec = manifest.get(key)
    if not isinstance(sec, dict):
        raise CheckpointError(
            f"{str(run / 'manifest.json')!r}: no {key!r} section; the run directory is damaged; "
            "re-train"
        )
    return sec


def _algorithm(manifest: dict[str, Any], run: Path) -> AlgorithmConfig:
    raw = _section(manifest, "algorithm", run)
    names = {f.name for f in fields(AlgorithmConfig)}
    kw: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in names
    }
    try:
        return AlgorithmConfig(**kw)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(
            f"{str(run / 'manifest.json')!r}: algorithm {raw!r} is invalid ({e}); restore it or "
            "re-train"
        ) from None


def _match(
    built: dict[str, torch.Tensor],
    saved: Mapping[str, Any],
    where: Path,
    what: str,
    name: str,
    kwargs: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, checked name by name and shape by shape against the model's."""
    for k, p in built.items():
        v = saved.get(k)
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(
                f"{str(where)!r}: model {name!r} with kwargs {kwargs} has {what} {k!r} of shape "
                f"{tuple(p.shape)}, which the checkpoint lacks; the manifest's model config does "
                "not match the weights; restore manifest.json or re-train"
            )
        if tuple(v.shape) != tuple(p.shape):
            raise CheckpointError(
                f"{str(where)!r}: {what} {k!r}: the checkpoint holds shape {tuple(v.shape)} but "
                f"model {name!r} with kwargs {kwargs} builds {tuple(p.shape)}; the manifest's "
                "model config does not match the weights; restore manifest.json or re-train"
            )
    extra = [k for k in saved if k not in built]
    if extra:
        raise CheckpointError(
            f"{str(where)!r}: the checkpoint has {what} {extra[0]!r} (and {len(extra) - 1} more) "
            f"that model {name!r} with kwargs {kwargs} does not; the manifest's model config does "
            "not match the weights; restore it or re-train"
        )
    return {k: saved[k].detach().to(built[k].dtype) for k in built}


def _match_state(
    ref: dict[str, torch.Tensor], saved: Mapping[str, Any], run: Path
) -> dict[str, torch.Tensor]:
    for k, v in ref.items():
        got = saved.get(k)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(v.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else None
            raise CheckpointError(
                f"{str(run)!r}: algorithm state {k!r} has shape {shape} in the checkpoint, the "
                f"algorithm needs {tuple(v.shape)}; the manifest's algorithm does not match the "
                "weights; restore it or re-train"
            )
    return {k: saved[k].detach() for k in ref}


def _eval_defaults(run: Path, algo: AlgorithmConfig) -> tuple[int | None, float | None]:
    """The run's evaluation budget (``algorithm.eval_steps`` / ``eval_lr`` of config.json)."""
    p = run / "config.json"
    if not p.is_file():
        return None, None
    a = read_json_object(
        p,
        "scenario",
        error=CheckpointError,
        fix="the run directory is damaged; restore the file from a copy, or re-train",
    ).get("algorithm", {})
    a = a if isinstance(a, dict) else {}
    steps = a.get("eval_steps")
    lr = None if algo.meta_learned_lrs else a.get("eval_lr")
    return (int(steps) if isinstance(steps, int) else None), (
        float(lr) if isinstance(lr, (int, float)) else None
    )
