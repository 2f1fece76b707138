"""Fast-adapt API: a trained run + a sparse support set -> an adapted recommender.

    run = load_run("runs/cold")                        # RunModel: any method's run
    rec = run.adapt([(u, i, 4.0), (u, j, 2.0)])        # Recommender: one task per user
    rec.recommend(u, k=10)                              # [(item, score), ...], best first
    rec.predict([u, u], [i, k])                         # np.ndarray, raw ids in
    rec.save("runs/cold-adapted"); load_adapted("runs/cold-adapted")

Raw ids are encoded with the run's encoders. A user the run never saw maps to index 0 (the
learned unknown embedding / unknown features): that is the cold-start case and needs no flag.
Items in the run's item encoder are scored, including feature-only items (never rated in
training, scored through their side features). An item id the encoder does not know has no
embedding and no features: it is an error naming the ids, unless ``unknown_items="fallback"``
maps it explicitly to the unknown item (index 0).

Every method loads the same way: :func:`load_run` reads the run's
:class:`~metarec.methods.Fitted` (:func:`metarec.methods.load_fitted`; the MAML family's runs
keep their own format) into a :class:`~metarec.recommend.run_model.RunModel`, whose ``adapt``
hands padded support tasks to ``fitted.adapt`` (the MAML family's inner loop, one vmapped call
per ``chunk_size`` tasks; an amortised learner's forward pass; ...). ``MetaModel`` and
``MethodModel`` are the 0.1 names of :class:`RunModel` (deprecated; they go in 0.3).

The module is the top of the fast-adapt layer; its parts live in
:mod:`metarec.recommend.run_model` (the run model), :mod:`metarec.recommend.support` (support
input) and :mod:`metarec.recommend.recommender` (the recommender). Loading never executes code
from a file (``weights_only=True``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec._errors import CheckpointError
from metarec.config.algorithm import AlgorithmConfig
from metarec.data.encoding import IdEncoder
from metarec.data.table import InteractionTable
from metarec.methods.adapted import SavesAdapted
from metarec.methods.engine.method import EngineFitted
from metarec.methods.run_dir import read_run
from metarec.recommend.recommender import (
    ADAPTED_FILE,
    USERS_FILE,
    AdaptedRecommender,
    MethodRecommender,
    Recommender,
    TaskSupport,
)
from metarec.recommend.run_model import RunModel, SupportLike
from metarec.recommend.support import UnknownItems, read_support
from metarec.runs.checkpoint import load_item_domains, load_tensors, read_manifest
from metarec.runs.guard import OnDiverge
from metarec.runs.identity import check_identity

__all__ = [
    "RunModel",
    "Recommender",
    "MetaModel",
    "MethodModel",
    "AdaptedRecommender",
    "MethodRecommender",
    "load_run",
    "load_adapted",
    "read_support",
    "open_recommender",
]


class MetaModel(RunModel):
    """Deprecated (0.1; goes in 0.3): a run of the MAML family built from its parts.
    :func:`load_run` returns a :class:`RunModel` for every method; this class only keeps the
    0.1 constructor working (it wraps the parts in the family's
    :class:`~metarec.methods.engine.method.EngineFitted`).

    Example:
        The same run in float64, rebuilt from its parts:

        >>> import tempfile, metarec as mr
        >>> sc = mr.load_scenario("tasks/synthetic-cold-start.toml", [  # a tiny MAML run
        ...     "data.synthetic.n_domains=3", "data.synthetic.n_users=60", "data.synthetic.n_items=80",
        ...     "model.embedding_dim=4", "model.hidden=[8]", "algorithm.inner_steps=1", "algorithm.meta_batch=4",
        ...     "train.steps=2", "train.val_every=2", "train.val_tasks=8", "train.progress=false"])
        >>> out = mr.train(sc, tempfile.mkdtemp() + "/run", evaluate_test=False).run_dir
        >>> run = load_run(out)
        >>> model = run.model.double()
        >>> meta = MetaModel(model, dict(model.named_parameters()), run.state, run.algo, run.table,
        ...                  manifest=run.manifest, run_dir=run.run_dir, steps=run.steps, lr=run.lr)
        >>> isinstance(meta, RunModel), meta.name, meta.params["head.weight"].dtype
        (True, 'maml', torch.float64)
    """

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, torch.Tensor],
        state: dict[str, torch.Tensor],
        algo: AlgorithmConfig,
        table: InteractionTable,
        *,
        manifest: dict[str, Any],
        run_dir: Path,
        steps: int | None,
        lr: float | None,
        step: int = 0,
        item_domains: np.ndarray | None = None,
    ) -> None:
        m = manifest.get("model") or {}
        mc = {"name": m.get("name"), "kwargs": m.get("kwargs") or {}, "adapt": m.get("adapt")}
        method = manifest.get("method")
        name = method.get("name", algo.name) if isinstance(method, dict) else algo.name
        fitted = EngineFitted(
            str(name), table, model, params, state, algo, mc, steps, lr, {"step": step}
        )
        super().__init__(
            fitted, manifest=manifest, run_dir=run_dir, item_domains=item_domains, step=step
        )


MethodModel = RunModel
"""Deprecated name of :class:`RunModel` (0.1: a run of another method); goes in 0.3."""


# ---------------------------------------------------------------------- loading
def load_run(
    run_dir: str | os.PathLike[str], *, which: str = "best", device: str | torch.device = "cpu"
) -> RunModel:
    """Load a run directory written by ``metarec train`` (or ``metarec adapt``), any method.

    The run's :class:`~metarec.methods.Fitted` is rebuilt by its method's loader from
    ``manifest.json``, the saved encoders and side features and the tensors of
    ``checkpoints/<which>.pt``.

    Args:
        run_dir: the run directory.
        which: ``"best"`` (the validation-selected weights) or ``"last"``.
        device: where the model and its weights live (the MAML family; other methods load on
            the CPU).

    Raises:
        CheckpointError: missing or damaged files, an unsupported format version (a version-1
            run: the message shows how to convert it), a checkpoint that is not a plain tensor
            file, or weights that do not match the manifest (naming the tensor and both
            shapes).

    Example:
        >>> import tempfile, metarec as mr
        >>> sc = mr.load_scenario("tasks/synthetic-cold-start.toml", ["algorithm.name=popularity",
        ...     "data.synthetic.n_domains=3", "data.synthetic.n_users=60",
        ...     "data.synthetic.n_items=80", "train.progress=false"])
        >>> out = tempfile.mkdtemp() + "/run"
        >>> _ = mr.train_method(sc, out)
        >>> run = load_run(out)
        >>> run.name, run.feedback
        ('popularity', 'explicit')
    """
    fitted, step = read_run(run_dir, which=which, device=device)
    run = Path(run_dir)
    return RunModel(
        fitted,
        manifest=read_manifest(run),
        run_dir=run,
        item_domains=load_item_domains(run),
        step=step,
        which=which,
    )


def load_adapted(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> Recommender:
    """Load a directory written by :meth:`Recommender.save` (or ``metarec adapt``).

    The adapted tasks come back as saved (the MAML family's fast weights) or are adapted again
    from the saved support with the saved ``steps`` / ``lr`` (every other method).

    Raises:
        CheckpointError: ``path`` is a plain run (use :func:`load_run`), or its adapted tasks
            are missing or do not match the run.

    Example:
        >>> import tempfile, metarec as mr
        >>> sc = mr.load_scenario("tasks/synthetic-cold-start.toml", [  # a tiny MAML run
        ...     "data.synthetic.n_domains=3", "data.synthetic.n_users=60", "data.synthetic.n_items=80",
        ...     "model.embedding_dim=4", "model.hidden=[8]", "algorithm.inner_steps=1", "algorithm.meta_batch=4",
        ...     "train.steps=2", "train.val_every=2", "train.val_tasks=8", "train.progress=false"])
        >>> out = mr.train(sc, tempfile.mkdtemp() + "/run", evaluate_test=False).run_dir
        >>> a, b, c = load_run(out).table.item_ids.values[:3]
        >>> rec = load_run(out).adapt([("alice", a, 5.0), ("alice", b, 1.0), ("bob", c, 4.0)])
        >>> saved = rec.save(tempfile.mkdtemp() + "/adapted")
        >>> back = load_adapted(saved)
        >>> back.recommend("alice", k=3) == rec.recommend("alice", k=3), len(back.recommend("bob", k=3))
        (True, 3)
        >>> load_adapted(out)
        Traceback (most recent call last):
        ...
        metarec._errors.CheckpointError: '...run': a meta-trained run, not an adapted one
        (manifest has no 'adapted': true); ...
    """
    path = Path(path)
    manifest = read_manifest(path)
    if not manifest.get("adapted"):
        raise CheckpointError(
            f"{str(path)!r}: a meta-trained run, not an adapted one (manifest has no 'adapted': "
            "true); load it with load_run(path) and call .adapt(support), or pass a folder written "
            "by 'metarec adapt'"
        )
    run = load_run(path, device=device)
    where = path / ADAPTED_FILE
    blob = load_tensors(where, map_location=run.device)
    # hook (metarec.runs.identity): the adapted weights of this directory, not another's
    check_identity(blob, path, where, manifest, what="adapted weights")
    try:
        users = IdEncoder.from_json(json.loads((path / USERS_FILE).read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{str(path / USERS_FILE)!r}: missing or damaged ({e}); re-create it with 'metarec "
            "adapt'"
        ) from None
    info = manifest.get("adaptation", {})
    per, steps, lr = info.get("per", "user"), info.get("steps"), info.get("lr")
    support = _saved_support(blob, where)
    adapted = None
    if isinstance(run.fitted, SavesAdapted):
        adapted = run.fitted.restore_adapted(blob, str(where))
    if adapted is None and support is not None and support.n_tasks:
        adapted = run.adapt_tasks(support, steps=steps, lr=lr, chunk_size=4096)
    if adapted is None and support is None:
        raise CheckpointError(
            f"{str(where)!r}: holds neither adapted weights nor the support they came from; re-run "
            "'metarec adapt'"
        )
    if support is None:  # a 0.1 directory (fast weights only): no support to probe with
        n = 0 if adapted is None else adapted.n_tasks
        support = TaskSupport(
            *(np.zeros((n, 1), t) for t in (np.int64, np.int64, np.float64, bool))
        )
    rec = Recommender(
        run,
        adapted,
        support,
        users,
        blob["task"].cpu().numpy(),
        int(blob["default_task"]),
        blob["seen_user"].cpu().numpy(),
        blob["seen_item"].cpu().numpy(),
        per=per,
        steps=steps,
        lr=lr,
    )
    fallback = blob.get("fallback")
    if adapted is not None and fallback is not None and bool(fallback.any()):
        if not isinstance(run.fitted, SavesAdapted):  # adapted again: patch the same tasks
            rec.fall_back(np.flatnonzero(fallback.cpu().numpy()))
        rec.fallback = fallback.cpu().numpy().astype(bool)
    return rec


def _saved_support(blob: dict[str, Any], where: Path) -> TaskSupport | None:
    s = blob.get("support")
    if s is None:
        return None
    try:
        return TaskSupport(
            s["users"].cpu().numpy(),
            s["items"].cpu().numpy(),
            s["targets"].cpu().numpy(),
            s["mask"].cpu().numpy().astype(bool),
        )
    except (KeyError, AttributeError, TypeError) as e:
        raise CheckpointError(
            f"{str(where)!r}: 'support' is damaged ({type(e).__name__}: {e}); re-run 'metarec "
            "adapt'"
        ) from None


def open_recommender(
    path: str | os.PathLike[str],
    *,
    support: SupportLike | None = None,
    user: Any = None,
    steps: int | None = None,
    lr: float | None = None,
    device: str | torch.device = "cpu",
    on_diverge: OnDiverge = "error",
    unknown_items: UnknownItems = "error",
) -> Recommender:
    """What ``metarec recommend`` serves from: an adapted directory as saved, or a run's
    initialisation; with ``support``, adapted on the fly (``user``, ``on_diverge`` and
    ``unknown_items`` as in :meth:`RunModel.adapt`).

    Example:
        >>> import tempfile, metarec as mr
        >>> sc = mr.load_scenario("tasks/synthetic-cold-start.toml", [  # a tiny MAML run
        ...     "data.synthetic.n_domains=3", "data.synthetic.n_users=60", "data.synthetic.n_items=80",
        ...     "model.embedding_dim=4", "model.hidden=[8]", "algorithm.inner_steps=1", "algorithm.meta_batch=4",
        ...     "train.steps=2", "train.val_every=2", "train.val_tasks=8", "train.progress=false"])
        >>> out = mr.train(sc, tempfile.mkdtemp() + "/run", evaluate_test=False).run_dir
        >>> a, b = load_run(out).table.item_ids.values[:2]
        >>> rec = open_recommender(out, support=[("carol", a, 5.0), ("carol", b, 2.0)])  # adapted now
        >>> top = rec.recommend("carol", k=3)
        >>> len(top), top == sorted(top, key=lambda pair: -pair[1])  # (item, score), best first
        (3, True)
        >>> saved = rec.save(tempfile.mkdtemp() + "/adapted")
        >>> open_recommender(saved).recommend("carol", k=3) == top  # an adapted folder, as saved
        True
        >>> len(open_recommender(out).recommend("anyone", k=3))  # no support: the initialisation
        3
    """
    if support is None and read_manifest(path).get("adapted"):
        return load_adapted(path, device=device)
    run = load_run(path, device=device)
    if support is None:
        return run.initial()
    return run.adapt(
        support, steps=steps, lr=lr, user=user, on_diverge=on_diverge, unknown_items=unknown_items
    )
