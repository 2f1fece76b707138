"""The serving engine: a batch of validated requests -> their answers, in one adaptation.

:class:`Engine` holds the run (a :class:`~metarec.adapt.MetaModel`) and answers a list of
:class:`~metarec.serve.requests.Job` s at once: every job's support set is one task, all tasks
are adapted together, then every ``/recommend`` job gets its top-k over the whole catalogue
(its own support items left out, as ``metarec recommend`` does) and every ``/predict`` job the
scores of its items. Answers have the shape of ``metarec recommend --json``::

    {"user": "u", "items": [{"item": 1193, "score": 4.61}, ...]}

with ``user`` the catalogue's id when the run knows the user. Explicit-feedback scores are
unclipped, as :meth:`~metarec.adapt.AdaptedRecommender.recommend` reports them
(the ranking uses the raw scores).

Two paths give the same answers: a batched kernel (:mod:`metarec.serve.kernels`, MeLU and the
two-tower model) and, for every other run or a request with ``domain``, the library's own
``adapt_many`` + ``recommend`` / ``predict``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from metarec._errors import ConfigError, DataError
from metarec.adapt import AdaptedRecommender, MetaModel
from metarec.serve.kernels import Kernel, kernel_for
from metarec.serve.requests import Job

__all__ = ["Engine"]


class Engine:
    """Answers batches of jobs for one run.

    Args:
        meta: the served run.
        steps: inner steps (default: the run's evaluation steps, else the algorithm's).
        lr: inner learning rate (default: the run's).
        batched: use the batched kernel when the run has one (``False``: always the library path).
    """

    def __init__(
        self,
        meta: MetaModel,
        *,
        steps: int | None = None,
        lr: float | None = None,
        batched: bool = True,
    ) -> None:
        self.meta = meta
        algo = meta.algo
        n = meta.steps if steps is None else steps
        n = (0 if algo.name == "global" else algo.inner_steps) if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(
                f"steps={steps!r}: must be an int >= 0; leave it out for the run's default"
            )
        if lr is not None and (
            isinstance(lr, bool)
            or not isinstance(lr, (int, float))
            or not (math.isfinite(lr) and lr > 0)
        ):
            raise ConfigError(
                f"lr={lr!r}: must be a finite number > 0; leave it out for the run's default"
            )
        if lr is not None and algo.meta_learned_lrs:
            raise ConfigError(
                f"lr={lr!r}: name={algo.name!r} adapts with its learned rates; leave lr out"
            )
        self.steps, self.lr = n, lr
        eff = meta.lr if lr is None else lr  # as adapt_many resolves it
        self.alpha = float(algo.inner_lr if eff is None else eff)
        self.kernel: Kernel | None = kernel_for(meta) if batched else None
        self.domain_supported = (
            "domain" in inspect.signature(AdaptedRecommender.recommend).parameters
        )
        self.clip = meta.feedback == "explicit" and meta.rating_scale is not None

    @property
    def path(self) -> str:
        """Which path answers catalogue requests: the kernel's name or ``"library"``."""
        return self.kernel.name if self.kernel is not None else "library"

    def check(self, job: Job) -> None:
        """Refuse what this run cannot answer, before the job is queued."""
        if job.domain is not None and not self.domain_supported:
            raise DataError(
                f"domain={job.domain!r}: domain filtering is unavailable for this run (this metarec's "
                "recommender has no domain option); leave 'domain' out to rank the whole catalogue"
            )

    def run(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """The answers of ``jobs``, in order."""
        out: list[dict[str, Any] | None] = [None] * len(jobs)
        fast = [n for n, j in enumerate(jobs) if self.kernel is not None and j.domain is None]
        if fast:
            for n, ans in zip(fast, self._run_kernel([jobs[n] for n in fast]), strict=True):
                out[n] = ans
        rest = [n for n in range(len(jobs)) if out[n] is None]
        for rnd in _rounds([jobs[n] for n in rest]):  # a user twice in one batch: two adaptations
            for k, ans in zip(rnd, self._run_library([jobs[rest[k]] for k in rnd]), strict=True):
                out[rest[k]] = ans
        return [a for a in out if a is not None]

    # ------------------------------------------------------------------ the kernel path
    def _run_kernel(self, jobs: list[Job]) -> list[dict[str, Any]]:
        assert self.kernel is not None
        kern, meta = self.kernel, self.meta
        uidx = np.asarray([j.uidx for j in jobs], np.int64)
        state = kern.adapt(
            uidx, [j.items for j in jobs], [j.ratings for j in jobs], self.steps, self.alpha
        )
        answers: list[dict[str, Any] | None] = [None] * len(jobs)
        rec = [n for n, j in enumerate(jobs) if j.targets is None]
        if rec:
            sel = torch.as_tensor(rec, device=meta.device)
            part = {k: v[sel] for k, v in state.items()}
            scores = kern.score_catalogue(part)  # (R, C)
            rows = np.repeat(np.arange(len(rec)), [len(jobs[n].items) for n in rec])
            if len(rows):  # each user's support items are left out of its ranking
                cols = np.concatenate([jobs[n].items for n in rec]) - 1
                scores[
                    torch.from_numpy(rows).to(scores.device),
                    torch.from_numpy(cols).to(scores.device),
                ] = -math.inf
            kmax = min(max(jobs[n].k or 1 for n in rec), scores.shape[1])
            # ranking scores are unclipped and ties go to the lower item index, as in
            # Recommender.recommend (a stable descending sort keeps index order among equals)
            top, top_idx = torch.sort(scores, dim=1, descending=True, stable=True)
            finite = torch.isfinite(scores).sum(dim=1).tolist()
            vals, idx = top[:, :kmax].tolist(), (top_idx[:, :kmax] + 1).tolist()
            for r, n in enumerate(rec):
                m = min(jobs[n].k or 1, kmax, finite[r])
                ids = meta.item_ids.decode(idx[r][:m])
                answers[n] = self._answer(jobs[n], ids, vals[r][:m])
        targets = {
            n: j.targets for n, j in enumerate(jobs) if j.targets is not None
        }  # (P,) items of each /predict job
        pred = list(targets)
        if pred:
            width = max(len(targets[n]) for n in pred)
            items = np.zeros((len(pred), width), np.int64)
            for r, n in enumerate(pred):
                items[r, : len(targets[n])] = targets[n]
            sel = torch.as_tensor(pred, device=meta.device)
            scores = kern.score_items(
                {k: v[sel] for k, v in state.items()}, torch.from_numpy(items).to(meta.device)
            )
            for r, n in enumerate(pred):
                j = jobs[n]
                row = scores[r, : len(targets[n])]
                row_vals = (self._clipped(row) if j.clip else row).tolist()
                answers[n] = self._answer(j, meta.item_ids.decode(targets[n]), row_vals)
        return [a for a in answers if a is not None]

    def _clipped(self, scores: torch.Tensor) -> torch.Tensor:
        scale = self.meta.rating_scale
        return scores.clamp(scale[0], scale[1]) if self.clip and scale is not None else scores

    # ------------------------------------------------------------------ the library path
    def _run_library(self, jobs: list[Job]) -> list[dict[str, Any]]:
        meta = self.meta
        users = np.repeat(
            np.asarray([j.user for j in jobs], dtype=object), [len(j.items) for j in jobs]
        )
        items: np.ndarray | list[Any] = (
            np.concatenate([np.asarray(meta.item_ids.decode(j.items), dtype=object) for j in jobs])
            if len(users)
            else []
        )
        ratings: np.ndarray | list[Any] = (
            np.concatenate([j.ratings for j in jobs]) if len(users) else []
        )
        if len(users):
            frame = pd.DataFrame({"user": users, "item": items, "rating": ratings})
            rec = meta.adapt_many(frame, steps=self.steps, lr=self.lr)
        else:
            rec = meta.initial()
        out = []
        for j in jobs:
            if j.targets is None:
                kw: dict[str, Any] = {"domain": j.domain} if j.domain is not None else {}
                top = rec.recommend(j.user, k=j.k or 10, **kw)
                out.append(self._answer(j, [i for i, _ in top], [s for _, s in top]))
            else:
                vals = rec.predict(j.user, j.target_ids or [], clip=j.clip)
                out.append(
                    self._answer(j, meta.item_ids.decode(j.targets), [float(v) for v in vals])
                )  # type: ignore[arg-type]
        return out

    def _answer(self, job: Job, items: list[Any], scores: list[float]) -> dict[str, Any]:
        user = (
            self.meta.user_ids.values[job.uidx - 1] if job.uidx else job.user
        )  # the catalogue's id when known
        return {
            "user": user,
            "items": [{"item": i, "score": float(s)} for i, s in zip(items, scores, strict=True)],
        }


def _rounds(jobs: list[Job]) -> list[list[int]]:
    """Positions of ``jobs`` split so that no user appears twice in one round (ids compared as
    the encoders compare them: ``5`` and ``"5"`` are one user)."""
    rounds: list[list[int]] = []
    seen: list[set[str]] = []
    for n, j in enumerate(jobs):
        key = str(j.user)
        for r, s in zip(rounds, seen, strict=True):
            if key not in s:
                r.append(n)
                s.add(key)
                break
        else:
            rounds.append([n])
            seen.append({key})
    return rounds
