"""Runs of methods outside the meta-learning engine (``popularity``, the cross-domain methods,
registered methods), served through the method interface: :class:`MethodModel`.
Built by :func:`metarec.adapt.load_run`; re-exported by :mod:`metarec.adapt`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.data.encoding import IdEncoder
from metarec.data.table import Columns
from metarec.episodes.batch import EpisodeSet
from metarec.guard import OnDiverge
from metarec.limits import check_steps
from metarec.methods import Fitted
from metarec.recommender import MethodRecommender
from metarec.run_model import Per, SupportLike
from metarec.support import (
    SupportRows,
    UnknownItems,
    check_lr,
    encode_items,
    group_tasks,
    pad_tasks,
    parse_support,
)

__all__ = ["MethodModel"]


class MethodModel:
    """A trained method of the interface (:class:`~metarec.methods.Fitted`) with the run's
    encoders: :meth:`adapt` / :meth:`adapt_many` / :meth:`initial` as for :class:`MetaModel`,
    returning a :class:`MethodRecommender`. Built by :func:`load_run` for runs of methods outside
    the meta-learning engine (``popularity``, the cross-domain methods, registered methods)."""

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

    feedback = property(lambda self: self.table.feedback)
    rating_scale = property(lambda self: self.table.rating_scale)
    user_ids = property(lambda self: self.table.user_ids)
    item_ids = property(lambda self: self.table.item_ids)

    def __repr__(self) -> str:
        return f"MethodModel({self.name}, {len(self.user_ids) - 1} users, {len(self.item_ids) - 1} items, {self.feedback})"

    def encode_items(
        self, items: Iterable[Any], unknown_items: UnknownItems = "error", what: str = "items"
    ) -> np.ndarray:
        return encode_items(self.item_ids, items, unknown_items, what)

    def initial(self) -> MethodRecommender:
        """Every user served zero-shot (the method adapted to an empty support)."""
        return MethodRecommender(
            self,
            None,
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
        on_diverge: OnDiverge = "error",
    ) -> MethodRecommender:
        """Adapt to ``support`` (arguments as for :meth:`MetaModel.adapt`); ``steps`` / ``lr``
        override the method's own choice (methods without adaptation ignore them). ``on_diverge``
        is checked but has no fallback here: a method's non-finite scores are an error when served."""
        _check_on_diverge(on_diverge)
        rows = parse_support(support, columns, user, self.feedback, self.rating_scale)
        return self._adapt_rows(rows, steps, lr, per, unknown_items, user)

    def adapt_many(
        self,
        frame: SupportLike,
        *,
        steps: int | None = None,
        lr: float | None = None,
        columns: Columns | Mapping[str, str] | None = None,
        unknown_items: UnknownItems = "error",
        chunk_size: int | None = None,
        on_diverge: OnDiverge = "error",
    ) -> MethodRecommender:
        """Adapt every user of ``frame`` at once (one task per user); arguments as for :meth:`adapt`."""
        _check_on_diverge(on_diverge)
        rows = parse_support(frame, columns, None, self.feedback, self.rating_scale)
        return self._adapt_rows(rows, steps, lr, "user", unknown_items, None)

    def _adapt_rows(
        self,
        rows: SupportRows,
        steps: int | None,
        lr: float | None,
        per: str,
        unknown_items: str,
        extra_user: Any,
    ) -> MethodRecommender:
        check_lr(lr)
        if steps is not None:
            steps = check_steps(steps, "steps")  # hook (metarec.limits): at most MAX_STEPS
        t = group_tasks(
            rows,
            self.user_ids,
            self.item_ids,
            per=per,
            unknown_items=unknown_items,
            extra_user=extra_user,
        )
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
