"""Finite-output guarantees and bounds on what a run folder may ask for.

Serving never answers with NaN scores or an empty list and exit status 0:

- :func:`check_finite_weights`: loaded weights with a NaN or an infinity are a
  :class:`~metarec._errors.CheckpointError` naming the file and the parameter.
- :func:`ensure_finite_adaptation`: adaptation that diverged (``lr=1e30``) for some users is a
  :class:`~metarec._errors.ConfigError` naming them and the fix, or, with
  ``on_diverge="fallback"``, those users get the meta-learned initialisation and a
  ``UserWarning`` says so.
- :func:`check_scores`: scores that are not finite (finite weights that overflow) are an error.

A run folder is data, and data can be hostile: :func:`check_run_limits` bounds the step counts
(:data:`metarec.config.limits.MAX_STEPS`) and model sizes a run folder may ask for, so no run folder
can make ``recommend`` run for hours or allocate without limit.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from metarec._errors import CheckpointError, ConfigError, DataError, py
from metarec.config.limits import check_steps

__all__ = [
    "Diverged",
    "diverged_message",
    "fallback_message",
    "MAX_EMBEDDING_DIM",
    "MAX_WIDTH",
    "MAX_LAYERS",
    "OnDiverge",
    "check_run_limits",
    "check_finite_weights",
    "ensure_finite_adaptation",
    "check_scores",
    "scores_error",
    "check_recommendations",
]

MAX_EMBEDDING_DIM = 8_192
"""Largest ``model.embedding_dim`` a run folder may ask to build."""
MAX_WIDTH = 65_536
"""Largest hidden layer width a run folder may ask to build."""
MAX_LAYERS = 64
"""Most hidden layers a run folder may ask to build."""

OnDiverge = Literal["error", "fallback"]


class Diverged(ConfigError):
    """Adaptation produced non-finite weights or scores (too large an ``lr``, too many steps):
    a :class:`~metarec._errors.ConfigError` of the serving configuration, not of the request."""


def _how(lr: float | None, steps: int | None) -> str:
    return f"inner lr={lr if lr is not None else 'the run default'}, {steps} step(s)"


def diverged_message(n_bad: int, n: int, who: str, lr: float | None, steps: int | None) -> str:
    """The error of ``on_diverge="error"``: ``n_bad`` of ``n`` tasks (users ``who``) diverged."""
    return (
        f"adaptation diverged for {n_bad} of {n} task(s) ({who}): the adapted weights are not finite "
        f"({_how(lr, steps)}); pass a smaller lr (--lr) or fewer steps (--steps), or on_diverge='fallback' "
        "(--on-diverge fallback) to serve those users the meta-learned initialisation"
    )


def fallback_message(n_bad: int, n: int, who: str, lr: float | None, steps: int | None) -> str:
    """The warning of ``on_diverge="fallback"`` (the same case as :func:`diverged_message`)."""
    return (
        f"adaptation diverged for {n_bad} of {n} task(s) ({who}; {_how(lr, steps)}): those users are served "
        "the meta-learned initialisation (on_diverge='fallback'); pass a smaller lr or fewer steps to adapt them"
    )


def check_run_limits(manifest: Mapping[str, Any], run_dir: str | Path) -> None:
    """Bound what a run folder asks for before anything is built from it.

    Checks the manifest's ``algorithm.inner_steps``, ``model.kwargs.embedding_dim`` and
    ``model.kwargs.hidden``, and ``config.json``'s ``algorithm.eval_steps`` and ``eval_lr``.

    Raises:
        CheckpointError: a value out of bounds, or a ``config.json`` that is not a JSON object,
            naming the file, the key and the limit.
    """
    run = Path(run_dir)
    config = _read_config(run / "config.json")
    man = str(run / "manifest.json")
    algo = _section(manifest, "algorithm")
    if algo.get("inner_steps") is not None:
        check_steps(algo.get("inner_steps"), "algorithm.inner_steps", where=man)
    kw = _section(_section(manifest, "model"), "kwargs")
    dim = kw.get("embedding_dim")
    if dim is not None and not (isinstance(dim, int) and 1 <= dim <= MAX_EMBEDDING_DIM):
        raise CheckpointError(
            f"{man!r}: model.kwargs.embedding_dim={py(dim)!r}: must be an int in 1..{MAX_EMBEDDING_DIM:,}; "
            "the run folder is damaged or not trustworthy; re-train"
        )
    hidden = kw.get("hidden")
    if hidden is not None and not (
        isinstance(hidden, (list, tuple))
        and len(hidden) <= MAX_LAYERS
        and all(isinstance(h, int) and 1 <= h <= MAX_WIDTH for h in hidden)
    ):
        raise CheckpointError(
            f"{man!r}: model.kwargs.hidden={hidden!r}: must be at most {MAX_LAYERS} widths, each an int "
            f"in 1..{MAX_WIDTH:,}; the run folder is damaged or not trustworthy; re-train"
        )
    a = _section(config or {}, "algorithm")
    if a.get("eval_steps") is not None:
        check_steps(a.get("eval_steps"), "algorithm.eval_steps", where=str(run / "config.json"))
    lr = a.get("eval_lr")
    if lr is not None and not (
        isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0
    ):
        raise CheckpointError(
            f"{str(run / 'config.json')!r}: algorithm.eval_lr={py(lr)!r}: must be a finite number > 0; "
            "restore the file from a copy, or re-train"
        )


def check_finite_weights(tensors: Mapping[str, Any], where: str | Path) -> None:
    """Raise when a tensor of ``tensors`` holds a NaN or an infinity.

    Raises:
        CheckpointError: naming ``where`` (the file), the first such tensor and the count.
    """
    for k, v in tensors.items():
        if (
            isinstance(v, torch.Tensor)
            and v.is_floating_point()
            and not bool(torch.isfinite(v).all())
        ):
            n = int((~torch.isfinite(v)).sum())
            raise CheckpointError(
                f"checkpoint {str(where)!r}: {k!r} holds {n:,} non-finite value(s) (NaN or infinity) of {v.numel():,}; "
                "these weights cannot score anything; restore the file from a copy, or re-train (a run that diverged "
                "needs e.g. a smaller train.outer_lr or algorithm.inner_lr)"
            )


def ensure_finite_adaptation(rec: Any, on_diverge: OnDiverge = "error") -> Any:
    """Check an adapted recommender task by task: a task whose scores of its own support are
    not finite diverged (too large a rate, too many steps).

    ``rec`` is a :class:`metarec.recommend.recommender.Recommender` (any method). With
    ``on_diverge="fallback"`` the users of diverged tasks are served, in place, by the
    initialisation (the method adapted to an empty support), with a warning.

    Raises:
        ConfigError: ``on_diverge="error"`` (the default) and some task diverged; the message
            names the users and the fix.
    """
    if on_diverge not in ("error", "fallback"):
        raise ConfigError(
            f"on_diverge={on_diverge!r}: choose 'error' or 'fallback' (--on-diverge error|fallback)"
        )
    n = rec.n_tasks
    if n == 0:
        return rec
    ok = rec.finite_tasks()
    if bool(ok.all()):
        return rec
    bad = np.flatnonzero(~ok.numpy())
    who = _task_users(rec, bad)
    if on_diverge == "error":
        raise Diverged(diverged_message(len(bad), n, who, rec.lr, rec.steps))
    rec.fall_back(bad)
    warnings.warn(fallback_message(len(bad), n, who, rec.lr, rec.steps), UserWarning, stacklevel=3)
    return rec


def check_scores(scores: torch.Tensor, *, user: Any = None, adapted: bool = False) -> None:
    """Raise when ``scores`` (any shape) hold a NaN or an infinity.

    Raises:
        Diverged: ``adapted``: the adaptation overflowed; the fix is a smaller lr / fewer steps.
        CheckpointError: the run's own weights overflow.
    """
    fin = torch.isfinite(scores)
    if bool(fin.all()):
        return
    raise scores_error(int((~fin).sum()), scores.numel(), user=user, adapted=adapted)


def scores_error(n: int, total: int, *, user: Any = None, adapted: bool = False) -> Exception:
    """The error :func:`check_scores` raises when ``n`` of ``total`` scores are not finite."""
    who = f" for user {py(user)!r}" if user is not None else ""
    msg = f"{n:,} of {total:,} score(s){who} are not finite (NaN or infinity)"
    if adapted:
        return Diverged(
            f"{msg}: the adapted weights overflow; adapt again with a smaller lr (--lr) or fewer steps "
            "(--steps), or serve the meta-learned initialisation (no --support)"
        )
    return CheckpointError(
        f"{msg}: the run's weights overflow; restore the run from a copy, or re-train"
    )


def _task_users(rec: Any, tasks: np.ndarray, n: int = 3) -> str:
    if rec.per == "domain":
        return "the domain task"
    task_of = np.asarray(rec._task_of)
    users = rec.users
    names = [users[c - 1] for c in range(1, len(task_of)) if task_of[c] in set(tasks.tolist())]
    shown = ", ".join(f"user {py(u)!r}" for u in names[:n]) + (", ..." if len(names) > n else "")
    return shown or f"task(s) {tasks[:n].tolist()}"


def _read_config(p: Path) -> Mapping[str, Any] | None:
    if not p.is_file():
        return None
    try:
        cfg = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{str(p)!r}: not valid JSON ({e}); the run directory is damaged; restore it or re-train"
        ) from None
    if not isinstance(cfg, Mapping):
        raise CheckpointError(
            f"{str(p)!r}: holds a JSON {type(cfg).__name__}, not an object; the run directory is damaged; "
            "restore it or re-train"
        )
    return cfg


def check_recommendations(top: list[Any], user: Any) -> None:
    """Raise when a recommendation list is empty (every candidate excluded), so a caller never
    prints an empty list as if it were an answer.

    Raises:
        DataError: naming the user.
    """
    if not top:
        raise DataError(
            f"user {py(user)!r}: no item left to recommend: every item of the catalogue is in this user's "
            "support set; recommend from a larger catalogue, or drop some support rows"
        )


def _section(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    sec = d.get(key)
    return sec if isinstance(sec, Mapping) else {}
