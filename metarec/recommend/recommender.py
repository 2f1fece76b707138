"""Adapted recommenders: predict and recommend by raw id, on top of any adapted method.

:class:`Recommender` holds what every adapted recommender shares: the raw-id encoders, which
task serves which user, the support items each user brought (for ``exclude_seen``), top-k with
deterministic ties (equal scores: the lower item index first) over the whole catalogue, a
candidate list or one domain's items (``domain=``). Ranking scores are the model's raw scores
(ratings unclipped, or logits); only :meth:`Recommender.predict` clips explicit ratings to the
rating scale (``clip=True``).

* :class:`AdaptedRecommender`: the meta-learning engine's, per-task fast weights over a
  :class:`~metarec.recommend.load.MetaModel` (saved and loaded as an adapted directory);
* :class:`MethodRecommender`: any other method of the interface (``popularity``, the
  cross-domain methods, registered methods), over a :class:`~metarec.recommend.load.MethodModel`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError, DataError, suggest
from metarec._io.lock import holds_folder
from metarec.data.encoding import IdEncoder
from metarec.episodes.batch import EpisodeSet
from metarec.methods.catalogue import catalogue_scorer_of
from metarec.metrics.topk import top_k
from metarec.recommend.support import UnknownItems, as_list, is_seq
from metarec.runs.checkpoint import atomic_write_json, save_table_meta, save_tensors
from metarec.runs.fingerprint import copy_fingerprint
from metarec.runs.guard import check_scores

__all__ = ["Recommender", "AdaptedRecommender", "MethodRecommender", "ADAPTED_FILE", "USERS_FILE"]

ADAPTED_FILE = "adapted.pt"
USERS_FILE = "adapted_users.json"

_SCORE_CELLS = 4_000_000  # max (tasks x width) cells scored per call


class Recommender:
    """Shared serving logic; subclasses score with :meth:`_score_rows`."""

    meta: Any
    steps: int | None

    def __init__(
        self,
        meta: Any,
        users: IdEncoder,
        task_of: np.ndarray,
        default_task: int,
        seen_user: np.ndarray,
        seen_item: np.ndarray,
        *,
        per: str = "user",
        steps: int | None = None,
        lr: float | None = None,
    ) -> None:
        self.meta, self.per, self.steps, self.lr = meta, per, steps, lr
        self._users, self._task_of, self._default = users, task_of, default_task
        self._seen_user, self._seen_item = (
            np.asarray(seen_user, np.int64),
            np.asarray(seen_item, np.int64),
        )

    # ------------------------------------------------------------------ to implement
    @property
    def n_tasks(self) -> int:
        raise NotImplementedError

    def _score_rows(
        self, task: np.ndarray, uidx: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Raw scores ``(G, W)`` of ``items (G, W)`` for users ``uidx (G, W)``, row ``g`` served by task ``task[g]``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ public
    @property
    def users(self) -> list[Any]:
        """The users that brought support (or were named with ``user=``), raw ids."""
        return self._users.values

    @property
    def user_ids(self) -> IdEncoder:
        """The run's user encoder (a user it does not know is cold: index 0)."""
        return self.meta.user_ids

    @property
    def item_ids(self) -> IdEncoder:
        return self.meta.item_ids

    def is_adapted(self, user: Any) -> bool:
        """Whether ``user`` is served by an adapted task (its own, or its domain's)."""
        return int(self._tasks(np.asarray([user], dtype=object))[0]) < self.n_tasks

    def predict(
        self,
        users: Iterable[Any] | Any,
        items: Iterable[Any],
        *,
        unknown_items: UnknownItems = "error",
        clip: bool = True,
    ) -> np.ndarray:
        """Predicted ratings (explicit, clipped to the rating scale unless ``clip=False``) or logits
        (implicit) for aligned raw ``users`` and ``items`` (one user is broadcast over ``items``): ``(P,)``."""
        item_list = as_list(items)
        user_list = as_list(users) if is_seq(users) else [users] * len(item_list)
        if len(user_list) != len(item_list):
            raise DataError(
                f"predict: {len(user_list)} users but {len(item_list)} items; pass aligned lists "
                "(or one user to score many items)"
            )
        iidx = self.meta.encode_items(
            np.asarray(item_list, dtype=object), unknown_items, what="items"
        )
        raw_u = np.asarray(user_list, dtype=object)
        task = self._tasks(raw_u)
        scores = self._checked(
            task, lambda: self._score(task, self.meta.user_ids.encode(raw_u), iidx)
        )
        return (self._clip(scores) if clip else scores).cpu().numpy()

    def recommend(
        self,
        user: Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Iterable[Any] | None = None,
        domain: Any = None,
    ) -> list[tuple[Any, float]]:
        """Top-``k`` ``(item, score)`` for ``user``, best first; equal scores: lower item index first.

        Args:
            user: a raw user id (cold users welcome).
            k: how many items (fewer when there are fewer candidates).
            exclude_seen: leave out the items of this user's support set.
            candidates: raw item ids to rank (default: the whole catalogue of the run's item
                encoder, feature-only items included); unknown ids are an error.
            domain: rank only the items of this domain (a raw domain id of the run).

        Scores are raw model scores: predicted ratings unclipped (explicit) or logits (implicit).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r}: must be an int >= 1; pass e.g. k=10")
        dev = self.meta.device
        if candidates is None:
            cand = torch.arange(
                1, len(self.meta.item_ids), device=dev
            )  # (n_items,) every known item
        else:
            raw = np.asarray(as_list(candidates), dtype=object)
            cand = torch.unique(
                torch.from_numpy(self.meta.encode_items(raw, what="candidates"))
            ).to(dev)
        if domain is not None:
            cand = cand[torch.from_numpy(self._domain_mask(domain)).to(dev)[cand]]
        one = np.empty(1, dtype=object)
        one[0] = user
        task = int(self._tasks(one)[0])
        uidx = int(self.meta.user_ids.encode(one)[0])
        rows = torch.full((1, len(cand)), uidx, device=dev)
        scores = self._checked(
            np.array([task]), lambda: self._score_rows(np.array([task]), rows, cand[None])[0], user
        )
        if exclude_seen:
            code = int(self._users.encode(one)[0]) if len(self._users) > 1 else 0
            seen = self._seen_item[self._seen_user == code] if code else np.zeros(0, np.int64)
            if len(seen):
                scores = scores.masked_fill(
                    torch.isin(cand, torch.from_numpy(seen).to(cand.device)), -math.inf
                )
        top, order = top_k(scores[None], k)  # (1, k): cand is sorted, so ties go by item index
        n = int(torch.isfinite(top).sum())  # the seen items (-inf) are never recommended
        order = order[0, :n]
        items = self.meta.item_ids.decode(cand[order].cpu().numpy())
        return list(zip(items, (float(v) for v in top[0, :n].tolist()), strict=True))

    # ------------------------------------------------------------------ internals
    def _checked(
        self, task: np.ndarray, score: Callable[[], torch.Tensor], user: Any = None
    ) -> torch.Tensor:
        """``score()`` without autograd, refused when not finite (hook :mod:`metarec.runs.guard`: never
        NaN scores or an empty list); ``task``: the task rows scored (adapted ones or not)."""
        with torch.no_grad():
            scores = score()
        check_scores(scores, user=user, adapted=bool((task < self.n_tasks).any()))
        return scores

    def _domain_mask(self, domain: Any) -> np.ndarray:
        """``bool (n_items,)``: the items of raw domain ``domain``."""
        names = self.meta.table.domain_ids
        d = int(names.encode(np.asarray([domain], dtype=object))[0])
        if d == 0:
            known = [str(v) for v in names.values]
            raise ConfigError(
                f"domain={domain!r}: not a domain of this run; choose one of {known}{suggest(str(domain), known)}"
            )
        dom = self.meta.item_domains
        if dom is None:
            raise ConfigError(
                f"domain={domain!r}: this run does not record its items' domains (written before they "
                "were saved); re-train it, or pass candidates=[...] instead"
            )
        return np.asarray(dom) == d

    def _tasks(self, raw_users: np.ndarray) -> np.ndarray:
        """Task row of each raw user: its own, the domain's, or the default (initialisation)."""
        if len(raw_users) == 0:
            return np.zeros(0, np.int64)
        code = (
            self._users.encode(raw_users)
            if len(self._users) > 1
            else np.zeros(len(raw_users), np.int64)
        )
        return np.where(code > 0, self._task_of[code], self._default).astype(np.int64)

    def _score(self, task: np.ndarray, uidx: np.ndarray, iidx: np.ndarray) -> torch.Tensor:
        """Raw scores of (task, user, item) triples, grouped by task and padded: ``(P,)``."""
        dev = self.meta.device
        out = torch.empty(len(task), dtype=self.meta.dtype, device=dev)
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
            with torch.no_grad():
                pred = self._score_rows(
                    groups[s : s + n], torch.from_numpy(U).to(dev), torch.from_numpy(Itm).to(dev)
                )
            out[torch.from_numpy(np.flatnonzero(sel)).to(dev)] = pred[
                torch.from_numpy(g), torch.from_numpy(p)
            ].to(out.dtype)
        return out

    def _clip(self, scores: torch.Tensor) -> torch.Tensor:
        scale = self.meta.rating_scale
        if self.meta.feedback == "explicit" and scale is not None:
            return scores.clamp(scale[0], scale[1])
        return scores


class AdaptedRecommender(Recommender):
    """Per-user (or per-domain) fast weights over a :class:`~metarec.recommend.load.MetaModel`.

    ``fast``: ``{name: (n_tasks + 1, *shape)}``, the last row the meta-learned initialisation
    (served to every user without support). Users with a support set are scored with their own
    adapted weights (``per="domain"``: every user with the domain's).
    """

    def __init__(
        self,
        meta: Any,
        fast: dict[str, torch.Tensor],
        users: IdEncoder,
        task_of: np.ndarray,
        default_task: int,
        seen_user: np.ndarray,
        seen_item: np.ndarray,
        *,
        per: str,
        steps: int | None,
        lr: float | None,
    ) -> None:
        super().__init__(
            meta, users, task_of, default_task, seen_user, seen_item, per=per, steps=steps, lr=lr
        )
        self.fast = fast

    @property
    def n_tasks(self) -> int:
        """Adapted tasks (the initialisation row excluded)."""
        return int(next(iter(self.fast.values())).shape[0]) - 1

    def __repr__(self) -> str:
        return f"AdaptedRecommender({self.n_tasks} task(s), per={self.per!r}, {len(self.users)} user(s), steps={self.steps})"

    def _score_rows(
        self, task: np.ndarray, uidx: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        rows = torch.from_numpy(np.asarray(task, np.int64)).to(self.meta.device)
        fast = {k: v[rows] for k, v in self.fast.items()}
        return self.meta.score_tasks(fast, uidx, items)

    @holds_folder("path", what="adapted directory", option="--out")  # hook (metarec._io.lock)
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a run-like directory readable by :func:`load_adapted` (and by :func:`load_run`)."""
        out = Path(path)
        if (out / "manifest.json").exists() and not overwrite:
            raise ConfigError(
                f"path={str(out)!r}: already holds a run directory; choose an empty folder or pass overwrite=True (--overwrite)"
            )
        meta = self.meta
        out.mkdir(parents=True, exist_ok=True)
        manifest = {k: v for k, v in meta.manifest.items() if k not in ("adapted", "adaptation")}
        manifest.update(
            {
                "adapted": True,
                "adaptation": {
                    "per": self.per,
                    "steps": self.steps,
                    "lr": self.lr,
                    "tasks": self.n_tasks,
                    "users": len(self.users),
                    "source_run": str(meta.run_dir),
                    "source_step": meta.step,
                },
            }
        )
        save_table_meta(meta.table, out)
        copy_fingerprint(meta.run_dir, out)  # hook (metarec.runs.fingerprint)
        if (meta.run_dir / "config.json").is_file():
            atomic_write_json(
                out / "config.json", json.loads((meta.run_dir / "config.json").read_text())
            )
        buffers = {k: v.detach().cpu() for k, v in meta.model.named_buffers()}
        save_tensors(
            out / "checkpoints" / "best.pt",
            {
                "params": {k: v.detach().cpu() for k, v in meta.params.items()},
                "state": {k: v.detach().cpu() for k, v in meta.state.items()},
                "step": meta.step,
                "buffers": buffers,
            },
        )
        save_tensors(
            out / ADAPTED_FILE,
            {
                "fast": {k: v.detach().cpu() for k, v in self.fast.items()},
                "task": torch.from_numpy(np.asarray(self._task_of, np.int64)),
                "default_task": self._default,
                "seen_user": torch.from_numpy(self._seen_user),
                "seen_item": torch.from_numpy(self._seen_item),
            },
        )
        atomic_write_json(out / USERS_FILE, self._users.to_json())
        atomic_write_json(
            out / "manifest.json", manifest
        )  # last: a folder with a manifest is complete
        return out


class MethodRecommender(Recommender):
    """Any method of the interface adapted to ``T`` support tasks (``adapted``), over a
    :class:`~metarec.recommend.load.MethodModel`; a user without a task is served by the method adapted
    to an empty support of that user (zero-shot: e.g. a cross-domain method's transferred user
    vector)."""

    def __init__(
        self,
        meta: Any,
        adapted: Any,
        users: IdEncoder,
        task_of: np.ndarray,
        default_task: int,
        seen_user: np.ndarray,
        seen_item: np.ndarray,
        *,
        per: str,
        steps: int | None,
        lr: float | None,
    ) -> None:
        super().__init__(
            meta, users, task_of, default_task, seen_user, seen_item, per=per, steps=steps, lr=lr
        )
        self.adapted = adapted

    @property
    def n_tasks(self) -> int:
        return 0 if self.adapted is None else int(self.adapted.n_tasks)

    def __repr__(self) -> str:
        return f"MethodRecommender({self.meta.name}, {self.n_tasks} task(s), {len(self.users)} user(s))"

    def _score_rows(
        self, task: np.ndarray, uidx: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        out = torch.empty(items.shape, dtype=self.meta.dtype, device=items.device)
        own = task < self.n_tasks
        if own.any():  # rows of adapted tasks: score every task's row, keep the asked ones
            T = self.n_tasks
            idx = np.flatnonzero(own)
            fast = catalogue_scorer_of(self.adapted)  # the shared catalogue fast path, if any
            for g in idx:
                if fast is not None:
                    out[g] = fast.score_catalogue(items[g])[int(task[g])].to(out.dtype)
                    continue
                u = uidx[g].expand(T, -1)
                it = items[g].expand(T, -1)
                out[g] = self.adapted.score(u, it)[int(task[g])].to(out.dtype)
        for g in np.flatnonzero(
            ~own
        ):  # zero-shot: the method adapted to an empty support of this user
            empty = EpisodeSet(
                uidx[g, :1][None],
                torch.zeros_like(uidx[g, :1])[None],
                torch.zeros((1, 1), dtype=self.meta.dtype, device=items.device),
                torch.zeros((1, 1), dtype=torch.bool, device=items.device),
            )
            out[g] = (
                self.meta.fitted.adapt(empty, steps=0)
                .score(uidx[g][None], items[g][None])[0]
                .to(out.dtype)
            )
        return out
