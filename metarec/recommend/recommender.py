"""The recommender: predict and recommend by raw id, on top of any method's adapted tasks.

:class:`Recommender` holds a run (:class:`~metarec.recommend.run_model.RunModel`), the
:class:`~metarec.methods.Adapted` tasks it was adapted to, the raw-id encoders, which task
serves which user, the support items each user brought (for ``exclude_seen``), top-k with
deterministic ties (equal scores: the lower item index first) over the whole catalogue, a
candidate list or one domain's items (``domain=``). Ranking scores are the method's raw scores
(ratings unclipped, or logits); only :meth:`Recommender.predict` clips explicit ratings to the
rating scale (``clip=True``). A user without a task of their own is served by the method
adapted to an empty support of that user (the initialisation).

:meth:`Recommender.save` writes an adapted directory (:func:`~metarec.recommend.load.load_adapted`
reads it): the run's files, the support the tasks were adapted to and, for a method that can
write them (:class:`~metarec.methods.adapted.SavesAdapted`: the MAML family's fast weights), the
adapted tensors; any other method is adapted again from the saved support on load.

``AdaptedRecommender`` and ``MethodRecommender`` are the 0.1 names of :class:`Recommender`
(deprecated; they go in 0.3).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from metarec._errors import ConfigError, DataError, suggest
from metarec._io.lock import holds_folder
from metarec.data.encoding import IdEncoder
from metarec.methods import Adapted
from metarec.methods.adapted import SavesAdapted, concat_adapted, select_tasks
from metarec.metrics.topk import top_k
from metarec.recommend.support import UnknownItems, as_list, is_seq
from metarec.runs.checkpoint import atomic_write_json, load_best, save_table_meta, save_tensors
from metarec.runs.fingerprint import copy_fingerprint, read_fingerprint
from metarec.runs.folder import claim_folder
from metarec.runs.guard import check_scores
from metarec.runs.identity import adapted_identity

__all__ = [
    "Recommender",
    "TaskSupport",
    "AdaptedRecommender",
    "MethodRecommender",
    "ADAPTED_FILE",
    "USERS_FILE",
]

ADAPTED_FILE = "adapted.pt"
USERS_FILE = "adapted_users.json"

_SCORE_CELLS = 4_000_000  # max (tasks x width) cells scored per call


class TaskSupport(NamedTuple):
    """Encoded support tasks, padded: ``users``, ``items``, ``targets``, ``mask``, each ``(T, N)``."""

    users: np.ndarray
    items: np.ndarray
    targets: np.ndarray
    mask: np.ndarray

    @property
    def n_tasks(self) -> int:
        return int(self.users.shape[0])


class Recommender:
    """A run adapted to ``n_tasks`` support tasks; predicts and recommends by raw id.

    Built by :meth:`RunModel.adapt <metarec.recommend.run_model.RunModel.adapt>`,
    :meth:`~metarec.recommend.run_model.RunModel.adapt_many`,
    :meth:`~metarec.recommend.run_model.RunModel.initial` or
    :func:`~metarec.recommend.load.load_adapted`.

    Attributes:
        meta: the :class:`~metarec.recommend.run_model.RunModel`.
        adapted: the method's :class:`~metarec.methods.Adapted` tasks (``None``: no task).
        support: the encoded tasks they were adapted to (:class:`TaskSupport`).
        per, steps, lr: how they were adapted (``per="domain"``: one task serves every user).

    Example:
        >>> from metarec.data.synthetic_personal import make_taste_table
        >>> from metarec.episodes.splits import random_split
        >>> from metarec.methods import FitData
        >>> from metarec.methods.popularity import PopularityMethod
        >>> from metarec.recommend.run_model import RunModel
        >>> table = make_taste_table(n_users=30, n_items=20, per_user=8, seed=0)
        >>> splits = random_split(table, "user", (0.6, 0.2, 0.2), n_query=3, min_interactions=5)
        >>> run = RunModel(PopularityMethod().fit(FitData(table, splits)))
        >>> first, second = table.item_ids.values[:2]
        >>> rec = run.adapt([("new-user", first, 5.0)])
        >>> rec.n_tasks, rec.is_adapted("new-user"), rec.is_adapted("someone-else")
        (1, True, False)
        >>> first in [item for item, _ in rec.recommend("new-user", k=5)]  # seen: left out
        False
        >>> rec.predict("new-user", [first, second]).shape
        (2,)
    """

    def __init__(
        self,
        meta: Any,
        adapted: Adapted | None,
        support: TaskSupport,
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
        self.meta, self.adapted, self.support = meta, adapted, support
        self.per, self.steps, self.lr = per, steps, lr
        self._users, self._task_of, self._default = (
            users,
            np.asarray(task_of, np.int64),
            default_task,
        )
        self._seen_user, self._seen_item = (
            np.asarray(seen_user, np.int64),
            np.asarray(seen_item, np.int64),
        )
        self.fallback = np.zeros(self.n_tasks, bool)
        """Tasks whose users are served by the initialisation (their adaptation diverged)."""

    @property
    def n_tasks(self) -> int:
        """Adapted tasks."""
        return 0 if self.adapted is None else int(self.adapted.n_tasks)

    def __repr__(self) -> str:
        return (
            f"Recommender({self.meta.name}, {self.n_tasks} task(s), per={self.per!r}, "
            f"{len(self.users)} user(s), steps={self.steps})"
        )

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
        (implicit; and a run trained to rank on ratings, never clipped) for aligned raw ``users``
        and ``items`` (one user is broadcast over ``items``): ``(P,)``."""
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
                f"domain={domain!r}: not a domain of this run; choose one of "
                f"{known}{suggest(str(domain), known)}"
            )
        dom = self.meta.item_domains
        if dom is None:
            raise ConfigError(
                f"domain={domain!r}: this run does not record its items' domains (written before "
                "they were saved); re-train it, or pass candidates=[...] instead"
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
        """Raw scores of (task, user, item) triples, grouped by task (users without a task: by
        user) and padded: ``(P,)``."""
        dev = self.meta.device
        out = torch.empty(len(task), dtype=self.meta.dtype, device=dev)
        if len(task) == 0:
            return out
        n = self.n_tasks
        key = np.where(task < n, task, n + np.asarray(uidx, np.int64))
        groups, inv = np.unique(key, return_inverse=True)
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
        ranks = bool(getattr(self.meta, "ranks", False))  # scores that rank: not ratings
        if self.meta.feedback == "explicit" and scale is not None and not ranks:
            return scores.clamp(scale[0], scale[1])
        return scores

    def _score_rows(
        self, task: np.ndarray, uidx: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Raw scores ``(G, W)`` of ``items (G, W)`` for users ``uidx (G, W)``: row ``g`` by task
        ``task[g]``, or (``task[g] >= n_tasks``) by the initialisation of its user ``uidx[g, 0]``."""
        out = torch.empty(items.shape, dtype=self.meta.dtype, device=items.device)
        own = np.asarray(task) < self.n_tasks
        if own.any():
            assert self.adapted is not None
            idx = torch.from_numpy(np.flatnonzero(own)).to(items.device)
            rows = torch.from_numpy(np.asarray(task, np.int64)[own])
            part = select_tasks(self.adapted, rows)
            out[idx] = part.score(uidx[idx], items[idx]).to(out.dtype)
        if not own.all():
            idx = torch.from_numpy(np.flatnonzero(~own)).to(items.device)
            zero = self.meta.zero_shot(uidx[idx, 0].cpu().numpy())
            out[idx] = zero.score(uidx[idx], items[idx]).to(out.dtype)
        return out

    # ------------------------------------------------------------------ divergence
    def finite_tasks(self) -> torch.Tensor:
        """``bool (n_tasks,)``: whether each task's scores of its own support are finite (a
        task whose adaptation diverged scores NaN or infinity)."""
        if self.adapted is None:
            return torch.ones(0, dtype=torch.bool)
        s = self.support
        dev = self.meta.device
        with torch.no_grad():
            scores = self.adapted.score(
                torch.from_numpy(s.users).to(dev), torch.from_numpy(s.items).to(dev)
            )  # (T, N)
        fin = torch.isfinite(scores) | ~torch.from_numpy(s.mask).to(scores.device)
        return fin.all(dim=1).cpu()

    def fall_back(self, tasks: np.ndarray) -> None:
        """Serve the users of ``tasks`` (diverged) by the initialisation, in place: those tasks
        are replaced by the method adapted to an empty support of their user."""
        assert self.adapted is not None
        bad = np.zeros(self.n_tasks, bool)
        bad[np.asarray(tasks, np.int64)] = True
        owner = torch.from_numpy(self.support.users.max(axis=1))  # (T,) the task's user
        parts: list[Adapted] = []
        start = 0
        for end in range(1, self.n_tasks + 1):
            if end == self.n_tasks or bad[end] != bad[start]:
                if bad[start]:
                    parts.append(self.meta.zero_shot(owner[start:end].numpy()))
                else:
                    parts.append(select_tasks(self.adapted, torch.arange(start, end)))
                start = end
        self.adapted = concat_adapted(parts)
        self.fallback = self.fallback | bad

    # ------------------------------------------------------------------ saving
    @holds_folder("path", what="adapted directory", option="--out")  # hook (metarec._io.lock)
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write an adapted directory readable by :func:`~metarec.recommend.load.load_adapted`
        (and, as a run, by :func:`~metarec.recommend.load.load_run`).

        Raises:
            ConfigError: ``path`` already holds a run and ``overwrite`` is False, or the run was
                built in memory (no run directory to save beside the adaptation).
        """
        out = Path(path)
        if (out / "manifest.json").exists() and not overwrite:
            raise ConfigError(
                f"path={str(out)!r}: already holds a run directory; "
                "choose an empty folder or pass overwrite=True (--overwrite)"
            )
        meta = self.meta
        if meta.run_dir is None:
            raise ConfigError(
                f"save: the run of method {meta.name!r} was built in memory, not loaded from a run "
                "directory; write it with metarec.save_fitted(fitted, RUN) and adapt load_run(RUN) "
                "instead"
            )
        # hook (metarec.runs.folder): no write through a link; --overwrite replaces only an adapted directory
        claim = claim_folder(out, "adapted", replace=overwrite, option="--out")
        ident = adapted_identity(meta.manifest, claim.run_id, read_fingerprint(meta.run_dir))
        manifest = {k: v for k, v in meta.manifest.items() if k not in ("adapted", "adaptation")}
        manifest.update(
            {
                "run": ident,  # hook (metarec.runs.identity): its checkpoints carry the same
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
        # the run's weights as loaded (best or last), as the run's own checkpoint
        weights = load_best(meta.run_dir, which=meta.which)
        save_tensors(out / "checkpoints" / "best.pt", {**weights, "run": ident})
        s = self.support
        blob: dict[str, Any] = {
            "task": torch.from_numpy(np.asarray(self._task_of, np.int64)),
            "default_task": self._default,
            "seen_user": torch.from_numpy(self._seen_user),
            "seen_item": torch.from_numpy(self._seen_item),
            "support": {
                "users": torch.from_numpy(s.users),
                "items": torch.from_numpy(s.items),
                "targets": torch.from_numpy(np.asarray(s.targets, np.float64)),
                "mask": torch.from_numpy(s.mask),
            },
            "fallback": torch.from_numpy(self.fallback.copy()),
            "run": ident,
        }
        fitted = meta.fitted
        if self.adapted is not None and isinstance(fitted, SavesAdapted):
            blob.update(fitted.adapted_state(self.adapted) or {})
        save_tensors(out / ADAPTED_FILE, blob)
        atomic_write_json(out / USERS_FILE, self._users.to_json())
        atomic_write_json(
            out / "manifest.json", manifest
        )  # last: a folder with a manifest is complete
        return out


AdaptedRecommender = Recommender
"""Deprecated name of :class:`Recommender` (0.1: the MAML family's recommender); goes in 0.3."""
MethodRecommender = Recommender
"""Deprecated name of :class:`Recommender` (0.1: other methods' recommender); goes in 0.3."""
