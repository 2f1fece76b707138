"""Working with :class:`~metarec.methods.base.Adapted` objects of any method: take some of their
tasks (:func:`select_tasks`), put several together (:func:`concat_adapted`), save and restore
them (:class:`SavesAdapted`).

An ``Adapted`` holds ``T`` adapted tasks and scores ``(T, N)`` inputs. The recommender
(:mod:`metarec.recommend`) adapts many users in chunks and then scores one user at a time, so
it needs two more operations. A family's ``Adapted`` class provides them when it can do them
cheaply:

* ``select(rows) -> Adapted``: the tasks ``rows`` (``int64 (R,)``, repeats allowed), in that
  order;
* ``concat(parts) -> Adapted`` (a classmethod): the tasks of ``parts`` (objects of that class),
  one after the other.

Every shipped family implements both; an ``Adapted`` without them (a method registered by a
user) still works through the generic fallbacks here, which score every task and keep the
asked rows (slower, same numbers).

Example:
    >>> import torch
    >>> from metarec.methods.popularity import PopularityAdapted
    >>> a = PopularityAdapted(torch.tensor([0.0, 1.0, 2.0]), tasks=4)
    >>> select_tasks(a, torch.tensor([3, 0])).n_tasks
    2
    >>> concat_adapted([a, a]).n_tasks
    8
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from metarec.methods.base import Adapted

__all__ = ["select_tasks", "concat_adapted", "SavesAdapted", "index_tasks", "cat_tasks"]


@runtime_checkable
class _Selects(Protocol):
    def select(self, rows: torch.Tensor) -> Adapted: ...


@runtime_checkable
class SavesAdapted(Protocol):
    """A :class:`~metarec.methods.base.Fitted` whose adapted tasks are tensors it can write and
    read back exactly (the MAML family's fast weights), instead of adapting again on load."""

    def adapted_state(self, adapted: Adapted) -> dict[str, Any] | None:
        """The tensors of ``adapted`` (``None``: not an object this method can save)."""
        ...

    def restore_adapted(self, state: Mapping[str, Any], where: str) -> Adapted | None:
        """``adapted_state``'s tensors back as an ``Adapted`` (``None``: ``state`` holds none of
        them); ``where`` names the file in error messages."""
        ...


def select_tasks(adapted: Adapted, rows: torch.Tensor) -> Adapted:
    """The tasks ``rows`` of ``adapted`` (``int64 (R,)``, in that order) as an ``Adapted`` of
    ``R`` tasks: the family's own ``select`` when it has one, else a view that scores every task
    and keeps the asked rows."""
    rows = torch.as_tensor(rows, dtype=torch.int64).reshape(-1)
    if isinstance(adapted, _Selects):
        return adapted.select(rows)
    return _RowView(adapted, rows)


def concat_adapted(parts: Sequence[Adapted]) -> Adapted:
    """The tasks of ``parts``, one after the other: the class's own ``concat`` when every part
    is of one class that has it, else a generic stack."""
    if not parts:
        raise ValueError("concat_adapted: no parts; pass at least one Adapted")
    if len(parts) == 1:
        return parts[0]
    cls = type(parts[0])
    cat = getattr(cls, "concat", None)
    if cat is not None and all(type(p) is cls for p in parts):
        return cat(list(parts))
    return _Stack(list(parts))


def index_tasks(tree: Any, rows: torch.Tensor, n_tasks: int) -> Any:
    """``tree`` (tensors, tuples, lists, dicts, ``None``) with every tensor whose first axis has
    ``n_tasks`` entries indexed by ``rows``; other leaves unchanged. What a family's ``select``
    uses when its per-task state is a tree of ``(T, ...)`` tensors."""
    if isinstance(tree, torch.Tensor):
        if tree.dim() and tree.shape[0] == n_tasks:
            return tree[rows.to(tree.device)]
        return tree
    if isinstance(tree, (list, tuple)):
        return type(tree)(index_tasks(x, rows, n_tasks) for x in tree)
    if isinstance(tree, dict):
        return {k: index_tasks(v, rows, n_tasks) for k, v in tree.items()}
    return tree


def cat_tasks(trees: Sequence[Any], sizes: Sequence[int]) -> Any:
    """The per-task trees ``trees`` (as for :func:`index_tasks`; part ``p`` has ``sizes[p]``
    tasks) concatenated along the task axis; leaves that are not per-task must be equal and the
    first is kept."""
    first = trees[0]
    if isinstance(first, torch.Tensor):
        if first.dim() and all(t.shape[0] == n for t, n in zip(trees, sizes, strict=True)):
            return torch.cat(list(trees))
        return first
    if isinstance(first, (list, tuple)):
        return type(first)(cat_tasks([t[i] for t in trees], sizes) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: cat_tasks([t[k] for t in trees], sizes) for k in first}
    return first


class _RowView:
    """Tasks ``rows`` of an ``Adapted`` without ``select``: each asked row is scored with every
    task and its own row kept (``T`` times the work, the same numbers)."""

    def __init__(self, adapted: Adapted, rows: torch.Tensor) -> None:
        self.adapted, self.rows = adapted, rows

    @property
    def n_tasks(self) -> int:
        return int(self.rows.shape[0])

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        T = self.adapted.n_tasks
        out = []
        for r in range(self.n_tasks):
            full = self.adapted.score(users[r].expand(T, -1), items[r].expand(T, -1))  # (T, N)
            out.append(full[int(self.rows[r])])
        return torch.stack(out)

    def select(self, rows: torch.Tensor) -> Adapted:
        return _RowView(self.adapted, self.rows[rows])


class _Stack:
    """The tasks of several ``Adapted`` objects, one after the other."""

    def __init__(self, parts: list[Adapted]) -> None:
        self.parts = parts
        self.sizes = [int(p.n_tasks) for p in parts]
        self.starts = torch.tensor([0, *self.sizes]).cumsum(0)

    @property
    def n_tasks(self) -> int:
        return int(self.starts[-1])

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        out = [
            p.score(users[int(s) : int(s) + n], items[int(s) : int(s) + n])
            for p, s, n in zip(self.parts, self.starts, self.sizes, strict=False)
            if n
        ]
        return torch.cat(out)

    def select(self, rows: torch.Tensor) -> Adapted:
        """Runs of consecutive rows from one part become one selection of that part."""
        if not len(rows):
            return select_tasks(self.parts[0], rows)
        part = torch.searchsorted(self.starts[1:], rows, right=True)  # (R,)
        pieces: list[Adapted] = []
        start = 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or part[end] != part[start]:
                p = int(part[start])
                pieces.append(select_tasks(self.parts[p], rows[start:end] - self.starts[p]))
                start = end
        return concat_adapted(pieces)
