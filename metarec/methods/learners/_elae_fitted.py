"""``elae``'s fitted and adapted objects: the meta-trained ``B_k`` over the modelled items and
the catalogue scores of adapted tasks (the method and its closed-form training are in
:mod:`metarec.methods.learners.elae`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec._errors import CheckpointError
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.methods.ranking.by_shots import nearest_shot
from metarec.train.log import TrainingLog

__all__ = ["ElaeFitted", "ElaeAdapted"]


def _columns(items: np.ndarray, n: int) -> np.ndarray:
    col = np.full(n, -1, dtype=np.int64)
    col[items] = np.arange(len(items))
    return col


@dataclass
class ElaeAdapted:
    """The catalogue scores of ``T`` adapted tasks: ``(T, n_items)`` of the table's items.

    The scores order items for a user; they are not ratings (``score_kind = "rank"``: no error
    metric is computed on them and they are never clipped to a rating scale).
    """

    score_kind = "rank"
    table_scores: torch.Tensor

    @property
    def n_tasks(self) -> int:
        return int(self.table_scores.shape[0])

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` item indices -> ``(T, N)`` scores (``users`` unused: the task is the user)."""
        return self.table_scores.to(items.device).gather(1, items)

    def score_catalogue(self, items: torch.Tensor) -> torch.Tensor:
        """``(C,)`` item indices -> ``(T, C)`` scores of every task for those items."""
        return self.table_scores.to(items.device)[:, items]


class ElaeFitted:
    """The meta-trained ``B_k`` (one per support size) over the modelled items.

    Attributes:
        items: ``int64 (m,)`` the modelled (target) items: the column order of each ``B_k``.
        source_items: ``int64 (h,)`` the modelled source-domain items (empty when the scenario
            has one domain): the first ``h`` input rows of each ``B_k``.
        hist_ptr, hist_cols: each table user's meta-train source-domain items as CSR
            (``hist_cols[hist_ptr[u]:hist_ptr[u + 1]]``, columns into ``source_items``).
        shots: the support sizes, ascending; ``B[i]`` is ``B_{shots[i]}``, ``(h + m + 1, m)``
            (or ``(r_h + r + 1, m)`` over the bases).
        P, Ph: ``(m, r)`` and ``(h, r_h)`` input bases of a low-rank model, or ``None`` (the
            full model).
        lambdas: the ridge strength chosen on meta-val per support size.
        val_ndcg: the meta-val nDCG@10 of each chosen ``B_k``.
    """

    score_kind = "rank"  # its scores order items; they are not ratings (never clipped)

    def __init__(
        self,
        table: InteractionTable,
        items: torch.Tensor,
        shots: Sequence[int],
        B: Sequence[torch.Tensor],
        lambdas: Sequence[float],
        val_ndcg: Sequence[float] = (),
        source_items: torch.Tensor | None = None,
        hist_ptr: torch.Tensor | None = None,
        hist_cols: torch.Tensor | None = None,
    ) -> None:
        self.name, self.table = "elae", table
        self.items = items.long()
        self.source_items = (
            torch.zeros(0, dtype=torch.long) if source_items is None else source_items.long()
        )
        self.hist_ptr = (
            torch.zeros(table.n_users + 1, dtype=torch.long) if hist_ptr is None else hist_ptr
        )
        self.hist_cols = torch.zeros(0, dtype=torch.long) if hist_cols is None else hist_cols
        self.shots = [int(k) for k in shots]
        self.B = list(B)
        self.lambdas = [float(x) for x in lambdas]
        self.val_ndcg = [float(x) for x in val_ndcg]
        self.history_norm = 0.0
        self.P: torch.Tensor | None = None
        self.Ph: torch.Tensor | None = None
        self.training_log = TrainingLog()

    def _project(self, Z: torch.Tensor) -> torch.Tensor:
        """Input rows ``[H_u, s, 1]`` -> ``[H_u Ph, s P, 1]`` (unchanged for the full model)."""
        if self.P is None:
            return Z
        h = len(self.source_items)
        parts = []
        if h and self.Ph is not None:
            parts.append(Z[:, :h] @ self.Ph.to(Z.dtype))
        parts += [Z[:, h:-1] @ self.P.to(Z.dtype), Z[:, -1:]]
        return torch.cat(parts, dim=1)

    def inputs(self, support: EpisodeSet, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(T, h + m + 1)`` input rows ``[H_u, s, 1]`` of the tasks of ``support``: the task
        user's meta-train source history plus any source-domain item in the support, the
        support's modelled target items (indicators: a repeated item counts once), 1."""
        h, m = len(self.source_items), len(self.items)
        n = self.table.n_items
        col = torch.as_tensor(_columns(self.items.numpy(), n))
        scol = torch.as_tensor(_columns(self.source_items.numpy(), n))
        items, mask = support.items.cpu(), support.mask.cpu()
        dtype = dtype or (self.B[0].dtype if self.B else torch.float32)
        Z = torch.zeros(items.shape[0], h + m + 1, dtype=dtype)
        rows = torch.arange(items.shape[0])[:, None].expand_as(items)
        c, sc = col[items], scol[items]
        tgt, src = mask & (c >= 0), mask & (sc >= 0)
        Z[rows[tgt], h + c[tgt]] = 1.0
        Z[rows[src], sc[src]] = 1.0
        if h:
            first = mask.float().argmax(dim=1)
            user = support.users.cpu().gather(1, first[:, None]).squeeze(1)
            for t, u in enumerate(user.tolist()):
                if bool(mask[t].any()) and 0 <= u < self.table.n_users:
                    Z[t, self.hist_cols[self.hist_ptr[u] : self.hist_ptr[u + 1]]] = 1.0
            Z[:, :h] *= Z[:, :h].sum(dim=1, keepdim=True).clamp(min=1.0) ** -self.history_norm
        Z[:, -1] = 1.0
        return Z

    def scores(self, support: EpisodeSet) -> torch.Tensor:
        """``(T, m)`` scores of the modelled items for each task of ``support``."""
        Z = self.inputs(support)
        h = len(self.source_items)
        which = nearest_shot(self.shots, (Z[:, h:-1] > 0).sum(dim=1))
        Z = self._project(Z)
        out = torch.empty(Z.shape[0], len(self.items), dtype=self.B[0].dtype)
        for i in which.unique().tolist():
            sel = which == i
            out[sel] = Z[sel] @ self.B[i]  # (tasks, inputs) @ (inputs, m)
        return out

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> ElaeAdapted:
        """Score the catalogue for each task of ``support`` (no gradient step: ``steps`` and
        ``lr`` are ignored). Items outside the model get their row's lowest score."""
        s = self.scores(support)  # (T, m)
        floor = s.min(dim=1, keepdim=True).values if s.shape[1] else s.new_zeros(s.shape[0], 1)
        full = floor.expand(s.shape[0], self.table.n_items).clone()
        full[:, self.items] = s
        return ElaeAdapted(full.float())

    def config(self) -> dict[str, Any]:
        return {
            "shots": self.shots,
            "lambdas": self.lambdas,
            "val_ndcg": self.val_ndcg,
            "n_modelled": len(self.items),
            "n_source": len(self.source_items),
            "n_history": len(self.hist_cols),
            "history_norm": self.history_norm,
            "rank": 0 if self.P is None else int(self.P.shape[1]),
            "rank_history": 0 if self.Ph is None else int(self.Ph.shape[1]),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {
            "items": self.items.cpu(),
            "source_items": self.source_items.cpu(),
            "hist_ptr": self.hist_ptr.cpu(),
            "hist_cols": self.hist_cols.cpu(),
        }
        out.update({f"B.{k}": b.detach().cpu() for k, b in zip(self.shots, self.B, strict=True)})
        if self.P is not None:
            out["P"] = self.P.cpu()
        if self.Ph is not None:
            out["Ph"] = self.Ph.cpu()
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        want = {"items", "source_items", "hist_ptr", "hist_cols", *(f"B.{k}" for k in self.shots)}
        want |= {"P"} if self.P is not None else set()
        want |= {"Ph"} if self.Ph is not None else set()
        if set(state) != want:
            raise CheckpointError(
                f"state_dict: keys {sorted(state)} do not match elae's {sorted(want)}; the weights "
                "belong to another run; re-train"
            )
        m, h = int(state["items"].shape[0]), int(state["source_items"].shape[0])
        r = m if "P" not in state else int(state["P"].shape[1])
        rh = h if "Ph" not in state else int(state["Ph"].shape[1])
        if "P" in state and tuple(state["P"].shape) != (m, r):
            raise CheckpointError(
                f"state_dict: 'P' has shape {tuple(state['P'].shape)}, expected ({m}, rank); the "
                "weights belong to another run; re-train"
            )
        if "Ph" in state and tuple(state["Ph"].shape) != (h, rh):
            raise CheckpointError(
                f"state_dict: 'Ph' has shape {tuple(state['Ph'].shape)}, expected ({h}, rank); the "
                "weights belong to another run; re-train"
            )
        for k in self.shots:
            if tuple(state[f"B.{k}"].shape) != (rh + r + 1, m):
                raise CheckpointError(
                    f"state_dict: 'B.{k}' has shape {tuple(state[f'B.{k}'].shape)}, expected "
                    f"{(rh + r + 1, m)} for {m} modelled and {h} source items; the weights belong "
                    "to another run; re-train"
                )
        top = max([int(x.max()) for x in (state["items"], state["source_items"]) if len(x)] or [0])
        if top >= self.table.n_items or len(state["hist_ptr"]) != self.table.n_users + 1:
            raise CheckpointError(
                f"state_dict: its items (up to {top}) or users ({len(state['hist_ptr']) - 1}) do "
                f"not fit this table ({self.table.n_items} items, {self.table.n_users} users); the "
                "weights belong to another run; re-train"
            )
        self.items = state["items"].long()
        self.source_items = state["source_items"].long()
        self.hist_ptr, self.hist_cols = state["hist_ptr"].long(), state["hist_cols"].long()
        self.B = [state[f"B.{k}"].float() for k in self.shots]
        self.P = state["P"].float() if "P" in state else None
        self.Ph = state["Ph"].float() if "Ph" in state else None

    @classmethod
    def build(cls, name: str, config: Mapping[str, Any], table: InteractionTable) -> ElaeFitted:
        shots = [int(k) for k in config.get("shots", [1])]
        m, h = int(config.get("n_modelled", 1)), int(config.get("n_source", 0))
        r, rh = int(config.get("rank", 0)), int(config.get("rank_history", 0))
        width = (rh if rh else h) + (r if r else m) + 1
        out = cls(
            table,
            torch.zeros(m, dtype=torch.long),
            shots,
            [torch.zeros(width, m) for _ in shots],
            config.get("lambdas", [1.0] * len(shots)),
            config.get("val_ndcg", ()),
            torch.zeros(h, dtype=torch.long),
            torch.zeros(table.n_users + 1, dtype=torch.long),
            torch.zeros(int(config.get("n_history", 0)), dtype=torch.long),
        )
        out.history_norm = float(config.get("history_norm", 0.0))
        out.P = torch.zeros(m, r) if r else None
        out.Ph = torch.zeros(h, rh) if rh else None
        return out
