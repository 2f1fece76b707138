"""The serving engine: a batch of validated requests -> their answers, in one adaptation.

:class:`Engine` holds the run (a :class:`~metarec.recommend.load.MetaModel`) and answers a list of
:class:`~metarec.serve.requests.Job` s at once: every job's support set is one task, all tasks
are adapted together, then every ``/recommend`` job gets its top-k over the whole catalogue
(its own support items left out, as ``metarec recommend`` does) and every ``/predict`` job the
scores of its items. Answers have the shape of ``metarec recommend --json``::

    {"user": "u", "items": [{"item": "1193", "score": 4.61}, ...], "warnings": [...]}

with ``user`` the catalogue's id when the run knows the user; ids are always strings, whatever
type the run was trained with; ``warnings`` (only when there is one) says what was done that
the client may not expect. Explicit-feedback scores are
unclipped, as :meth:`~metarec.recommend.load.AdaptedRecommender.recommend` reports them
(the ranking uses the raw scores).

Two paths give the same answers: a batched kernel (:mod:`metarec.serve.kernels`, for the models
that declare one) and, for every other run or a request with ``domain``, the library's own
adaptation (:meth:`~metarec.recommend.run_model.RunModel.adapt_encoded`: the requests' encoded
rows go straight to the method) + ``recommend`` / ``predict``.

Both keep the library's finite-output rule (:mod:`metarec.runs.guard`): a user whose adapted weights
are not finite is answered with the error of ``metarec recommend`` (``on_diverge="error"``), or
served the meta-learned initialisation with a warning in its answer (``"fallback"``);
scores that are not finite are an error. A failure of one user never reaches the others of its
batch: its answer is the exception (:class:`~metarec.serve.batcher.MicroBatcher` raises it to
that request alone).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch

from metarec._errors import ConfigError, DataError, MetarecError, py
from metarec.metrics.topk import top_k
from metarec.recommend.load import AdaptedRecommender, MetaModel
from metarec.recommend.support import encoded_tasks
from metarec.runs.guard import Diverged, diverged_message, fallback_message, scores_error
from metarec.serve.kernels import Kernel, kernel_for
from metarec.serve.requests import Job

__all__ = ["Engine"]


class Engine:
    """Answers batches of jobs for one run.

    Args:
        meta: the served run (a :class:`~metarec.recommend.load.MetaModel`, or a
            :class:`~metarec.recommend.load.MethodModel`: any other method, on the library path).
        steps: inner steps (default: the run's evaluation steps, else the algorithm's; a
            method's own choice for a ``MethodModel``).
        lr: inner learning rate (default: the run's).
        batched: use the batched kernel when the run has one (``False``: always the library path).
        on_diverge: ``"error"`` or ``"fallback"``, as ``metarec recommend --on-diverge``.
    """

    def __init__(
        self,
        meta: MetaModel,
        *,
        steps: int | None = None,
        lr: float | None = None,
        batched: bool = True,
        on_diverge: str = "error",
    ) -> None:
        self.meta = meta
        algo = getattr(meta, "algo", None)
        n = meta.steps if steps is None else steps
        if algo is not None:
            n = (0 if algo.name == "global" else algo.inner_steps) if n is None else n
        if n is None and algo is None:
            pass  # a method of the interface (a MethodModel) adapts with its own settings
        elif isinstance(n, bool) or not isinstance(n, int) or n < 0:
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
        if lr is not None and algo is not None and algo.meta_learned_lrs:
            raise ConfigError(
                f"lr={lr!r}: name={algo.name!r} adapts with its learned rates; leave lr out"
            )
        if on_diverge not in ("error", "fallback"):
            raise ConfigError(
                f"on_diverge={on_diverge!r}: choose 'error' or 'fallback' (--on-diverge error|fallback)"
            )
        self.steps, self.lr, self.on_diverge = n, lr, on_diverge
        eff = getattr(meta, "lr", None) if lr is None else lr  # as adapt_many resolves it
        # the kernels' rate (a MethodModel has no kernel: its method resolves its own)
        self.alpha = 0.0 if algo is None else float(algo.inner_lr if eff is None else eff)
        self._lr_shown = eff  # what the library's divergence message names
        self.kernel: Kernel | None = kernel_for(meta) if batched and algo is not None else None
        self.domain_supported = (
            "domain" in inspect.signature(AdaptedRecommender.recommend).parameters
        )
        self.clip = (
            meta.feedback == "explicit"
            and meta.rating_scale is not None
            and not getattr(meta, "ranks", False)  # a run trained to rank: scores, not ratings
        )
        self.diverged = 0  # users whose adaptation diverged (answered an error, or the fallback)

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

    def run(self, jobs: list[Job]) -> list[dict[str, Any] | MetarecError]:
        """The answers of ``jobs``, in order (an answer may be the job's error)."""
        out: list[Any] = [None] * len(jobs)
        fast = [n for n, j in enumerate(jobs) if self.kernel is not None and j.domain is None]
        if fast:
            for n, ans in zip(fast, self._run_kernel([jobs[n] for n in fast]), strict=True):
                out[n] = ans
        rest = [n for n in range(len(jobs)) if out[n] is None]
        for rnd in _rounds([jobs[n] for n in rest]):  # a user twice in one batch: two adaptations
            for k, ans in zip(rnd, self._run_library([jobs[rest[k]] for k in rnd]), strict=True):
                out[rest[k]] = ans
        return out

    # ------------------------------------------------------------------ the kernel path
    def _run_kernel(self, jobs: list[Job], steps: int | None = None) -> list[Any]:
        assert self.kernel is not None
        kern = self.kernel
        steps = self.steps if steps is None else steps
        assert steps is not None  # a run with a kernel always resolves its steps
        uidx = np.asarray([j.uidx for j in jobs], np.int64)
        state = kern.adapt(
            uidx, [j.items for j in jobs], [j.ratings for j in jobs], steps, self.alpha
        )
        ok = kern.finite_tasks(state) if steps else None
        if ok is None or bool(ok.all()):
            return self._kernel_answers(jobs, state, adapted=steps > 0)
        answers: list[Any] = [None] * len(jobs)
        bad = np.flatnonzero(~ok.cpu().numpy())
        good = np.flatnonzero(ok.cpu().numpy())
        self.diverged += len(bad)
        if self.on_diverge == "error":
            for n in bad:
                answers[n] = Diverged(
                    diverged_message(1, 1, _who(jobs[n]), self._lr_shown, self.steps)
                )
        else:  # the meta-learned initialisation, with the library's warning
            init = self._run_kernel([jobs[n] for n in bad], steps=0)
            for n, ans in zip(bad, init, strict=True):
                if isinstance(ans, dict):
                    _warn(ans, fallback_message(1, 1, _who(jobs[n]), self._lr_shown, self.steps))
                answers[n] = ans
        if len(good):
            sel = torch.as_tensor(good, device=self.meta.device)
            part = {k: v[sel] for k, v in state.items()}
            for n, ans in zip(
                good, self._kernel_answers([jobs[n] for n in good], part, True), strict=True
            ):
                answers[n] = ans
        return answers

    def _kernel_answers(
        self, jobs: list[Job], state: dict[str, torch.Tensor], adapted: bool
    ) -> list[Any]:
        assert self.kernel is not None
        kern, meta = self.kernel, self.meta
        answers: list[Any] = [None] * len(jobs)
        rec = [n for n, j in enumerate(jobs) if j.targets is None]
        if rec:
            part = _rows(state, rec, meta.device)
            scores = kern.score_catalogue(part)  # (R, C)
            ok = kern.finite_scores(part, scores).tolist()  # before the support items are -inf
            rows = np.repeat(np.arange(len(rec)), [len(jobs[n].items) for n in rec])
            if len(rows):  # each user's support items are left out of its ranking
                cols = np.concatenate([jobs[n].items for n in rec]) - 1
                scores[
                    torch.from_numpy(rows).to(scores.device),
                    torch.from_numpy(cols).to(scores.device),
                ] = -math.inf
            kmax = min(max(jobs[n].k or 1 for n in rec), scores.shape[1])
            # ranking scores are unclipped and ties go to the lower item index, as in
            # Recommender.recommend
            top, top_idx = top_k(scores, kmax)  # (R, kmax)
            finite = torch.isfinite(top).sum(dim=1).tolist()  # the excluded items are -inf
            vals, idx = top.tolist(), (top_idx + 1).tolist()
            for r, n in enumerate(rec):
                if not ok[r]:
                    answers[n] = self._scores_error(jobs[n], part, adapted, r)
                    continue
                m = min(jobs[n].k or 1, kmax, finite[r])
                ids = meta.item_ids.decode(idx[r][:m])
                answers[n] = self._answer(jobs[n], ids, vals[r][:m])
        pred = [n for n, j in enumerate(jobs) if j.targets is not None]
        if pred:
            targets = [np.asarray(jobs[n].targets) for n in pred]  # (P,) items of each job
            width = max(len(t) for t in targets)
            items = np.zeros((len(pred), width), np.int64)
            for r, t in enumerate(targets):
                items[r, : len(t)] = t
            scores = kern.score_items(
                _rows(state, pred, meta.device), torch.from_numpy(items).to(meta.device)
            )
            for r, n in enumerate(pred):
                j = jobs[n]
                row = scores[r, : len(targets[r])]
                fin = torch.isfinite(row)
                if not bool(fin.all()):
                    answers[n] = scores_error(
                        int((~fin).sum()), row.numel(), user=None, adapted=adapted
                    )
                    continue
                row_vals = (self._clipped(row) if j.clip else row).tolist()
                answers[n] = self._answer(j, meta.item_ids.decode(j.targets), row_vals)  # type: ignore[arg-type]
        return answers

    def _scores_error(
        self, job: Job, state: dict[str, torch.Tensor], adapted: bool, r: int
    ) -> MetarecError:
        """The library's error for task ``r``'s non-finite catalogue scores (counted before the
        support items were left out)."""
        raw = self.kernel.score_catalogue({k: v[r : r + 1] for k, v in state.items()})  # type: ignore[union-attr]
        n_bad = int((~torch.isfinite(raw)).sum())
        return scores_error(n_bad, raw.numel(), user=job.user, adapted=adapted)  # type: ignore[return-value]

    def _clipped(self, scores: torch.Tensor) -> torch.Tensor:
        scale = self.meta.rating_scale
        return scores.clamp(scale[0], scale[1]) if self.clip and scale is not None else scores

    # ------------------------------------------------------------------ the library path
    def _run_library(self, jobs: list[Job], initial: bool = False) -> list[Any]:
        """The library's adaptation and recommender for ``jobs`` (distinct users): the validated,
        encoded rows go straight to the method's adaptation (nothing is decoded into a frame and
        parsed again)."""
        meta = self.meta
        if any(len(j.items) for j in jobs) and not initial:
            tasks = encoded_tasks(
                meta.user_ids,
                [j.user for j in jobs],
                [j.items for j in jobs],
                [j.ratings for j in jobs],
            )
            try:
                rec = meta.adapt_encoded(tasks, steps=self.steps, lr=self.lr)
            except Diverged as e:
                if len(jobs) > 1:  # find the users that diverged: each on its own
                    return [a for j in jobs for a in self._run_library([j])]
                self.diverged += 1
                if self.on_diverge == "error":
                    return [e]
                init = self._run_library(jobs, initial=True)
                if isinstance(init[0], dict):
                    _warn(
                        init[0], fallback_message(1, 1, _who(jobs[0]), self._lr_shown, self.steps)
                    )
                return init
        else:
            rec = meta.initial()
        out: list[Any] = []
        for j in jobs:
            try:
                if j.targets is None:
                    kw: dict[str, Any] = {"domain": j.domain} if j.domain is not None else {}
                    top = rec.recommend(j.user, k=j.k or 10, **kw)
                    out.append(self._answer(j, [i for i, _ in top], [s for _, s in top]))
                else:
                    vals = rec.predict(j.user, j.target_ids or [], clip=j.clip)
                    ids = meta.item_ids.decode(j.targets)  # type: ignore[arg-type]
                    out.append(self._answer(j, ids, [float(v) for v in vals]))
            except MetarecError as e:  # this job's alone (a domain it does not know, ...)
                out.append(e)
        return out

    def _answer(self, job: Job, items: list[Any], scores: list[float]) -> dict[str, Any]:
        user = (
            self.meta.user_ids.values[job.uidx - 1] if job.uidx else job.user
        )  # the catalogue's id when known
        out: dict[str, Any] = {
            "user": str(user),  # ids are strings on the wire, whatever the run was trained with
            "items": [
                {"item": str(i), "score": float(s)} for i, s in zip(items, scores, strict=True)
            ],
        }
        if job.warnings:
            out["warnings"] = list(job.warnings)
        return out


def _warn(answer: dict[str, Any], message: str) -> None:
    answer.setdefault("warnings", []).append(message)


def _rows(state: dict[str, torch.Tensor], rows: list[int], device: Any) -> dict[str, torch.Tensor]:
    """The tasks ``rows`` of a kernel state (no copy when they are all of them, in order)."""
    n = next(iter(state.values())).shape[0]
    if rows == list(range(n)):
        return state
    sel = torch.as_tensor(rows, device=device)
    return {k: v[sel] for k, v in state.items()}


def _who(job: Job) -> str:
    return f"user {py(job.user)!r}"


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
