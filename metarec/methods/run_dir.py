"""Train any registered method into a run directory, and load it back as a :class:`Fitted`.

``metarec train SCENARIO --set algorithm.name=M --out RUN`` calls :func:`train_method`:

* a family whose outer loop writes and resumes its run directory itself (the MAML family:
  registered with a ``trainer``, :data:`~metarec.methods.base.RunTrainer`) trains through it
  (resume, checkpoints, ``metrics.jsonl``, test metrics);
* every other method (``popularity``, the cross-domain methods, the learners, methods
  registered with :func:`~metarec.methods.register_method`) is built from the scenario (its
  settings are checked before any data is read), fitted on meta-train (selection on meta-val)
  and written by :func:`save_fitted`: ``manifest.json`` (``"method": {"name", "engine": false,
  "config"}``), ``config.json``, the encoders and features, ``checkpoints/best.pt``
  (``{"state_dict": ...}``, tensors only) and ``test_metrics.json``.

:func:`load_fitted` reads any run back through its method's registration: the family's own
``reader`` (:data:`~metarec.methods.base.RunReader`) for a family with its own format, else
the method's ``loader`` and ``load_state_dict``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from metarec._errors import CheckpointError, ConfigError, suggest
from metarec.config import Scenario, as_scenario, config_hash, to_dict
from metarec.data.load import load_table
from metarec.data.table import InteractionTable
from metarec.episodes.build import build_splits, sampler_config
from metarec.episodes.splits import MetaSplits
from metarec.methods.base import (
    FitData,
    Fitted,
    build_fitted,
    build_method,
    method_info,
    training_log_of,
)
from metarec.metrics.evaluate import evaluate_fitted
from metarec.metrics.select import SELECT_METRIC
from metarec.runs.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    WHICH,
    atomic_write_json,
    load_best,
    save_table_meta,
    save_tensors,
)
from metarec.runs.fingerprint import fingerprint, write_fingerprint
from metarec.runs.folder import claim_folder
from metarec.runs.guard import check_finite_weights
from metarec.runs.identity import make_identity
from metarec.runs.reader import open_run, run_method_name
from metarec.train.log import TrainingLog
from metarec.train.loggers import Logger, make_loggers, replay
from metarec.train.loop import TrainResult, resolve_device
from metarec.train.session import run_session

__all__ = ["train_method", "save_fitted", "load_fitted", "read_run"]


def train_method(
    scenario: Scenario | Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    table: InteractionTable | None = None,
    splits: MetaSplits | None = None,
    evaluate_test: bool = True,
    loggers: Sequence[Logger] = (),
) -> TrainResult:
    """Train the method ``scenario.algorithm.name`` into run directory ``out`` (module docstring).

    ``scenario`` is a :class:`~metarec.config.Scenario` or a dict of its sections (the keys of
    a scenario file: ``{"data": {...}, "algorithm": {"name": "r2d2"}}``), so a script needs no
    TOML file.

    ``resume`` / ``overwrite`` as for :func:`metarec.train.loop.train`; every method holds the run
    directory's lock while it writes (:mod:`metarec.train.session`). ``loggers`` (beside those
    ``train.loggers`` names) get every row of the method's training log.

    Returns:
        A :class:`~metarec.train.loop.TrainResult` whose ``training_log`` is the method's
        :class:`~metarec.train.log.TrainingLog` (also in the run directory: ``metrics.jsonl``,
        ``summary.json``).

    Example:
        >>> import tempfile
        >>> from metarec.config import load_scenario
        >>> sc = load_scenario("tasks/synthetic-cold-start.toml", ["algorithm.name=r2d2",
        ...     "data.synthetic.n_domains=3", "data.synthetic.n_users=60", "data.synthetic.n_items=80", "train.steps=2",
        ...     "train.val_every=1", "train.val_tasks=8", "train.progress=false",
        ...     "learners.r2d2.hidden=[8]", "learners.r2d2.rank=2"])
        >>> res = train_method(sc, tempfile.mkdtemp() + "/run")
        >>> res.steps, [step for step, _ in res.training_log.curve]
        (2, [1, 2])

    Raises:
        ConfigError: unknown method (with the closest name), a bad method setting (naming its
            ``--set`` key), ``out`` already holds a run, or ``resume`` for a method without an
            outer loop.
    """
    scenario = as_scenario(scenario)
    name = scenario.algorithm.name
    out = Path(out)
    info = method_info(name)
    if info.trainer is not None:  # a family whose outer loop writes and resumes the run itself
        return info.trainer(
            scenario,
            out,
            resume=resume,
            overwrite=overwrite,
            table=table,
            splits=splits,
            evaluate_test=evaluate_test,
            loggers=loggers,
        )
    method = build_method(name, scenario)  # settings are checked here, before any data is read
    if resume:
        raise ConfigError(
            f"--resume with algorithm.name={name!r}: this method has no resumable outer loop; "
            "train it again"
        )
    with run_session(
        out, overwrite=overwrite
    ):  # hook (metarec.train.session): lock, orphan cleanup, overwrite, disk errors
        if (out / "manifest.json").exists():
            raise ConfigError(
                f"out={str(out)!r}: already holds a run; pass --overwrite to replace it, or choose "
                "an empty folder"
            )
        return _train_fitted(method, name, scenario, out, table, splits, evaluate_test, loggers)


def _train_fitted(
    method: Any,
    name: str,
    scenario: Scenario,
    out: Path,
    table: InteractionTable | None,
    splits: MetaSplits | None,
    evaluate_test: bool,
    loggers: Sequence[Logger],
) -> TrainResult:
    t0 = time.perf_counter()
    device = resolve_device(scenario.train.device)
    sinks = [*make_loggers(scenario.train.loggers, out), *loggers]  # a missing extra: refused now
    try:
        table = load_table(scenario.data) if table is None else table
        splits = build_splits(table, scenario.protocol) if splits is None else splits
        fitted = method.fit(
            FitData(
                table,
                splits,
                seed=scenario.train.seed,
                device=device,
                out=out,
                progress=scenario.train.progress,
            )
        )
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    scfg = sampler_config(scenario.protocol)
    val = evaluate_fitted(
        fitted,
        table,
        splits.pools[splits.val],
        scfg,
        k=scenario.metrics.k,
        names=scenario.metrics.names,
        max_tasks=scenario.train.val_tasks,
    )
    best_val = {k: v for k, v in val.items() if isinstance(v, float) and k != "adapt_ms_per_task"}
    log = training_log_of(fitted)
    log = replace(log, best_val=best_val, metric=log.metric or SELECT_METRIC[table.feedback][0])
    replay(log.rows, sinks)  # hook (metarec.train.loggers): TensorBoard, MLflow
    save_fitted(fitted, out, scenario)
    write_fingerprint(
        out, fitted.table
    )  # hook (metarec.runs.fingerprint): the encoders saved beside it
    if evaluate_test:
        states = {
            s: evaluate_fitted(
                fitted,
                table,
                splits.pools[s],
                scfg,
                k=scenario.metrics.k,
                names=scenario.metrics.names,
            )
            for s in splits.states
            if len(splits.pools[s])
        }
        atomic_write_json(
            out / "test_metrics.json",
            {
                "best_step": log.best_step,
                "states": {
                    s: {k: v for k, v in ev.items() if k != "per_task"} for s, ev in states.items()
                },
            },
        )
    log = replace(log, seconds=time.perf_counter() - t0)
    log.write(out, method=name)
    return TrainResult(
        out,
        log.steps,
        log.best_step,
        best_val,
        log.skipped_steps,
        log.seconds,
        log.tasks_per_s,
        log.stopped_early,
        training_log=log,
    )


def save_fitted(
    fitted: Fitted, out: str | os.PathLike[str], scenario: Scenario | None = None
) -> Path:
    """Write ``fitted`` as a run directory that :func:`load_fitted` and ``metarec recommend`` read.

    Example:
        >>> import tempfile
        >>> from metarec.data.synthetic_personal import make_taste_table
        >>> from metarec.episodes.splits import random_split
        >>> from metarec.methods import FitData, build_method
        >>> table = make_taste_table(n_users=30, n_items=20, per_user=8, seed=0)
        >>> splits = random_split(table, "user", (0.6, 0.2, 0.2), n_query=3, min_interactions=5)
        >>> fitted = build_method("popularity").fit(FitData(table, splits))
        >>> out = save_fitted(fitted, tempfile.mkdtemp() + "/run")
        >>> sorted(p.name for p in out.iterdir())
        ['checkpoints', 'encoders.json', 'features.pt', 'features.pt.sha256', 'manifest.json', 'run.json']
        >>> back = load_fitted(out)
        >>> back.name, bool((back.state_dict()["scores"] == fitted.state_dict()["scores"]).all())
        ('popularity', True)
    """
    out = Path(out)
    # hook (metarec.runs.folder): no write through a link, nor over files no metarec run wrote
    run_id = claim_folder(out, "train", option="out").run_id
    chash = config_hash(scenario) if scenario is not None else None
    ident = make_identity(run_id, fitted.name, chash, fingerprint(fitted.table))
    if scenario is not None:
        atomic_write_json(out / "config.json", to_dict(scenario))
    save_table_meta(fitted.table, out)
    state = fitted.state_dict()
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConfigError(
            f"{fitted.name}.state_dict(): entry {bad[0]!r} is not a tensor; a state_dict holds "
            "tensors only"
        )
    save_tensors(
        out / "checkpoints" / "best.pt",
        {"state_dict": {k: v.detach().cpu() for k, v in state.items()}, "step": 0, "run": ident},
    )
    atomic_write_json(
        out / "manifest.json",
        {  # last: a folder with a manifest is complete
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config_hash": chash,
            "run": ident,
            "method": {"name": fitted.name, "engine": False, "config": fitted.config()},
            "feedback": fitted.table.feedback,
        },
    )
    return out


def load_fitted(
    run_dir: str | os.PathLike[str], *, which: str = "best", device: str | torch.device = "cpu"
) -> Fitted:
    """A run directory (any method) as its :class:`Fitted`.

    Raises:
        CheckpointError: damaged or foreign files, or weights that do not match the method.

    Example:
        >>> import tempfile
        >>> from metarec.config import load_scenario
        >>> sc = load_scenario("tasks/synthetic-cold-start.toml", ["algorithm.name=popularity",
        ...     "data.synthetic.n_domains=3", "data.synthetic.n_users=60", "data.synthetic.n_items=80"])
        >>> out = tempfile.mkdtemp() + "/run"
        >>> _ = train_method(sc, out)
        >>> fitted = load_fitted(out)
        >>> fitted.name, fitted.table.feedback, sorted(fitted.state_dict())
        ('popularity', 'explicit', ['scores'])
        >>> load_fitted(out, which="worst")
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: which='worst': ...
    """
    return read_run(run_dir, which=which, device=device)[0]


def read_run(
    run_dir: str | os.PathLike[str], *, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[Fitted, int]:
    """``(fitted, step)``: :func:`load_fitted`'s object and the step of the checkpoint read."""
    if which not in WHICH:
        raise ConfigError(f"which={which!r}: choose one of {WHICH}{suggest(str(which), WHICH)}")
    opened = open_run(run_dir)
    name = run_method_name(opened.manifest)
    try:
        info = method_info(name)
    except ConfigError:
        raise CheckpointError(
            f"{str(Path(run_dir) / 'manifest.json')!r}: method {name!r} is not registered; a saved "
            "run of it cannot be loaded; register it with register_method(name, factory, "
            "loader=...) before loading"
        ) from None
    if info.reader is not None:  # the family's own run format
        return info.reader(opened, which, device)
    method: dict[str, Any] = opened.manifest["method"]
    try:
        fitted = build_fitted(name, method.get("config") or {}, opened.table)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{str(Path(run_dir) / 'manifest.json')!r}: method {method.get('name')!r} cannot be "
            f"rebuilt from its config ({type(e).__name__}: {e}); the manifest is damaged or from "
            "another metarec version; re-train"
        ) from None
    ck = load_best(run_dir, which=which)
    if not isinstance(ck.get("state_dict"), dict):
        raise CheckpointError(
            f"{str(Path(run_dir) / 'checkpoints' / f'{which}.pt')!r}: holds no 'state_dict'; "
            "re-train"
        )
    check_finite_weights(
        _tensors(ck["state_dict"]), Path(run_dir) / "checkpoints" / f"{which}.pt"
    )  # hook (metarec.runs.guard)
    fitted.load_state_dict(ck["state_dict"])
    fitted.training_log = TrainingLog.read(run_dir)
    return fitted, int(ck.get("step", 0))


def _tensors(tree: Any, prefix: str = "") -> dict[str, Any]:
    """The tensors of a nested ``state_dict`` by dotted name."""
    out: dict[str, Any] = {}
    items = (
        tree.items()
        if isinstance(tree, dict)
        else enumerate(tree)
        if isinstance(tree, (list, tuple))
        else ()
    )
    for k, v in items:
        name = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out[name] = v
        else:
            out.update(_tensors(v, name + "."))
    return out
