"""Fast-adapt API: a meta-trained run + a sparse support set -> an adapted recommender.

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

Adaptation runs the meta-learned inner loop (:func:`metarec.algorithms.adapt_batch`) on one task
per user (``per="user"``) or one task over every row (``per="domain"``: a new domain adapts one
set of fast weights that then serves all its users). All tasks are padded into one
:class:`~metarec.episodes.batch.EpisodeSet` with vectorised numpy and adapted in one vmapped call
(chunked by ``chunk_size`` tasks to bound memory). Explicit-feedback predictions are clipped to
the run's rating scale; implicit-feedback scores are the model's logits.

Run directories are read with :mod:`metarec.checkpoint` only (``weights_only=True``): loading
never executes code from a file. An adapted directory is run-like (``manifest.json`` with
``"adapted": true``, encoders, the meta-learned weights in ``checkpoints/best.pt``) plus
``adapted.pt`` (the per-user fast weights) and ``adapted_users.json``, so :func:`load_run` reads
it as the meta-model and :func:`load_adapted` as the adapted recommender.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metarec._errors import CheckpointError, ConfigError, DataError, py, suggest
from metarec.algorithms import (
    LOSSES,
    AlgorithmConfig,
    adapt_batch,
    adapt_patterns,
    init_algorithm_state,
    predict_batch,
)
from metarec.algorithms.config import state_lrs
from metarec.checkpoint import (
    atomic_write_json,
    load_table_meta,
    load_tensors,
    read_manifest,
    save_table_meta,
    save_tensors,
)
from metarec.data.encoding import IdEncoder
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.fingerprint import check_run_encoders, copy_fingerprint
from metarec.guard import (
    OnDiverge,
    check_finite_weights,
    check_run_limits,
    check_scores,
    ensure_finite_adaptation,
)
from metarec.limits import check_steps
from metarec.models import IdEmbedding, build_model
from metarec.models.base import RecModel, encoder_is_fixed, split_params
from metarec.models.melu import MeLU
from metarec.runlock import holds_folder

__all__ = ["MetaModel", "AdaptedRecommender", "load_run", "load_adapted", "read_support", "open_recommender"]

Per = Literal["user", "domain"]
UnknownItems = Literal["error", "fallback"]
SupportLike = pd.DataFrame | InteractionTable | Sequence[tuple[Any, ...]]

_WHICH = ("best", "last")
_ADAPTED_FILE = "adapted.pt"
_USERS_FILE = "adapted_users.json"
_SCORE_CELLS = 4_000_000  # max (tasks x width) cells scored per predict_batch call


# ---------------------------------------------------------------------- loading
def load_run(run_dir: str | os.PathLike[str], *, which: str = "best", device: str | torch.device = "cpu") -> MetaModel:
    """Load a run directory written by ``metarec train`` (or ``metarec adapt``) as a :class:`MetaModel`.

    The model is rebuilt from ``manifest.json`` (name, config, adapt patterns) and the saved
    encoders and side features, then given the weights of ``checkpoints/<which>.pt``.

    Args:
        run_dir: the run directory.
        which: ``"best"`` (the validation-selected weights) or ``"last"``.
        device: where the model and its weights live.

    Raises:
        CheckpointError: missing or damaged files, an unsupported format version, a checkpoint
            that is not a plain tensor file (never unpickled with code execution), or a model
            config that does not match the weights (naming the parameter and both shapes).

    Example:
        >>> meta = load_run("runs/cold")                    # doctest: +SKIP
        >>> meta.adapt(support).recommend(42, k=10)          # doctest: +SKIP
    """
    if which not in _WHICH:
        raise ConfigError(f"which={which!r}: choose one of {_WHICH}{suggest(str(which), _WHICH)}")
    run = Path(run_dir)
    manifest = read_manifest(run)
    check_run_limits(manifest, run)  # hook (metarec.guard): bounded steps and sizes
    try:
        table = load_table_meta(run)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{str(run / 'encoders.json')!r}: damaged ({type(e).__name__}: {e}); the run directory is incomplete; "
            "re-create it with 'metarec train'"
        ) from None
    check_run_encoders(run, table)  # hook (metarec.fingerprint): encoders.json is the one trained with
    mcfg = _section(manifest, "model", run)
    name, kwargs, patterns = mcfg.get("name"), dict(mcfg.get("kwargs") or {}), mcfg.get("adapt")
    if "hidden" in kwargs and isinstance(kwargs["hidden"], list):
        kwargs["hidden"] = tuple(kwargs["hidden"])
    try:
        model = build_model(name, table, adapt=tuple(patterns) if patterns else None, **kwargs)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(
            f"{str(run / 'manifest.json')!r}: model {name!r} with kwargs {kwargs} cannot be built ({e}); "
            "the manifest is damaged or from another metarec version; restore it or re-train"
        ) from None
    algo = _algorithm(manifest, run)
    ck = load_tensors(run / "checkpoints" / f"{which}.pt", map_location="cpu")
    if not isinstance(ck, Mapping) or not isinstance(ck.get("params"), Mapping):
        raise CheckpointError(
            f"{str(run / 'checkpoints' / f'{which}.pt')!r}: holds no 'params' dict; not a metarec checkpoint; re-train"
        )
    params = _match_params(model, ck["params"], run / "manifest.json", name, kwargs)
    fast, _ = split_params(model, adapt_patterns(algo, model), params)
    state = _match_state(init_algorithm_state(algo, fast), ck.get("state") or {}, run)
    check_finite_weights({**params, **state}, run / "checkpoints" / f"{which}.pt")  # hook (metarec.guard)
    _restore_buffers(model, params, ck.get("buffers"), name, kwargs, patterns, table)
    dev = torch.device(device)
    with torch.no_grad():  # the module holds the loaded weights, so a call swaps only the fast ones
        for k, p in model.named_parameters():
            p.copy_(params[k])
            p.requires_grad_(False)
    model = model.to(dev).eval()
    params = dict(model.named_parameters())
    state = {k: v.detach().to(dev) for k, v in state.items()}
    steps, lr = _eval_defaults(run, algo)
    return MetaModel(model, params, state, algo, table, manifest=manifest, run_dir=run, steps=steps, lr=lr,
                     step=int(ck.get("step", 0)))


def load_adapted(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> AdaptedRecommender:
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
    blob = load_tensors(path / _ADAPTED_FILE, map_location=meta.device)
    try:
        users = IdEncoder.from_json(json.loads((path / _USERS_FILE).read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{str(path / _USERS_FILE)!r}: missing or damaged ({e}); re-create it with 'metarec adapt'") from None
    info = manifest.get("adaptation", {})
    fast = dict(blob.get("fast", {}))
    ref, _ = split_params(meta.model, adapt_patterns(meta.algo, meta.model), meta.params)
    for k, v in ref.items():
        got = fast.get(k)
        if got is None or tuple(got.shape[1:]) != tuple(v.shape):
            shape = None if got is None else tuple(got.shape)
            raise CheckpointError(
                f"{str(path / _ADAPTED_FILE)!r}: fast weight {k!r} has shape {shape}, the model needs (tasks, *{tuple(v.shape)}); "
                "the adapted weights do not belong to this run; re-run 'metarec adapt'"
            )
    check_finite_weights(fast, path / _ADAPTED_FILE)  # hook (metarec.guard)
    return AdaptedRecommender(
        meta, fast, users, blob["task"].cpu().numpy(), int(blob["default_task"]),
        blob["seen_user"].cpu().numpy(), blob["seen_item"].cpu().numpy(),
        per=info.get("per", "user"), steps=info.get("steps"), lr=info.get("lr"),
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
) -> AdaptedRecommender:
    """What ``metarec recommend`` serves from: an adapted directory as saved, or a run's
    meta-learned initialisation; with ``support``, adapted on the fly from the meta-learned
    initialisation (``user``, ``on_diverge`` and ``unknown_items`` as in :meth:`MetaModel.adapt`)."""
    if support is None and read_manifest(path).get("adapted"):
        return load_adapted(path, device=device)
    meta = load_run(path, device=device)
    if support is None:
        return meta.initial()
    return meta.adapt(support, steps=steps, lr=lr, user=user, on_diverge=on_diverge, unknown_items=unknown_items)


def read_support(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a support CSV with a header row ``user,item,rating`` (extra columns are ignored).

    Raises:
        DataError: the file is missing, empty, has no header, or lacks one of the columns.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"support={str(p)!r}: file not found; pass a CSV with columns user,item,rating")
    try:
        df = pd.read_csv(p, dtype={"user": str, "item": str}, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"support={str(p)!r}: the file is empty; it needs a header row 'user,item,rating'") from None
    cols = [str(c).strip() for c in df.columns]
    df.columns = cols
    missing = [c for c in ("user", "item", "rating") if c not in cols]
    if missing:
        headerless = all(_looks_numeric(c) for c in cols)
        why = "has no header row" if headerless else f"has columns {cols}, no {missing[0]!r}{suggest(missing[0], cols)}"
        raise DataError(
            f"support={str(p)!r}: {why}; the first line must be the header 'user,item,rating' "
            "followed by one interaction per line"
        )
    return df[["user", "item", "rating"]]


# ---------------------------------------------------------------------- the meta-model
class MetaModel:
    """A meta-trained model ready to adapt: the model, its meta-learned weights, the run's encoders.

    Build it with :func:`load_run`. Attributes: ``model`` (in eval mode), ``params`` and
    ``state`` (``{name: tensor}``), ``algo`` (:class:`AlgorithmConfig`), ``table`` (the run's
    encoders and side features, no interactions), ``steps`` / ``lr`` (the default adaptation
    budget: the run's ``eval_steps`` / ``eval_lr``, else the algorithm's), ``run_dir``, ``manifest``.
    """

    def __init__(
        self, model: nn.Module, params: dict[str, torch.Tensor], state: dict[str, torch.Tensor], algo: AlgorithmConfig,
        table: InteractionTable, *, manifest: dict[str, Any], run_dir: Path, steps: int | None, lr: float | None,
        step: int = 0,
    ) -> None:
        self.model, self.params, self.state, self.algo, self.table = model, params, state, algo, table
        self.manifest, self.run_dir, self.steps, self.lr, self.step = manifest, run_dir, steps, lr, step
        self.device = next(iter(params.values())).device
        self.dtype = next(iter(params.values())).dtype
        self._fast0, _ = split_params(model, adapt_patterns(algo, model), params)
        self._item_inputs: torch.Tensor | None = None  # MeLU: the catalogue's item feature block, computed once

    # ------------------------------------------------------------------ properties
    @property
    def feedback(self) -> str:
        return self.table.feedback

    @property
    def rating_scale(self) -> tuple[float, float] | None:
        return self.table.rating_scale

    @property
    def user_ids(self) -> IdEncoder:
        return self.table.user_ids

    @property
    def item_ids(self) -> IdEncoder:
        return self.table.item_ids

    def __repr__(self) -> str:
        return (f"MetaModel({self.manifest['model']['name']}, {self.algo.name}, {len(self.user_ids) - 1} users, "
                f"{len(self.item_ids) - 1} items, {self.feedback}, run_dir={str(self.run_dir)!r})")

    # ------------------------------------------------------------------ adaptation
    def initial(self) -> AdaptedRecommender:
        """A recommender with the meta-learned initialisation for every user (no adaptation)."""
        return self._recommender(self._stack([]), IdEncoder([], name="user"), np.zeros(1, np.int64), 0,
                                 np.zeros(0, np.int64), np.zeros(0, np.int64), per="user", steps=0, lr=None)

    def adapt(
        self,
        support: SupportLike,
        *,
        steps: int | None = None,
        lr: float | None = None,
        user: Any = None,
        per: Per = "user",
        columns: Columns | Mapping[str, str] | None = None,
        unknown_items: UnknownItems = "error",
        chunk_size: int | None = 4096,
        on_diverge: OnDiverge = "error",
    ) -> AdaptedRecommender:
        """Adapt to ``support``: one task per user (``per="user"``) or one over every row (``"domain"``).

        Args:
            support: a DataFrame (columns ``user``, ``item``, ``rating``, renamed by ``columns``),
                an :class:`InteractionTable` (its raw ids are used), or a list of
                ``(user, item, rating)`` tuples (``(item, rating)`` pairs when ``user`` is given).
            steps: inner steps (default :attr:`steps`); ``0`` keeps the initialisation.
            lr: inner learning rate (default :attr:`lr`); not allowed when the run learned its rates.
            user: adapt for this user only: rows of other users are dropped, and a frame or
                list without a user column is taken to be this user's.
            per: ``"user"`` or ``"domain"``.
            columns: ``Columns(user=..., item=..., rating=...)`` or ``{"user": "uid", ...}``.
            unknown_items: ``"error"`` (an item id the run's encoder does not know raises
                :class:`DataError` naming it) or ``"fallback"`` (such items become the unknown item).
            chunk_size: tasks per vmapped call (bounds memory); ``None`` = all at once.
            on_diverge: a task whose adapted weights are not finite (too large an ``lr``):
                ``"error"`` (a :class:`ConfigError` naming its users) or ``"fallback"`` (those
                users get the meta-learned initialisation, with a ``UserWarning``).

        Empty support warns (``UserWarning``) and returns the meta-learned initialisation.

        Example:
            >>> rec = meta.adapt([("new-user", 17, 5.0), ("new-user", 3, 1.0)])   # doctest: +SKIP
            >>> rec.recommend("new-user", k=5)                                        # doctest: +SKIP
        """
        if per not in ("user", "domain"):
            raise ConfigError(f"per={per!r}: choose 'user' (one task per user) or 'domain' (one task over every row)"
                              f"{suggest(str(per), ('user', 'domain'))}")
        rows = _support(support, columns, user, self.feedback, self.rating_scale)
        return self._adapt_rows(rows, steps, lr, per, unknown_items, chunk_size, extra_user=user, on_diverge=on_diverge)

    def adapt_many(
        self,
        frame: SupportLike,
        *,
        steps: int | None = None,
        lr: float | None = None,
        columns: Columns | Mapping[str, str] | None = None,
        unknown_items: UnknownItems = "error",
        chunk_size: int | None = 4096,
        on_diverge: OnDiverge = "error",
    ) -> AdaptedRecommender:
        """Adapt every user of ``frame`` (thousands of cold users) in one vmapped call per
        ``chunk_size`` tasks: the tasks are padded into one ``(users, max_support)``
        :class:`EpisodeSet` with vectorised numpy (no per-user Python loop). Same result as
        calling :meth:`adapt` once per user. Arguments as for :meth:`adapt`."""
        rows = _support(frame, columns, None, self.feedback, self.rating_scale)
        return self._adapt_rows(rows, steps, lr, "user", unknown_items, chunk_size, extra_user=None, on_diverge=on_diverge)

    # ------------------------------------------------------------------ internals
    def encode_items(self, items: Iterable[Any], unknown_items: UnknownItems = "error", what: str = "items") -> np.ndarray:
        """Raw item ids -> indices of the run's item encoder (see ``unknown_items`` in :meth:`adapt`)."""
        if unknown_items not in ("error", "fallback"):
            raise ConfigError(f"unknown_items={unknown_items!r}: choose 'error' or 'fallback'"
                              f"{suggest(str(unknown_items), ('error', 'fallback'))}")
        raw = items if isinstance(items, (np.ndarray, pd.Series)) else np.asarray(_as_list(items), dtype=object)
        idx = self.item_ids.encode(raw)
        if unknown_items == "error" and (idx == 0).any():
            bad = pd.unique(np.asarray(raw, dtype=object)[idx == 0])
            shown = ", ".join(repr(py(b)) for b in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise DataError(
                f"{what}: {len(bad)} item id(s) not in the run's item catalogue ({shown}); the model has no "
                "embedding and no side features for them; drop them, or pass unknown_items='fallback' to score "
                "them as the unknown item (index 0)"
            )
        return idx

    def _adapt_rows(self, rows: _Support, steps: int | None, lr: float | None, per: str, unknown_items: str,
                     chunk_size: int | None, extra_user: Any, on_diverge: OnDiverge = "error") -> AdaptedRecommender:
        _check_lr(lr)
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ConfigError(f"chunk_size={chunk_size!r}: must be an int >= 1, or None for one call")
        steps = self._resolve_steps(self.steps if steps is None else steps)
        lr = self.lr if lr is None else lr
        item_idx = self.encode_items(rows.items, unknown_items, what="support")
        raw_users = rows.users
        users = _fit_users(list(raw_users) + ([] if extra_user is None else [extra_user]))
        ucode = users.encode(raw_users)  # (rows,) in 1..U
        if len(raw_users) == 0:
            who = "" if extra_user is None else f" for user {py(extra_user)!r}"
            warnings.warn(
                f"support is empty{who}: no interaction to adapt on; the meta-learned initialisation is used "
                "(pass at least one (user, item, rating) row to personalise)", UserWarning, stacklevel=3,
            )
        uidx = self.user_ids.encode(raw_users)
        ratings = rows.ratings
        n_users = len(users) - 1
        if per == "domain":  # one task over every row; every user is served by it
            n_tasks = 1 if len(raw_users) else 0
            tcode = np.zeros(len(raw_users), np.int64)
            task_of, default = np.zeros(n_users + 1, np.int64), 0
        else:  # one task per user with rows, in encoder order; the rest use the initialisation row
            has = np.zeros(n_users + 1, bool)
            has[ucode] = True
            has[0] = False
            n_tasks = int(has.sum())
            task_of = np.where(has, np.cumsum(has) - 1, n_tasks).astype(np.int64)  # (n_users + 1,)
            tcode, default = task_of[ucode], n_tasks
        fast = self._adapt_tasks(tcode, n_tasks, uidx, item_idx, ratings, steps, lr, chunk_size)
        rec = self._recommender(fast, users, task_of, default, ucode, item_idx, per=per, steps=steps, lr=lr)
        return ensure_finite_adaptation(rec, on_diverge)  # hook (metarec.guard): never serve NaN weights

    def _adapt_tasks(self, tcode: np.ndarray, n_tasks: int, uidx: np.ndarray, iidx: np.ndarray, ratings: np.ndarray,
                     steps: int | None, lr: float | None, chunk_size: int | None) -> dict[str, torch.Tensor]:
        """Fast weights ``{name: (n_tasks + 1, *shape)}``; row ``n_tasks`` is the initialisation."""
        if n_tasks == 0:
            return self._stack([])
        if n_tasks == 1:  # the single-user serving path: eager, no vmap (lower fixed cost per call)
            u, i, r = (torch.from_numpy(np.array(a)).to(self.device) for a in (uidx, iidx, ratings))
            return self._stack([self._adapt_one(u, i, r.to(self.dtype), steps, lr)])
        model, params = self.model, self.params
        if self._decision_only():  # features once; the vmapped inner loop runs the decision layers only
            u, i = (torch.from_numpy(np.asarray(a)).to(self.device) for a in (uidx, iidx))
            model = _DecisionOnly(self.model, self._inputs(u, i), tuple(self._fast0))  # (rows, F) inputs
            params = {k: self.params[k] for k, _ in model.named_parameters()}
            iidx = np.arange(len(iidx))  # each support row now indexes its own input row
        users, items, targets, mask = _pad_tasks(tcode, n_tasks, uidx, iidx, ratings)  # (T, N) each
        size = chunk_size or n_tasks
        parts = []
        for s in range(0, n_tasks, size):
            m = mask[s : s + size]
            width = max(int(m.sum(axis=1).max()), 1)
            support = EpisodeSet(
                torch.from_numpy(users[s : s + size, :width]).to(self.device),
                torch.from_numpy(items[s : s + size, :width]).to(self.device),
                torch.from_numpy(targets[s : s + size, :width]).to(self.device, self.dtype),
                torch.from_numpy(m[:, :width]).to(self.device),
            )
            parts.append(adapt_batch(self.algo, model, params, support, steps, lr, state=self.state))
        return self._stack(parts)

    def _adapt_one(self, users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, steps: int | None,
                   lr: float | None) -> dict[str, torch.Tensor]:
        """One task's fast weights ``{name: (1, *shape)}`` by plain autograd: the same first-order
        update as :func:`adapt_batch` (``fast <- fast - alpha * grad L_support``, rates from the
        run's learned state where it has them), checked equal to it by the tests."""
        cfg = self.algo
        n = self._resolve_steps(steps)
        if lr is not None and cfg.meta_learned_lrs:
            raise ConfigError(f"lr={lr!r}: name={cfg.name!r} adapts with its learned rates (state); leave lr=None")
        lrs, step_lrs = state_lrs(cfg, self.state, self._fast0)
        if step_lrs is not None and n > cfg.inner_steps:
            raise ConfigError(
                f"steps={n}: per-step rates were learned for inner_steps={cfg.inner_steps}; pass steps <= {cfg.inner_steps}"
            )
        alpha = cfg.inner_lr if lr is None else lr
        mask = torch.ones_like(users, dtype=torch.bool)
        loss_fn = LOSSES[cfg.loss]
        if self._decision_only():  # the features do not adapt: compute them once, not once per step
            net: nn.Module = _DecisionOnly(self.model, self._inputs(users, items), tuple(self._fast0))
            users, items = torch.zeros_like(items), torch.arange(len(items), device=items.device)
        else:
            net = self.model
        cur = {k: v.detach() for k, v in self._fast0.items()}
        for step in range(n):
            leaves = {k: v.requires_grad_() for k, v in cur.items()}
            with torch.enable_grad():
                pred = functional_call(net, dict(leaves), (users, items), tie_weights=False)
                loss = loss_fn(pred, targets, mask)
                grads = torch.autograd.grad(loss, list(leaves.values()))
            with torch.no_grad():
                for (k, p), g in zip(leaves.items(), grads, strict=True):
                    a = step_lrs[k][step] if step_lrs is not None else lrs[k] if lrs is not None else alpha
                    cur[k] = p.detach() - a * g
        return {k: v.detach().unsqueeze(0) for k, v in cur.items()}

    def _forward(self, fast: Mapping[str, torch.Tensor], users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The model with ``fast`` in place of its fast weights (the module holds the others)."""
        return functional_call(self.model, dict(fast), (users, items), tie_weights=False)

    def _score_user(self, fast: Mapping[str, torch.Tensor], uidx: int, cand: torch.Tensor) -> torch.Tensor:
        """One user's raw scores of items ``cand`` ``(C,)`` with fast weights ``fast``: ``(C,)``."""
        if not self._decision_only():
            return self._forward(fast, torch.full_like(cand, uidx), cand)
        # MeLU: x = [user block, item block], so the first layer is W_u u + W_i x_i + b: the user
        # part once, the item blocks of the catalogue computed once per MetaModel.
        m = self.model
        if m.item_features is not None and self._item_inputs is None:
            with torch.no_grad():
                self._item_inputs = m.item_features(torch.arange(len(self.item_ids), device=self.device))  # (items, Fi)
        w = {**self.params, **fast}
        first = m.decision[0] if len(m.decision) else m.head
        name = "decision.0" if len(m.decision) else "head"
        weight, bias = w[f"{name}.weight"], w[f"{name}.bias"]
        fu = m.user_features.out_dim if m.user_features is not None else 0
        h = bias.unsqueeze(0)  # (1, H)
        if m.user_features is not None:
            h = h + F.linear(m.user_features(torch.tensor([uidx], device=self.device)), weight[:, :fu])  # (1, H)
        if self._item_inputs is not None:
            h = h + F.linear(self._item_inputs[cand], weight[:, fu:])  # (C, H)
        h = h.expand(len(cand), -1)
        if first is m.head:
            return h.squeeze(-1)
        h = F.relu(h)
        for i in range(1, len(m.decision)):
            h = F.relu(F.linear(h, w[f"decision.{i}.weight"], w[f"decision.{i}.bias"]))
        return F.linear(h, w["head.weight"], w["head.bias"]).squeeze(-1)  # (C,)

    def _decision_only(self) -> bool:
        """Whether only MeLU's decision layers / head adapt, so the feature inputs can be computed
        once per call (same numbers as the full forward; the tests check it)."""
        return isinstance(self.model, MeLU) and not self.model.training and encoder_is_fixed(self.model, self._fast0)

    def _inputs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """MeLU's decision-layer inputs (user and item feature blocks): ``(R,), (R,) -> (R, F)``."""
        with torch.no_grad():
            return self.model.encode(users, items)

    def _resolve_steps(self, steps: int | None) -> int:
        n = (0 if self.algo.name == "global" else self.algo.inner_steps) if steps is None else steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"steps={steps!r}: must be an int >= 0; pass steps=None for the run's default")
        return check_steps(n, "steps")  # hook (metarec.limits): at most MAX_STEPS

    def _stack(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {k: torch.cat([p[k] for p in parts] + [v.detach().unsqueeze(0)]) for k, v in self._fast0.items()}

    def _recommender(self, fast, users, task_of, default, seen_user, seen_item, *, per, steps, lr) -> AdaptedRecommender:
        return AdaptedRecommender(self, fast, users, task_of, default, np.asarray(seen_user, np.int64),
                                  np.asarray(seen_item, np.int64), per=per, steps=steps, lr=lr)


# ---------------------------------------------------------------------- the adapted recommender
class AdaptedRecommender:
    """Per-user (or per-domain) fast weights over a :class:`MetaModel`: predict and recommend by raw id.

    Users with a support set are scored with their own adapted weights (``per="domain"``: every
    user with the domain's); any other user with the meta-learned initialisation.
    """

    def __init__(
        self, meta: MetaModel, fast: dict[str, torch.Tensor], users: IdEncoder, task_of: np.ndarray, default_task: int,
        seen_user: np.ndarray, seen_item: np.ndarray, *, per: str, steps: int | None, lr: float | None,
    ) -> None:
        self.meta, self.fast, self.per, self.steps, self.lr = meta, fast, per, steps, lr
        self._users, self._task_of, self._default = users, task_of, default_task
        self._seen_user, self._seen_item = seen_user, seen_item
        self._catalogue = torch.arange(1, len(meta.item_ids), device=meta.device)  # (n_items,) every known item

    @property
    def users(self) -> list[Any]:
        """The users that brought support (or were named with ``user=``), raw ids."""
        return self._users.values

    @property
    def n_tasks(self) -> int:
        """Adapted tasks (the initialisation row excluded)."""
        return int(next(iter(self.fast.values())).shape[0]) - 1

    def __repr__(self) -> str:
        return f"AdaptedRecommender({self.n_tasks} task(s), per={self.per!r}, {len(self.users)} user(s), steps={self.steps})"

    def is_adapted(self, user: Any) -> bool:
        """Whether ``user`` is served by adapted weights (its own, or its domain's), not the initialisation."""
        return int(self._tasks(np.asarray([user], dtype=object))[0]) < self.n_tasks

    def predict(
        self, users: Iterable[Any] | Any, items: Iterable[Any], *, unknown_items: UnknownItems = "error", clip: bool = True,
    ) -> np.ndarray:
        """Predicted ratings (explicit, clipped to the rating scale unless ``clip=False``) or logits
        (implicit) for aligned raw ``users`` and ``items`` (one user is broadcast over ``items``): ``(P,)``."""
        item_list = _as_list(items)
        user_list = _as_list(users) if _is_seq(users) else [users] * len(item_list)
        if len(user_list) != len(item_list):
            raise DataError(f"predict: {len(user_list)} users but {len(item_list)} items; pass aligned lists "
                            "(or one user to score many items)")
        iidx = self.meta.encode_items(np.asarray(item_list, dtype=object), unknown_items, what="items")
        raw_u = np.asarray(user_list, dtype=object)
        uidx = self.meta.user_ids.encode(raw_u)
        task = self._tasks(raw_u)
        scores = self._score(task, uidx, iidx)
        check_scores(scores, adapted=bool((task < self.n_tasks).any()))  # hook (metarec.guard), before clipping
        return (self._clip(scores) if clip else scores).cpu().numpy()

    def recommend(
        self, user: Any, k: int = 10, *, exclude_seen: bool = True, candidates: Iterable[Any] | None = None,
    ) -> list[tuple[Any, float]]:
        """Top-``k`` ``(item, score)`` for ``user``, best first (ties broken by item index).

        Args:
            user: a raw user id (cold users welcome).
            k: how many items (fewer when there are fewer candidates).
            exclude_seen: leave out the items of this user's support set.
            candidates: raw item ids to rank (default: the whole catalogue of the run's item
                encoder, feature-only items included); unknown ids are an error.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r}: must be an int >= 1; pass e.g. k=10")
        if candidates is None:
            cand = self._catalogue
        else:
            cand = torch.from_numpy(self.meta.encode_items(np.asarray(_as_list(candidates), dtype=object), what="candidates"))
            cand = torch.unique(cand).to(self.meta.device)
        one = np.empty(1, dtype=object)
        one[0] = user
        task = int(self._tasks(one)[0])
        uidx = int(self.meta.user_ids.encode(one)[0])
        with torch.no_grad():
            scores = self.meta._score_user({n: v[task] for n, v in self.fast.items()}, uidx, cand)
        check_scores(scores, user=user, adapted=task < self.n_tasks)  # hook (metarec.guard): never NaN or []
        if exclude_seen:
            code = int(self._users.encode(one)[0])
            seen = self._seen_item[self._seen_user == code] if code else np.zeros(0, np.int64)
            if len(seen):
                drop = torch.isin(cand, torch.from_numpy(seen).to(cand.device))
                scores = scores.masked_fill(drop, -math.inf)
        n = min(k, int(torch.isfinite(scores).sum()))
        top = torch.topk(scores, n).indices if n else torch.zeros(0, dtype=torch.long)
        vals = self._clip(scores[top]).tolist()
        items = self.meta.item_ids.decode(cand[top].cpu().numpy())
        return list(zip(items, (float(v) for v in vals), strict=True))

    @holds_folder("path", what="adapted directory", option="--out")  # hook (metarec.runlock)
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a run-like directory readable by :func:`load_adapted` (and by :func:`load_run`)."""
        out = Path(path)
        if (out / "manifest.json").exists() and not overwrite:
            raise ConfigError(f"path={str(out)!r}: already holds a run directory; choose an empty folder or pass overwrite=True (--overwrite)")
        meta = self.meta
        out.mkdir(parents=True, exist_ok=True)
        manifest = {k: v for k, v in meta.manifest.items() if k not in ("adapted", "adaptation")}
        manifest.update({"adapted": True, "adaptation": {
            "per": self.per, "steps": self.steps, "lr": self.lr, "tasks": self.n_tasks, "users": len(self.users),
            "source_run": str(meta.run_dir), "source_step": meta.step,
        }})
        save_table_meta(meta.table, out)
        copy_fingerprint(meta.run_dir, out)  # hook (metarec.fingerprint)
        if (meta.run_dir / "config.json").is_file():
            atomic_write_json(out / "config.json", json.loads((meta.run_dir / "config.json").read_text()))
        buffers = {k: v.detach().cpu() for k, v in meta.model.named_buffers() if k.startswith("known_")}
        save_tensors(out / "checkpoints" / "best.pt", {
            "params": {k: v.detach().cpu() for k, v in meta.params.items()},
            "state": {k: v.detach().cpu() for k, v in meta.state.items()},
            "step": meta.step, "buffers": buffers,
        })
        save_tensors(out / _ADAPTED_FILE, {
            "fast": {k: v.detach().cpu() for k, v in self.fast.items()},
            "task": torch.from_numpy(np.asarray(self._task_of, np.int64)),
            "default_task": self._default,
            "seen_user": torch.from_numpy(self._seen_user), "seen_item": torch.from_numpy(self._seen_item),
        })
        atomic_write_json(out / _USERS_FILE, self._users.to_json())
        atomic_write_json(out / "manifest.json", manifest)  # last: a folder with a manifest is complete
        return out

    # ------------------------------------------------------------------ internals
    def _tasks(self, raw_users: np.ndarray) -> np.ndarray:
        """Task row of each raw user: its own, the domain's, or the initialisation."""
        if len(raw_users) == 0:
            return np.zeros(0, np.int64)
        code = self._users.encode(raw_users) if len(self._users) > 1 else np.zeros(len(raw_users), np.int64)
        return np.where(code > 0, self._task_of[code], self._default).astype(np.int64)

    def _score(self, task: np.ndarray, uidx: np.ndarray, iidx: np.ndarray) -> torch.Tensor:
        """Raw scores of (task, user, item) triples, grouped by task and padded: ``(P,)``."""
        out = torch.empty(len(task), dtype=self.meta.dtype, device=self.meta.device)
        if len(task) == 0:
            return out
        groups, inv = np.unique(task, return_inverse=True)
        inv = inv.reshape(-1)
        counts = np.bincount(inv)
        order = np.argsort(inv, kind="stable")
        pos = np.empty(len(inv), np.int64)
        pos[order] = np.arange(len(inv)) - np.repeat(np.cumsum(counts) - counts, counts)
        width = int(counts.max())
        per_call = max(1, _SCORE_CELLS // width)
        for s in range(0, len(groups), per_call):
            sel = (inv >= s) & (inv < s + per_call)
            g, p = inv[sel] - s, pos[sel]
            n = min(per_call, len(groups) - s)
            U = np.zeros((n, width), np.int64)  # (groups, width)
            Itm = np.zeros((n, width), np.int64)
            U[g, p], Itm[g, p] = uidx[sel], iidx[sel]
            rows = torch.from_numpy(groups[s : s + n]).to(self.meta.device)
            fast = {k: v[rows] for k, v in self.fast.items()}
            with torch.no_grad():
                pred = predict_batch(self.meta.model, self.meta.params, fast,
                                     torch.from_numpy(U).to(self.meta.device), torch.from_numpy(Itm).to(self.meta.device))
            out[torch.from_numpy(np.flatnonzero(sel)).to(out.device)] = pred[torch.from_numpy(g), torch.from_numpy(p)]
        return out

    def _clip(self, scores: torch.Tensor) -> torch.Tensor:
        scale = self.meta.rating_scale
        if self.meta.feedback == "explicit" and scale is not None:
            return scores.clamp(scale[0], scale[1])
        return scores


# ---------------------------------------------------------------------- helpers
class _DecisionOnly(RecModel):
    """MeLU's decision layers and head over precomputed input rows: ``forward(users, rows) =
    head(relu(... relu(decision_0(x[rows]))))`` (``users`` unused). It shares the MeLU module's
    layers (same parameter names), so the engine's inner loop runs on it unchanged; the feature
    embeddings are not adapted, so their output ``x`` (``MeLU.encode`` of every support row, all
    tasks at once) is computed once instead of once per step, and ``MeLU.decide`` runs on it."""

    def __init__(self, melu: MeLU, x: torch.Tensor, fast: tuple[str, ...]) -> None:
        super().__init__(fast)
        self.head_patterns = melu.head_patterns
        self.decision, self.head = melu.decision, melu.head
        self._decide = melu.decide  # runs the shared layers above
        self.x = x  # (R, F)

    def forward(self, users: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self._decide(self.x[rows])  # (..., N)


def _pad_tasks(tcode: np.ndarray, n_tasks: int, uidx: np.ndarray, iidx: np.ndarray, ratings: np.ndarray):
    """Rows grouped by task into padded ``(T, N)`` arrays, in row order within a task (vectorised)."""
    counts = np.bincount(tcode, minlength=n_tasks)
    order = np.argsort(tcode, kind="stable")
    pos = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)  # position within its task
    t = tcode[order]
    width = max(int(counts.max()), 1)
    users = np.zeros((n_tasks, width), np.int64)  # (tasks, support)
    items = np.zeros((n_tasks, width), np.int64)
    targets = np.zeros((n_tasks, width), np.float64)
    mask = np.zeros((n_tasks, width), bool)
    users[t, pos], items[t, pos], targets[t, pos], mask[t, pos] = uidx[order], iidx[order], ratings[order], True
    return users, items, targets, mask


class _Support(NamedTuple):
    """Validated raw support rows: ``users``, ``items`` (object arrays), ``ratings`` (float64)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray


def _support(support: Any, columns: Any, user: Any, feedback: str, scale: tuple[float, float] | None) -> _Support:
    """Any accepted support form -> validated raw arrays (``user`` fills or filters the user ids)."""
    if isinstance(support, InteractionTable):
        df = support.to_frame(raw_ids=True)
        u, i, r = _objects(df["user"]), _objects(df["item"]), df["rating"].to_numpy()
    elif isinstance(support, pd.DataFrame):
        u, i, r = _columns(support, columns, user is not None, feedback)
    elif isinstance(support, (list, tuple)) or (isinstance(support, np.ndarray) and support.ndim == 2):
        u, i, r = _from_tuples(list(support), user)
    else:
        raise DataError(
            f"support: expected a DataFrame, an InteractionTable or a list of (user, item, rating) tuples, "
            f"got {type(support).__name__}; e.g. meta.adapt([('u1', 'i9', 4.0)])"
        )
    if u is None:
        u = np.empty(len(i), dtype=object)
        u[:] = [user] * len(i)
    elif user is not None and len(u):
        keep = IdEncoder([user], name="user").encode(u) > 0
        u, i, r = u[keep], i[keep], r[keep]
    for role, ids in (("user", u), ("item", i)):
        miss = pd.isna(ids) if len(ids) else np.zeros(0, bool)
        if miss.any():
            raise DataError(f"support {role} ids: {int(miss.sum())} missing, first at row {int(np.flatnonzero(miss)[0])}; "
                            f"every interaction needs a {role}; drop those rows")
    ratings = _numbers(r)
    if feedback == "implicit" and not np.isin(ratings, (0.0, 1.0)).all():
        k = int(np.flatnonzero(~np.isin(ratings, (0.0, 1.0)))[0])
        raise DataError(f"support ratings: {ratings[k]:g} at row {k}: this run has implicit feedback, ratings must be 0 "
                        "or 1; binarise them first (e.g. rating >= 4)")
    if feedback == "explicit" and scale is not None:
        off = (ratings < scale[0]) | (ratings > scale[1])
        if off.any():
            k = int(np.flatnonzero(off)[0])
            raise DataError(f"support ratings: {ratings[k]:g} at row {k} is outside the run's rating_scale="
                            f"({scale[0]:g}, {scale[1]:g}); fix or clip the ratings")
    return _Support(u, i, ratings)


def _numbers(r: Any) -> np.ndarray:
    try:
        out = np.asarray(r, dtype=np.float64)
    except (TypeError, ValueError):
        out = pd.to_numeric(pd.Series(r), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(f"support ratings: {py(np.asarray(r, dtype=object)[k])!r} at row {k} is not a finite number; "
                        "ratings must be numbers; clean or drop those rows")
    return out


def _objects(x: Any) -> np.ndarray:
    out = np.empty(len(x), dtype=object)
    out[:] = list(x.tolist() if hasattr(x, "tolist") else x)
    return out


def _columns(frame: pd.DataFrame, columns: Any, user_given: bool, feedback: str):
    if columns is None:
        c = {"user": "user", "item": "item", "rating": "rating"}
    elif isinstance(columns, Columns):
        c = {"user": columns.user, "item": columns.item, "rating": columns.rating}
    elif isinstance(columns, Mapping):
        unknown = [k for k in columns if k not in ("user", "item", "rating")]
        if unknown:
            raise ConfigError(f"columns: unknown role {unknown[0]!r}; roles are 'user', 'item', 'rating'"
                              f"{suggest(unknown[0], ('user', 'item', 'rating'))}; pass e.g. columns={{'user': 'uid'}}")
        c = {"user": "user", "item": "item", "rating": "rating", **dict(columns)}
    else:
        raise ConfigError(f"columns: expected Columns(...) or a dict, got {type(columns).__name__}")
    out: dict[str, Any] = {}
    for role, col in c.items():
        if col is not None and col in frame.columns:
            out[role] = frame[col].to_numpy()
        elif role == "user" and user_given:
            out[role] = None
        elif role == "rating" and col is None and feedback == "implicit":
            out[role] = np.ones(len(frame))
        elif len(frame.columns) == 0 and len(frame) == 0:
            out[role] = np.zeros(0) if role == "rating" else None if role == "user" else np.zeros(0, dtype=object)
        else:
            raise DataError(
                f"support columns.{role}={col!r}: column not found; the frame has {list(frame.columns)}"
                f"{suggest(str(col), [str(x) for x in frame.columns])}; pass columns={{{role!r}: <the right name>}}"
            )
    users = None if out["user"] is None else _objects(out["user"])
    return users, _objects(out["item"]), out["rating"]


def _from_tuples(rows: list[Any], user: Any):
    if not rows:
        return (None if user is not None else np.zeros(0, dtype=object)), np.zeros(0, dtype=object), np.zeros(0)
    lens = {len(r) if isinstance(r, (tuple, list, np.ndarray)) else -1 for r in rows}
    if lens == {3}:
        u, i, r = zip(*rows, strict=True)
        return _objects(u), _objects(i), r
    if lens == {2} and user is not None:
        i, r = zip(*rows, strict=True)
        return None, _objects(i), r
    raise DataError(
        f"support[0]={rows[0]!r}: expected (user, item, rating) tuples, all of length 3 (or (item, rating) pairs "
        "with user=...); e.g. meta.adapt([('u1', 'i9', 4.0)]) or meta.adapt([('i9', 4.0)], user='u1')"
    )


def _fit_users(raw: list[Any]) -> IdEncoder:
    try:
        return IdEncoder.fit(raw, name="user")
    except ValueError as e:
        raise DataError(f"support user ids: {e}; the same user is spelled two ways (e.g. 5 and '5'); use one type") from None


def _as_list(x: Any) -> list[Any]:
    if isinstance(x, (pd.Series, pd.Index, np.ndarray)):
        return list(x.tolist())
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        return [x]
    return list(x)


def _is_seq(x: Any) -> bool:
    return isinstance(x, (list, tuple, np.ndarray, pd.Series, pd.Index))


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _check_lr(lr: Any) -> None:
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0)):
        raise ConfigError(f"lr={lr!r}: must be a finite number > 0; pass e.g. lr=0.01, or None for the run's default")


def _section(manifest: dict[str, Any], key: str, run: Path) -> dict[str, Any]:
    sec = manifest.get(key)
    if not isinstance(sec, dict):
        raise CheckpointError(f"{str(run / 'manifest.json')!r}: no {key!r} section; the run directory is damaged; re-train")
    return sec


def _algorithm(manifest: dict[str, Any], run: Path) -> AlgorithmConfig:
    raw = _section(manifest, "algorithm", run)
    names = {f.name for f in fields(AlgorithmConfig)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in names}
    try:
        return AlgorithmConfig(**kw)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{str(run / 'manifest.json')!r}: algorithm {raw!r} is invalid ({e}); restore it or re-train") from None


def _match_params(model: nn.Module, saved: Mapping[str, Any], where: Path, name: str, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The checkpoint's parameters, checked name by name and shape by shape against the model."""
    built = dict(model.named_parameters())
    for k, p in built.items():
        v = saved.get(k)
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(
                f"{str(where)!r}: model {name!r} with kwargs {kwargs} has parameter {k!r} of shape {tuple(p.shape)}, "
                "which the checkpoint lacks; the manifest's model config does not match the weights; restore "
                "manifest.json or re-train"
            )
        if tuple(v.shape) != tuple(p.shape):
            raise CheckpointError(
                f"{str(where)!r}: parameter {k!r}: the checkpoint holds shape {tuple(v.shape)} but model {name!r} with "
                f"kwargs {kwargs} builds {tuple(p.shape)}; the manifest's model config does not match the weights; "
                "restore manifest.json or re-train"
            )
    extra = [k for k in saved if k not in built]
    if extra:
        raise CheckpointError(
            f"{str(where)!r}: the checkpoint has parameter {extra[0]!r} (and {len(extra) - 1} more) that model {name!r} "
            f"with kwargs {kwargs} does not; the manifest's model config does not match the weights; restore it or re-train"
        )
    return {k: saved[k].detach().to(built[k].dtype) for k in built}


def _match_state(ref: dict[str, torch.Tensor], saved: Mapping[str, Any], run: Path) -> dict[str, torch.Tensor]:
    for k, v in ref.items():
        got = saved.get(k)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(v.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else None
            raise CheckpointError(
                f"{str(run)!r}: algorithm state {k!r} has shape {shape} in the checkpoint, the algorithm needs "
                f"{tuple(v.shape)}; the manifest's algorithm does not match the weights; restore it or re-train"
            )
    return {k: saved[k].detach() for k in ref}


def _restore_buffers(model: nn.Module, params: dict[str, torch.Tensor], saved: Any, name: str, kwargs: dict[str, Any],
                     patterns: Any, table: InteractionTable) -> None:
    """Restore the id models' known-id buffers.

    Saved buffers win (adapted directories store them). A training run's checkpoint does not
    hold them, so they are recovered from the weights: an id-table row that differs from the
    seeded initialisation was trained (known); a row still equal to it never received a
    gradient (Adam leaves such rows exactly unchanged) and is served by the learned ``unknown``
    vector, as meta-training did for cold ids.
    """
    if not hasattr(model, "set_known"):
        return
    if isinstance(saved, Mapping) and "known_users" in saved and "known_items" in saved:
        ku, ki = saved["known_users"], saved["known_items"]
        if ku.shape == model.known_users.shape and ki.shape == model.known_items.shape:
            model.known_users.copy_(ku.bool())
            model.known_items.copy_(ki.bool())
            return
    init = dict(build_model(name, table, adapt=tuple(patterns) if patterns else None, **kwargs).named_parameters())
    known = {"user": torch.zeros_like(model.known_users), "item": torch.zeros_like(model.known_items)}
    for mod_name, mod in model.named_modules():
        side = mod_name.split("_")[0]
        if isinstance(mod, IdEmbedding) and side in known:
            key = f"{mod_name}.weight"
            known[side] |= (params[key] != init[key]).any(dim=1)
    model.set_known(users=known["user"].nonzero().reshape(-1).numpy(), items=known["item"].nonzero().reshape(-1).numpy())


def _eval_defaults(run: Path, algo: AlgorithmConfig) -> tuple[int | None, float | None]:
    """The run's evaluation budget (``algorithm.eval_steps`` / ``eval_lr`` of config.json)."""
    p = run / "config.json"
    if not p.is_file():
        return None, None
    try:
        a = json.loads(p.read_text()).get("algorithm", {})
    except (json.JSONDecodeError, AttributeError) as e:
        raise CheckpointError(f"{str(p)!r}: not valid JSON ({e}); the run directory is damaged") from None
    steps = a.get("eval_steps")
    lr = None if algo.meta_learned_lrs else a.get("eval_lr")
    return (int(steps) if isinstance(steps, int) else None), (float(lr) if isinstance(lr, (int, float)) else None)

