"""Fast-adapt API: a trained run + a sparse support set -> an adapted recommender.

    meta = load_run("runs/cold")                       # MetaModel: the meta-learned initialisation
    rec = meta.adapt([(u, i, 4.0), (u, j, 2.0)])       # AdaptedRecommender: one task per user
    rec.recommend(u, k=10)                              # [(item, score), ...], best first
    rec.predict([u, u], [i, k])                         # np.ndarray, raw ids in
    rec.save("runs/cold-adapted"); load_adapted("runs/cold-adapted")

Raw ids are encoded with the run's encoders. A user the run never saw maps to index 0 (the
learned unknown embedding / unknown features): that is the cold-start case and needs no flag.
Items in the run's item encoder are scored, including feature-only items (never rated in
training, scored through their side features). An item id the encoder does not know has no
embedding and no features: it is an error naming the ids, unless ``unknown_items="fallback"``
maps it explicitly to the unknown item (index 0).

Adaptation runs the meta-learned inner loop (:func:`metarec.algorithms.adapt_batch`, the same
function training and evaluation use) on one task per user (``per="user"``) or one task over
every row (``per="domain"``: a new domain adapts one set of fast weights that then serves all its
users), tasks padded into one :class:`~metarec.episodes.batch.EpisodeSet` and adapted in one
vmapped call per ``chunk_size`` tasks. Runs of other methods (``popularity``, the cross-domain
methods, registered methods) load as a :class:`MethodModel` with the same ``adapt`` /
``adapt_many`` / ``initial`` API.

The module is the top of the serving layer; its parts live in :mod:`metarec.methods.engine.run_files` (run
directories), :mod:`metarec.recommend.support` (support input) and :mod:`metarec.recommend.recommender` (the
recommenders). Loading never executes code from a file (``weights_only=True``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from metarec._errors import CheckpointError, ConfigError
from metarec.algorithms import AlgorithmConfig, adapt_batch, adapt_patterns, predict_batch
from metarec.config.limits import check_steps
from metarec.data.encoding import IdEncoder
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.methods import load_fitted
from metarec.methods.engine.run_files import load_run_parts
from metarec.models.base import split_params
from metarec.recommend.method_model import MethodModel
from metarec.recommend.recommender import (
    ADAPTED_FILE,
    USERS_FILE,
    AdaptedRecommender,
    MethodRecommender,
)
from metarec.recommend.run_model import RunModel, SupportLike
from metarec.recommend.support import (
    SupportRows,
    SupportTasks,
    UnknownItems,
    check_lr,
    group_tasks,
    pad_tasks,
    read_support,
)
from metarec.runs.checkpoint import load_item_domains, load_tensors, read_manifest
from metarec.runs.guard import OnDiverge, check_finite_weights, ensure_finite_adaptation
from metarec.runs.identity import check_identity

__all__ = [
    "MetaModel",
    "MethodModel",
    "AdaptedRecommender",
    "MethodRecommender",
    "load_run",
    "load_adapted",
    "read_support",
    "open_recommender",
]


# ---------------------------------------------------------------------- loading
def load_run(
    run_dir: str | os.PathLike[str], *, which: str = "best", device: str | torch.device = "cpu"
) -> Any:
    """Load a run directory written by ``metarec train`` (or ``metarec adapt``).

    A meta-learning run loads as a :class:`MetaModel` (the model rebuilt from ``manifest.json``
    and the saved encoders and side features, given the weights and buffers of
    ``checkpoints/<which>.pt``); a run of another method as a :class:`MethodModel`.

    Args:
        run_dir: the run directory.
        which: ``"best"`` (the validation-selected weights) or ``"last"``.
        device: where the model and its weights live.

    Raises:
        CheckpointError: missing or damaged files, an unsupported format version (a version-1
            run: the message shows how to convert it), a checkpoint that is not a plain tensor
            file, or a model config that does not match the weights (naming the tensor and both
            shapes).

    Example:
        >>> meta = load_run("runs/cold")                    # doctest: +SKIP
        >>> meta.adapt(support).recommend(42, k=10)          # doctest: +SKIP
    """
    parts = load_run_parts(run_dir, which=which, device=device)
    domains = load_item_domains(parts.run_dir)
    if parts.model is None or parts.algo is None:
        return MethodModel(
            load_fitted(run_dir, which=which, device=device),
            manifest=parts.manifest,
            run_dir=parts.run_dir,
            item_domains=domains,
        )
    return MetaModel(
        parts.model,
        parts.params,
        parts.state,
        parts.algo,
        parts.table,
        manifest=parts.manifest,
        run_dir=parts.run_dir,
        steps=parts.steps,
        lr=parts.lr,
        step=parts.step,
        item_domains=domains,
    )


def load_adapted(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> AdaptedRecommender:
    """Load a directory written by :meth:`AdaptedRecommender.save` (or ``metarec adapt``).

    Raises:
        CheckpointError: ``path`` is a plain run (use :func:`load_run`), or its adapted weights
            are missing or do not match the model.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if not manifest.get("adapted"):
        raise CheckpointError(
            f"{str(path)!r}: a meta-trained run, not an adapted one (manifest has no 'adapted': true); "
            "load it with load_run(path) and call .adapt(support), or pass a folder written by 'metarec adapt'"
        )
    meta = load_run(path, device=device)
    blob = load_tensors(path / ADAPTED_FILE, map_location=meta.device)
    # hook (metarec.runs.identity): the adapted weights of this directory, not another's
    check_identity(blob, path, path / ADAPTED_FILE, manifest, what="adapted weights")
    try:
        users = IdEncoder.from_json(json.loads((path / USERS_FILE).read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{str(path / USERS_FILE)!r}: missing or damaged ({e}); re-create it with 'metarec adapt'"
        ) from None
    info = manifest.get("adaptation", {})
    fast = dict(blob.get("fast", {}))
    ref, _ = split_params(meta.model, adapt_patterns(meta.algo, meta.model), meta.params)
    for k, v in ref.items():
        got = fast.get(k)
        if got is None or tuple(got.shape[1:]) != tuple(v.shape):
            shape = None if got is None else tuple(got.shape)
            raise CheckpointError(
                f"{str(path / ADAPTED_FILE)!r}: fast weight {k!r} has shape {shape}, the model needs (tasks, *{tuple(v.shape)}); "
                "the adapted weights do not belong to this run; re-run 'metarec adapt'"
            )
    check_finite_weights(fast, path / ADAPTED_FILE)  # hook (metarec.runs.guard)
    return AdaptedRecommender(
        meta,
        fast,
        users,
        blob["task"].cpu().numpy(),
        int(blob["default_task"]),
        blob["seen_user"].cpu().numpy(),
        blob["seen_item"].cpu().numpy(),
        per=info.get("per", "user"),
        steps=info.get("steps"),
        lr=info.get("lr"),
    )


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
) -> Any:
    """What ``metarec recommend`` serves from: an adapted directory as saved, or a run's
    initialisation (meta-learned, or the method's zero-shot scores); with ``support``, adapted on
    the fly (``user``, ``on_diverge`` and ``unknown_items`` as in :meth:`MetaModel.adapt`)."""
    if support is None and read_manifest(path).get("adapted"):
        return load_adapted(path, device=device)
    meta = load_run(path, device=device)
    if support is None:
        return meta.initial()
    return meta.adapt(
        support, steps=steps, lr=lr, user=user, on_diverge=on_diverge, unknown_items=unknown_items
    )


# ---------------------------------------------------------------------- the meta-model
class MetaModel(RunModel[AdaptedRecommender]):
    """A meta-trained model ready to adapt: the model, its meta-learned weights, the run's encoders.

    Build it with :func:`load_run`. Attributes: ``model`` (in eval mode), ``params`` and
    ``state`` (``{name: tensor}``), ``algo`` (:class:`AlgorithmConfig`), ``table`` (the run's
    encoders and side features, no interactions), ``steps`` / ``lr`` (the default adaptation
    budget: the run's ``eval_steps`` / ``eval_lr``, else the algorithm's), ``run_dir``, ``manifest``.
    :meth:`~metarec.recommend.run_model.RunModel.initial`, :meth:`~metarec.recommend.run_model.RunModel.adapt` and
    :meth:`~metarec.recommend.run_model.RunModel.adapt_many` return an :class:`AdaptedRecommender`.
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
        self.model, self.params, self.state, self.algo, self.table = (
            model,
            params,
            state,
            algo,
            table,
        )
        self.manifest, self.run_dir, self.steps, self.lr, self.step = (
            manifest,
            run_dir,
            steps,
            lr,
            step,
        )
        self.device = next(iter(params.values())).device
        self.dtype = next(iter(params.values())).dtype
        self._fast0, _ = split_params(model, adapt_patterns(algo, model), params)
        self.item_domains = item_domains

    def __repr__(self) -> str:
        return (
            f"MetaModel({self.manifest['model']['name']}, {self.algo.name}, {len(self.user_ids) - 1} users, "
            f"{len(self.item_ids) - 1} items, {self.feedback}, run_dir={str(self.run_dir)!r})"
        )

    # ------------------------------------------------------------------ internals
    def score_tasks(
        self, fast: Mapping[str, torch.Tensor], users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Raw scores ``(T, N)`` of ``users``/``items`` ``(T, N)`` with per-task fast weights
        ``{name: (T, *shape)}`` (the engine's :func:`~metarec.algorithms.predict_batch`)."""
        with torch.no_grad():
            if (
                users.shape[0] == 1
            ):  # one task (serving one user): the same forward pass without vmap's overhead
                slow = {k: v for k, v in self.params.items() if k not in fast}
                one = {k: v[0] for k, v in fast.items()}
                return functional_call(self.model, (one, slow), (users[0], items[0]))[None]
            return predict_batch(self.model, self.params, dict(fast), users, items)

    def _adapt_rows(
        self,
        rows: SupportRows,
        steps: int | None,
        lr: float | None,
        per: str,
        unknown_items: str,
        chunk_size: int | None,
        extra_user: Any,
        progress: bool = False,
        on_diverge: OnDiverge = "error",
    ) -> AdaptedRecommender:
        t = group_tasks(
            rows,
            self.user_ids,
            self.item_ids,
            per=per,
            unknown_items=unknown_items,
            extra_user=extra_user,
        )
        return self._adapt_grouped(t, steps, lr, per, chunk_size, progress, on_diverge)

    def _adapt_grouped(
        self,
        t: SupportTasks,
        steps: int | None,
        lr: float | None,
        per: str,
        chunk_size: int | None,
        progress: bool,
        on_diverge: OnDiverge,
    ) -> AdaptedRecommender:
        check_lr(lr)
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ConfigError(
                f"chunk_size={chunk_size!r}: must be an int >= 1, or None for one call"
            )
        steps = self._resolve_steps(self.steps if steps is None else steps)
        lr = self.lr if lr is None else lr
        fast = self._adapt_tasks(
            t.tcode, t.n_tasks, t.uidx, t.iidx, t.ratings, steps, lr, chunk_size, progress
        )
        rec = AdaptedRecommender(
            self, fast, t.users, t.task_of, t.default, t.ucode, t.iidx, per=per, steps=steps, lr=lr
        )
        return ensure_finite_adaptation(
            rec, on_diverge
        )  # hook (metarec.runs.guard): never serve NaN weights

    def _adapt_tasks(
        self,
        tcode: np.ndarray,
        n_tasks: int,
        uidx: np.ndarray,
        iidx: np.ndarray,
        ratings: np.ndarray,
        steps: int,
        lr: float | None,
        chunk_size: int | None,
        progress: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Fast weights ``{name: (n_tasks + 1, *shape)}``; row ``n_tasks`` is the initialisation.

        The tasks are padded into ``(T, N)`` :class:`EpisodeSet` chunks and adapted by the
        engine's own inner loop, :func:`~metarec.algorithms.adapt_batch` (one vmapped call per
        chunk; for a model whose encoder holds no fast weight, ``encode`` runs once per task)."""
        if n_tasks == 0:
            return self._stack([])
        users, items, targets, mask = pad_tasks(tcode, n_tasks, uidx, iidx, ratings)  # (T, N) each
        size = chunk_size or n_tasks
        parts = []
        for s in tqdm(
            range(0, n_tasks, size), desc="adapt", unit="chunk", disable=not progress, leave=False
        ):
            m = mask[s : s + size]
            width = max(int(m.sum(axis=1).max()), 1)
            support = EpisodeSet(
                torch.from_numpy(users[s : s + size, :width]).to(self.device),
                torch.from_numpy(items[s : s + size, :width]).to(self.device),
                torch.from_numpy(targets[s : s + size, :width]).to(self.device, self.dtype),
                torch.from_numpy(m[:, :width]).to(self.device),
            )
            parts.append(
                adapt_batch(
                    self.algo, self.model, self.params, support, steps, lr, state=self.state
                )
            )
        return self._stack(parts)

    def _resolve_steps(self, steps: int | None) -> int:
        n = (0 if self.algo.name == "global" else self.algo.inner_steps) if steps is None else steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(
                f"steps={steps!r}: must be an int >= 0; pass steps=None for the run's default"
            )
        return check_steps(n, "steps")  # hook (metarec.config.limits): at most MAX_STEPS

    def _no_tasks(self) -> dict[str, torch.Tensor]:
        return self._stack([])

    def _stack(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {
            k: torch.cat([p[k] for p in parts] + [v.detach().unsqueeze(0)])
            for k, v in self._fast0.items()
        }

    def _recommender(
        self, fast, users, task_of, default, seen_user, seen_item, *, per, steps, lr
    ) -> AdaptedRecommender:
        return AdaptedRecommender(
            self,
            fast,
            users,
            task_of,
            default,
            np.asarray(seen_user, np.int64),
            np.asarray(seen_item, np.int64),
            per=per,
            steps=steps,
            lr=lr,
        )
