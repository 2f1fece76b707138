"""A loaded run of any method: :class:`RunModel`, one class over any
:class:`~metarec.methods.Fitted` and the run's encoders.

``adapt`` parses the support (:func:`metarec.recommend.support.parse_support`), groups it into
tasks (one per user, or one over every row), pads them into ``(T, N)``
:class:`~metarec.episodes.batch.EpisodeSet` chunks and hands each chunk to
``fitted.adapt(support, steps=, lr=)``: the MAML family runs its inner loop there, an amortised
learner its forward pass, a cross-domain method its user-vector steps, popularity nothing. The
result is a :class:`~metarec.recommend.recommender.Recommender`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from metarec._errors import ConfigError
from metarec.config.limits import check_steps
from metarec.data.encoding import IdEncoder
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.methods import Adapted, Fitted, fitted_place
from metarec.methods.adapted import concat_adapted
from metarec.recommend.recommender import Recommender, TaskSupport
from metarec.recommend.support import (
    SupportRows,
    SupportTasks,
    UnknownItems,
    check_lr,
    encode_items,
    group_tasks,
    pad_tasks,
    parse_support,
)
from metarec.runs.guard import OnDiverge, ensure_finite_adaptation

__all__ = ["Per", "RunModel", "SupportLike"]


Per = Literal["user", "domain"]
SupportLike: TypeAlias = "pd.DataFrame | InteractionTable | Sequence[tuple[Any, ...]]"

_ENGINE_PARTS = ("model", "params", "state", "algo")


class RunModel:
    """A trained method with its run's encoders, ready to adapt to raw-id support input.

    Build it with :func:`~metarec.recommend.load.load_run` (or ``RunModel(fitted)`` for a
    method trained in memory). :meth:`initial`, :meth:`adapt` and :meth:`adapt_many` return a
    :class:`~metarec.recommend.recommender.Recommender`.

    Attributes:
        fitted: the :class:`~metarec.methods.Fitted` (any method).
        name: the method's name; table: the run's encoders and side features (no interactions).
        steps, lr: the default adaptation budget (the run's ``eval_steps`` / ``eval_lr`` for
            the MAML family, a cross-domain method's choice on meta-val; ``None``: the method
            decides).
        run_dir, manifest, step: where it was loaded from, its manifest and checkpoint step.
        device, dtype: where the support tensors go, and the dtype of the scores.

    A run of the MAML family also shows its parts ``model``, ``params``, ``state`` and ``algo``
    (those of ``fitted``; the serving layer's batched kernels read them).

    Example:
        >>> from metarec.data.synthetic_personal import make_taste_table
        >>> from metarec.episodes.splits import random_split
        >>> from metarec.methods.popularity import PopularityMethod
        >>> from metarec.methods import FitData
        >>> table = make_taste_table(n_users=30, n_items=20, per_user=8, seed=0)
        >>> splits = random_split(table, "user", (0.6, 0.2, 0.2), n_query=3, min_interactions=5)
        >>> run = RunModel(PopularityMethod().fit(FitData(table, splits)))
        >>> rec = run.adapt([("new-user", table.item_ids.values[0], 5.0)])
        >>> len(rec.recommend("new-user", k=3))
        3
    """

    def __init__(
        self,
        fitted: Fitted,
        *,
        manifest: dict[str, Any] | None = None,
        run_dir: str | Path | None = None,
        item_domains: np.ndarray | None = None,
        step: int = 0,
        which: str = "best",
    ) -> None:
        self.fitted, self.table, self.name = fitted, fitted.table, fitted.name
        self.manifest = manifest or {}
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.item_domains, self.step, self.which = item_domains, step, which
        # a Fitted may state its default adaptation budget (the MAML family, cross-domain)
        self.steps: int | None = getattr(fitted, "steps", None)
        self.lr: float | None = getattr(fitted, "lr", None)
        self.device, self.dtype = fitted_place(fitted)

    def __getattr__(self, name: str) -> Any:
        if name in _ENGINE_PARTS:  # the MAML family's parts, for its batched serving kernels
            fitted = self.__dict__.get("fitted")
            if fitted is not None and hasattr(fitted, name):
                return getattr(fitted, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        model = (self.manifest.get("model") or {}).get("name")
        return (
            f"RunModel({self.name}{f', {model}' if model else ''}, {len(self.user_ids) - 1} users, "
            f"{len(self.item_ids) - 1} items, {self.feedback}, run_dir={str(self.run_dir)!r})"
        )

    # ------------------------------------------------------------------ the run's encoders
    @property
    def feedback(self) -> str:
        return self.table.feedback

    @property
    def rating_scale(self) -> tuple[float, float] | None:
        return self.table.rating_scale

    @property
    def ranks(self) -> bool:
        """Whether the run's scores order items and are not ratings, so that they are never
        clipped to the rating scale: a method whose scores rank (``score_kind = "rank"``: the
        ranking baselines, ``elae``, ``metatower``, count popularity) or a run trained to rank on
        ratings (:mod:`metarec.config.objective`)."""
        f = self.fitted
        if getattr(f, "score_kind", "rating") == "rank":
            return True
        algo = getattr(f, "algo", None)
        return getattr(f, "ranking", None) is not None or getattr(algo, "ranking", None) is not None

    @property
    def user_ids(self) -> IdEncoder:
        return self.table.user_ids

    @property
    def item_ids(self) -> IdEncoder:
        return self.table.item_ids

    def encode_items(
        self, items: Iterable[Any], unknown_items: UnknownItems = "error", what: str = "items"
    ) -> np.ndarray:
        """Raw item ids -> indices of the run's item encoder (see ``unknown_items`` in :meth:`adapt`)."""
        return encode_items(self.item_ids, items, unknown_items, what)

    # ------------------------------------------------------------------ adaptation
    def initial(self) -> Recommender:
        """A recommender that serves every user without adaptation: the method adapted to an
        empty support of each user (the meta-learned initialisation, a transferred user vector,
        the popularity scores, ...)."""
        empty = _tasks(np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64))
        return Recommender(
            self,
            None,
            empty,
            IdEncoder([], name="user"),
            np.zeros(1, np.int64),
            0,
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            per="user",
            steps=0,
            lr=None,
        )

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
    ) -> Recommender:
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
            chunk_size: tasks per ``fitted.adapt`` call (bounds memory); ``None`` = all at once.
            on_diverge: a task whose adapted scores are not finite (too large an ``lr``):
                ``"error"`` (a :class:`ConfigError` naming its users) or ``"fallback"`` (those
                users get the initialisation, with a ``UserWarning``).

        Empty support warns (``UserWarning``) and returns the initialisation.

        Example:
            >>> rec = run.adapt([("new-user", 17, 5.0), ("new-user", 3, 1.0)])   # doctest: +SKIP
            >>> rec.recommend("new-user", k=5)                                       # doctest: +SKIP
        """
        _check_on_diverge(on_diverge)
        rows = parse_support(support, columns, user, self.feedback, self.rating_scale)
        return self._adapt_rows(
            rows, steps, lr, per, unknown_items, chunk_size, extra_user=user, on_diverge=on_diverge
        )

    def adapt_many(
        self,
        frame: SupportLike,
        *,
        steps: int | None = None,
        lr: float | None = None,
        columns: Columns | Mapping[str, str] | None = None,
        unknown_items: UnknownItems = "error",
        chunk_size: int | None = 4096,
        progress: bool = False,
        on_diverge: OnDiverge = "error",
    ) -> Recommender:
        """Adapt every user of ``frame`` (thousands of cold users) in one ``fitted.adapt`` call
        per ``chunk_size`` tasks: the tasks are padded into one ``(users, max_support)``
        :class:`EpisodeSet` with vectorised numpy (no per-user Python loop). Same result as
        calling :meth:`adapt` once per user. Arguments as for :meth:`adapt`; ``progress`` shows a
        progress bar over the chunks."""
        _check_on_diverge(on_diverge)
        rows = parse_support(frame, columns, None, self.feedback, self.rating_scale)
        return self._adapt_rows(
            rows,
            steps,
            lr,
            "user",
            unknown_items,
            chunk_size,
            extra_user=None,
            progress=progress,
            on_diverge=on_diverge,
        )

    def adapt_tasks(
        self,
        support: TaskSupport,
        *,
        steps: int | None = None,
        lr: float | None = None,
        chunk_size: int | None = None,
        progress: bool = False,
    ) -> Adapted | None:
        """``fitted.adapt`` over encoded, padded tasks (``None`` for no task), ``chunk_size``
        tasks per call, each chunk cut to its own longest task."""
        n = support.n_tasks
        if n == 0:
            return None
        size = chunk_size or n
        parts = []
        for s in tqdm(
            range(0, n, size), desc="adapt", unit="chunk", disable=not progress, leave=False
        ):
            m = support.mask[s : s + size]
            width = max(int(m.sum(axis=1).max()), 1)
            chunk = EpisodeSet(
                torch.from_numpy(support.users[s : s + size, :width]).to(self.device),
                torch.from_numpy(support.items[s : s + size, :width]).to(self.device),
                torch.from_numpy(support.targets[s : s + size, :width]).to(self.device, self.dtype),
                torch.from_numpy(m[:, :width]).to(self.device),
            )
            parts.append(self.fitted.adapt(chunk, steps=steps, lr=lr))
        return concat_adapted(parts)

    def zero_shot(self, users: np.ndarray) -> Adapted:
        """The method adapted to an empty support of each user ``users int64 (G,)``: one task
        per user, the initialisation (what a user without support is served)."""
        u = torch.from_numpy(np.asarray(users, np.int64).reshape(-1, 1)).to(self.device)  # (G, 1)
        empty = EpisodeSet(
            u,
            torch.zeros_like(u),
            torch.zeros(u.shape, dtype=self.dtype, device=self.device),
            torch.zeros(u.shape, dtype=torch.bool, device=self.device),
        )
        return self.fitted.adapt(empty, steps=0)

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
    ) -> Recommender:
        check_lr(lr)
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ConfigError(
                f"chunk_size={chunk_size!r}: must be an int >= 1, or None for one call"
            )
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
                raise ConfigError(
                    f"steps={steps!r}: must be an int >= 0; pass steps=None for the run's default"
                )
            check_steps(steps, "steps")  # hook (metarec.config.limits): at most MAX_STEPS
        t = group_tasks(
            rows,
            self.user_ids,
            self.item_ids,
            per=per,
            unknown_items=unknown_items,
            extra_user=extra_user,
        )
        return self._adapt_grouped(t, steps, lr, per, chunk_size, progress, on_diverge)

    def adapt_encoded(
        self,
        tasks: SupportTasks,
        *,
        steps: int | None = None,
        lr: float | None = None,
        on_diverge: OnDiverge = "error",
    ) -> Recommender:
        """Adapt to support rows already validated and encoded, one task per user
        (:func:`~metarec.recommend.support.encoded_tasks`: a server's requests): the rows go
        straight to ``fitted.adapt``, nothing is decoded, parsed or encoded again. Arguments as
        for :meth:`adapt`."""
        _check_on_diverge(on_diverge)
        check_lr(lr)
        if steps is not None:
            check_steps(steps, "steps")  # hook (metarec.config.limits): at most MAX_STEPS
        return self._adapt_grouped(tasks, steps, lr, "user", 4096, False, on_diverge)

    def _adapt_grouped(
        self,
        t: SupportTasks,
        steps: int | None,
        lr: float | None,
        per: str,
        chunk_size: int | None,
        progress: bool,
        on_diverge: OnDiverge,
    ) -> Recommender:
        """Grouped rows ``t`` -> padded tasks -> ``fitted.adapt`` -> the recommender."""
        if t.n_tasks:
            users, items, targets, mask = pad_tasks(t.tcode, t.n_tasks, t.uidx, t.iidx, t.ratings)
            if per == "user":  # every position carries its task's user (padding too)
                users = np.where(mask, users, users.max(axis=1, keepdims=True))
        else:
            users = items = np.zeros((0, 1), np.int64)
            targets, mask = np.zeros((0, 1)), np.zeros((0, 1), bool)
        tasks = TaskSupport(users, items, targets, mask)
        adapted = self.adapt_tasks(
            tasks, steps=steps, lr=lr, chunk_size=chunk_size, progress=progress
        )
        rec = Recommender(
            self,
            adapted,
            tasks,
            t.users,
            t.task_of,
            t.default,
            t.ucode,
            t.iidx,
            per=per,
            steps=self.steps if steps is None else steps,
            lr=self.lr if lr is None else lr,
        )
        return ensure_finite_adaptation(rec, on_diverge)  # hook (metarec.runs.guard)


def _tasks(users: np.ndarray, items: np.ndarray) -> TaskSupport:
    return TaskSupport(users, items, np.zeros(users.shape), np.zeros(users.shape, bool))


def _check_on_diverge(on_diverge: Any) -> None:
    if on_diverge not in ("error", "fallback"):
        raise ConfigError(
            f"on_diverge={on_diverge!r}: choose 'error' or 'fallback' (--on-diverge error|fallback)"
        )
