"""Runs of methods outside the meta-learning engine (``popularity``, the cross-domain methods,
registered methods), served through the method interface: :class:`MethodModel`.
Built by :func:`metarec.recommend.load.load_run`; re-exported by :mod:`metarec.recommend.load`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.config.limits import check_steps
from metarec.data.table import Columns
from metarec.episodes.batch import EpisodeSet
from metarec.methods import Fitted
from metarec.recommend.recommender import MethodRecommender
from metarec.recommend.run_model import RunModel, SupportLike
from metarec.recommend.support import (
    SupportRows,
    SupportTasks,
    check_lr,
    group_tasks,
    pad_tasks,
)
from metarec.runs.guard import OnDiverge

__all__ = ["MethodModel"]


class MethodModel(RunModel[MethodRecommender]):
    """A trained method of the interface (:class:`~metarec.methods.Fitted`) with the run's
    encoders: :meth:`adapt` / :meth:`adapt_many` / :meth:`initial` as for :class:`MetaModel`,
    returning a :class:`MethodRecommender`. Built by :func:`load_run` for runs of methods outside
    the meta-learning engine (``popularity``, the cross-domain methods, registered methods).

    ``steps`` / ``lr`` override the method's own choice (methods without adaptation ignore them);
    ``chunk_size`` and ``progress`` are ignored (one call adapts every task). ``on_diverge`` is
    checked but has no fallback here: a method's non-finite scores are an error when served.
    :meth:`initial` serves every user zero-shot (the method adapted to an empty support)."""

    def __init__(
        self,
        fitted: Fitted,
        *,
        manifest: dict[str, Any] | None = None,
        run_dir: Path | None = None,
        item_domains: np.ndarray | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.fitted, self.table, self.name = fitted, fitted.table, fitted.name
        self.manifest, self.run_dir, self.item_domains = manifest or {}, run_dir, item_domains
        self.device, self.dtype = torch.device(device), torch.float32
        self.steps: int | None = getattr(fitted, "steps", None)

    def __repr__(self) -> str:
        return f"MethodModel({self.name}, {len(self.user_ids) - 1} users, {len(self.item_ids) - 1} items, {self.feedback})"

    def _support_rows(
        self,
        support: SupportLike,
        columns: Columns | Mapping[str, str] | None,
        user: Any,
        on_diverge: OnDiverge,
    ) -> SupportRows:
        _check_on_diverge(on_diverge)
        return super()._support_rows(support, columns, user, on_diverge)

    def _no_tasks(self) -> None:
        return None

    def _recommender(
        self, fast, users, task_of, default, seen_user, seen_item, *, per, steps, lr
    ) -> MethodRecommender:
        return MethodRecommender(
            self, fast, users, task_of, default, seen_user, seen_item, per=per, steps=steps, lr=lr
        )

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
    ) -> MethodRecommender:
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
    ) -> MethodRecommender:
        check_lr(lr)
        if steps is not None:
            steps = check_steps(steps, "steps")  # hook (metarec.config.limits): at most MAX_STEPS
        adapted = None
        if t.n_tasks:
            users, items, targets, mask = pad_tasks(
                t.tcode, t.n_tasks, t.uidx, t.iidx, t.ratings
            )  # (T, N)
            # every position of a task carries its user (padding too), so zero-shot methods see the user
            owner = users.max(axis=1, keepdims=True) if per == "user" else users
            users = np.where(mask, users, owner)
            support = EpisodeSet(
                torch.from_numpy(users).to(self.device),
                torch.from_numpy(items).to(self.device),
                torch.from_numpy(targets).to(self.device, self.dtype),
                torch.from_numpy(mask).to(self.device),
            )
            adapted = self.fitted.adapt(support, steps=steps, lr=lr)
        return MethodRecommender(
            self,
            adapted,
            t.users,
            t.task_of,
            t.default,
            t.ucode,
            t.iidx,
            per=per,
            steps=steps if steps is not None else self.steps,
            lr=lr,
        )


def _check_on_diverge(on_diverge: Any) -> None:
    if on_diverge not in ("error", "fallback"):
        raise ConfigError(
            f"on_diverge={on_diverge!r}: choose 'error' or 'fallback' (--on-diverge error|fallback)"
        )
