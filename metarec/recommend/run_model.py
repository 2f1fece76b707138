"""What a loaded run shows its callers: :class:`RunModel`, the shared base of
:class:`~metarec.recommend.load.MetaModel` (a meta-learning run) and
:class:`~metarec.recommend.method_model.MethodModel` (a run of any other method).

Both hold the run's encoders (``table``) and adapt to support input the same way: the support is
parsed (:func:`metarec.recommend.support.parse_support`), then each subclass adapts the rows with its own
machinery (``_adapt_rows``) and wraps the result in its recommender (``_recommender``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import numpy as np
import pandas as pd

from metarec.data.encoding import IdEncoder
from metarec.data.table import Columns, InteractionTable
from metarec.recommend.support import (
    SupportRows,
    SupportTasks,
    UnknownItems,
    encode_items,
    parse_support,
)
from metarec.runs.guard import OnDiverge

__all__ = ["Per", "RunModel", "SupportLike"]


Per = Literal["user", "domain"]
SupportLike: TypeAlias = "pd.DataFrame | InteractionTable | Sequence[tuple[Any, ...]]"

R = TypeVar("R")


class RunModel(Generic[R]):
    """A loaded run with its encoders: :meth:`initial`, :meth:`adapt` and :meth:`adapt_many`
    return a recommender of type ``R``.

    Subclasses set ``table`` (the run's :class:`InteractionTable`: encoders and side features)
    and implement ``_adapt_rows`` (support rows -> recommender), ``_no_tasks`` (the adapted state
    of no task) and ``_recommender`` (state and ids -> recommender).
    """

    table: InteractionTable

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

    def encode_items(
        self, items: Iterable[Any], unknown_items: UnknownItems = "error", what: str = "items"
    ) -> np.ndarray:
        """Raw item ids -> indices of the run's item encoder (see ``unknown_items`` in :meth:`adapt`)."""
        return encode_items(self.item_ids, items, unknown_items, what)

    def initial(self) -> R:
        """A recommender that serves every user without adaptation: the meta-learned
        initialisation (:class:`~metarec.recommend.load.MetaModel`) or the method adapted to an empty
        support, i.e. zero-shot (:class:`~metarec.recommend.method_model.MethodModel`)."""
        return self._recommender(
            self._no_tasks(),
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
    ) -> R:
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
        rows = self._support_rows(support, columns, user, on_diverge)
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
    ) -> R:
        """Adapt every user of ``frame`` (thousands of cold users) in one vmapped call per
        ``chunk_size`` tasks: the tasks are padded into one ``(users, max_support)``
        :class:`EpisodeSet` with vectorised numpy (no per-user Python loop). Same result as
        calling :meth:`adapt` once per user. Arguments as for :meth:`adapt`; ``progress`` shows a
        progress bar over the chunks."""
        rows = self._support_rows(frame, columns, None, on_diverge)
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
        tasks: SupportTasks,
        *,
        steps: int | None = None,
        lr: float | None = None,
        on_diverge: OnDiverge = "error",
    ) -> R:
        """Adapt to tasks whose rows are already validated and encoded
        (:func:`~metarec.recommend.support.encoded_tasks`): the rows go straight to the method's
        adaptation, nothing is parsed or encoded again (the serving path). Arguments as for
        :meth:`adapt`."""
        return self._adapt_grouped(tasks, steps, lr, "user", 4096, False, on_diverge)

    # ------------------------------------------------------------------ for subclasses
    def _support_rows(
        self,
        support: SupportLike,
        columns: Columns | Mapping[str, str] | None,
        user: Any,
        on_diverge: OnDiverge,
    ) -> SupportRows:
        """The parsed support (a subclass may check ``on_diverge`` first)."""
        return parse_support(support, columns, user, self.feedback, self.rating_scale)

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
    ) -> R:
        raise NotImplementedError

    def _adapt_grouped(
        self,
        tasks: SupportTasks,
        steps: int | None,
        lr: float | None,
        per: str,
        chunk_size: int | None,
        progress: bool,
        on_diverge: OnDiverge,
    ) -> R:
        raise NotImplementedError

    def _no_tasks(self) -> Any:
        raise NotImplementedError

    def _recommender(
        self,
        fast: Any,
        users: IdEncoder,
        task_of: np.ndarray,
        default: int,
        seen_user: np.ndarray,
        seen_item: np.ndarray,
        *,
        per: str,
        steps: int | None,
        lr: float | None,
    ) -> R:
        raise NotImplementedError
