"""``metarec bench --tune N``: a small search over each algorithm's settings, selected on meta-val only.

Each algorithm has a search space (:data:`SPACES`, one table for every method; a user's own
method gets one with :func:`register_tuning_space`): setting -> candidate values. A dotted key
(``algorithm.inner_lr``, ``train.outer_lr``, ``model.embedding_dim``) is a scenario key applied
on top of the algorithm's variant; an undotted one (``kl_weight``) is a setting of the method
(``build_method(name, scenario, **settings)``).

Every algorithm gets the same ``N`` trials (fewer only when its space has fewer points): trial 0
is the algorithm's own configuration (the scenario's values), trials 1..N-1 are distinct points of
the grid drawn with a fixed seed (:func:`trial_configs`). Each trial is trained on seed 0 with the
benchmark's budget (the quick budget with ``--quick``) and scored on the meta-val pool (at most
``train.val_tasks`` tasks) with the method's validation metric (MAE for explicit feedback, AUC for
implicit), adapting as the test evaluation will. The trial with the best meta-val score is chosen
(ties: the earlier trial), and the benchmark then runs every seed with it.

The test pools are never touched during trials: a trial sees the splits with every test state
removed (:func:`val_only_splits`). Trials are appended to ``tuning.jsonl`` as they finish, so a
resumed benchmark does not run them again.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from metarec._errors import ConfigError
from metarec.bench.context import RunContext
from metarec.bench.resume import append_jsonl, clear_run_dir
from metarec.bench.runner import FINETUNE_LRS, fit_method, tuned_scenario
from metarec.bench.stats import PRIMARY, lower_is_better
from metarec.bench.variants import variant_scenario
from metarec.config import to_dict
from metarec.episodes.build import sampler_config
from metarec.episodes.splits import MetaSplits
from metarec.methods import adaptation_for, build_method, fitted_place
from metarec.metrics.evaluate import evaluate_fitted

__all__ = [
    "SPACES",
    "TUNING_FILE",
    "Trial",
    "register_tuning_space",
    "tuning_space",
    "trial_configs",
    "val_only_splits",
    "tune_algorithm",
]

TUNING_FILE = "tuning.jsonl"

_OUTER = {"train.outer_lr": (3e-4, 1e-3, 3e-3)}
_EMBED = {"model.embedding_dim": (16, 32, 64)}
_INNER = {"algorithm.inner_lr": (0.003, 0.01, 0.03, 0.1), "algorithm.inner_steps": (1, 3, 5)}
_LEARNER = {"lr": (3e-4, 1e-3, 3e-3), "dim": (16, 32, 64)}
_WARMUP = {"lr": (3e-4, 1e-3, 3e-3), "alpha": (0.05, 0.1, 0.3), "cold_lr": (0.3, 1.0, 3.0)}
_BRIDGE = {"lr": (3e-4, 1e-3, 3e-3), "inner_lr": (0.03, 0.1, 0.3), "inner_steps": (1, 3, 5)}

SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    # the MAML family: inner rate and steps, outer rate, embedding size
    "maml": {**_INNER, **_OUTER, **_EMBED},
    "fomaml": {**_INNER, **_OUTER, **_EMBED},
    "anil": {**_INNER, **_OUTER, **_EMBED},
    "reptile": {**_INNER, **_OUTER, **_EMBED},
    "metasgd": {
        "algorithm.inner_lr": (0.003, 0.01, 0.03, 0.1),
        **_OUTER,
        **_EMBED,
    },  # initial rates
    "melu-ref": {
        "algorithm.inner_lr": (5e-6, 5e-5, 5e-4, 5e-3),
        "train.outer_lr": (5e-5, 1.5e-4, 5e-4),
        "algorithm.eval_steps": (1, 5, 10),
    },
    # baselines: the same number of trials over their own rates and sizes
    "global": {"train.outer_lr": (3e-4, 1e-3, 3e-3, 1e-2), **_EMBED},
    "finetune": {
        **_OUTER,
        **_EMBED,
        "algorithm.eval_lr": FINETUNE_LRS,
        "algorithm.eval_steps": (1, 3, 5, 10),
    },
    "feature-global": {**_LEARNER},
    "warmup-base": {"pretrain_lr": (3e-4, 1e-3, 3e-3), "warm_steps": (1, 3, 5)},
    # the cold-start learners: outer rate, embedding size and their own weights
    "tanp": {**_LEARNER, "kl_weight": (0.01, 0.1, 1.0)},
    "mamo": {
        **_LEARNER,
        "inner_lr": (0.01, 0.05, 0.1),
        "inner_steps": (1, 3, 5),
        "alpha": (0.05, 0.1, 0.3),
    },
    "r2d2": {
        **_LEARNER,
        "rank": (4, 16, 32),
        "ridge": (0.3, 1.0, 3.0),
        "id_dropout": (0.1, 0.2, 0.5),
    },
    "lwa": {**_LEARNER},
    "nlba": {**_LEARNER},
    "metaemb": dict(_WARMUP),
    "mwuf": dict(_WARMUP),
    "metabridge": dict(_BRIDGE),
    "maml-source-init": dict(_BRIDGE),
    "reptile-source-init": dict(_BRIDGE),
}
"""Algorithm -> search space (setting -> candidate values; see the module docstring). ``popularity``
has no setting to tune; the cross-domain methods choose their adaptation on meta-val themselves
(no space: not searched)."""


def register_tuning_space(
    name: str, space: Mapping[str, Sequence[Any]], *, replace: bool = False
) -> None:
    """Give algorithm ``name`` (e.g. a method of :func:`~metarec.methods.register_method`) a search
    space for ``--tune``: ``{setting: candidate values}`` (dotted keys are scenario keys)."""
    if name in SPACES and not replace:
        raise ConfigError(f"tuning space of {name!r} exists; pass replace=True to replace it")
    for key, values in space.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(
                f"space[{key!r}]={values!r}: expected a non-empty list of candidate values, e.g. [0.01, 0.1]"
            )
    SPACES[name] = {k: tuple(v) for k, v in space.items()}


def tuning_space(algorithm: str) -> dict[str, tuple[Any, ...]] | None:
    """The search space of ``algorithm`` (``None``: nothing to tune)."""
    return SPACES.get(algorithm)


def trial_configs(
    space: Mapping[str, Sequence[Any]], n: int, *, seed: int = 0
) -> list[dict[str, Any]]:
    """``n`` trial configurations: ``{}`` (the algorithm's own values), then ``n - 1`` distinct
    grid points in a seeded random order (all of them when the grid is smaller).

    >>> trial_configs({"a": (1, 2), "b": (3,)}, 5)
    [{}, {'a': 1, 'b': 3}, {'a': 2, 'b': 3}]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(
            f"tune={n!r}: the number of trials must be an integer >= 1; e.g. --tune 8"
        )
    keys = list(space)
    grid = list(itertools.product(*(space[k] for k in keys)))
    order = np.random.default_rng([seed, 11]).permutation(len(grid))[: n - 1]
    return [{}] + [dict(zip(keys, grid[i], strict=True)) for i in order]


def val_only_splits(splits: MetaSplits) -> MetaSplits:
    """``splits`` with every test state removed: what a trial may see (meta-train and meta-val)."""
    keep = {splits.train, splits.val}
    return replace(
        splits,
        pools={k: v for k, v in splits.pools.items() if k in keep},
        states=[],
        disjoint_units=[p for p in splits.disjoint_units if p in keep],
        cold_items={k: v for k, v in splits.cold_items.items() if k in keep},
        warm_units={k: v for k, v in splits.warm_units.items() if k in keep},
    )


@dataclass
class Trial:
    """One trial's outcome (a line of ``tuning.jsonl``)."""

    algorithm: str
    trial: int
    values: dict[str, Any]
    score: float | None
    metric: str
    seconds: float

    def to_row(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "trial": self.trial,
            "values": self.values,
            "score": self.score,
            "metric": self.metric,
            "seconds": round(self.seconds, 2),
        }


Scorer = Callable[[RunContext, dict[str, Any], Path], float]
"""``score(ctx, values, run_dir) -> meta-val score`` of one trial (:func:`meta_val_score`)."""


def tune_algorithm(
    ctx: RunContext,
    n: int,
    *,
    done: Sequence[dict[str, Any]] = (),
    score: Scorer | None = None,
    say: Callable[..., None] = print,
) -> dict[str, Any]:
    """Run the trials of ``ctx.algo`` not in ``done`` (earlier ``tuning.jsonl`` rows) and choose.

    ``ctx`` is seed 0's context; ``ctx.out / "tuning.jsonl"`` receives each finished trial.

    Returns:
        The ``tuned`` record stored in every row of the algorithm: ``{"n", "metric",
        "values": chosen configuration (the resolved values of every searched setting),
        "trial": chosen index, "trials": [{"trial", "values", "score"}...]}``, or ``{"n",
        "note"}`` when the algorithm has nothing to tune.
    """
    metric = PRIMARY[ctx.table.feedback]
    space = tuning_space(ctx.algo)
    if not space:
        return {"n": n, "note": f"no search space for {ctx.algo!r} (register_tuning_space)"}
    score = score or meta_val_score
    configs = trial_configs(space, n)
    have = {int(r["trial"]): r for r in done if r.get("algorithm") == ctx.algo}
    trial_ctx = replace(ctx, splits=val_only_splits(ctx.splits))
    trials: list[dict[str, Any]] = []
    for i, values in enumerate(configs):
        row = have.get(i)
        if row is None or row.get("values") != values:
            run_dir = ctx.out / "tuning" / ctx.algo / f"trial-{i}"
            clear_run_dir(run_dir)  # a trial cut short by an interruption starts again
            t0 = time.perf_counter()
            s = float(score(replace(trial_ctx, tuned=values), values, run_dir))
            row = Trial(
                ctx.algo,
                i,
                values,
                s if math.isfinite(s) else None,
                metric,
                time.perf_counter() - t0,
            ).to_row()
            append_jsonl(ctx.out / "tuning.jsonl", [row], sync=True)
            say(
                f"  tune {ctx.algo:<10} trial {i}: {values or 'own settings'} -> meta-val {metric} {s:.4f}"
            )
        trials.append({"trial": i, "values": row["values"], "score": row["score"]})
    sign = 1.0 if lower_is_better(metric) else -1.0
    ranked = [t for t in trials if t["score"] is not None]
    if not ranked:
        raise ConfigError(
            f"--tune: every trial of {ctx.algo!r} gave a non-finite meta-val {metric}; check its settings "
            "(e.g. a smaller train.outer_lr) or run without --tune"
        )
    best = min(ranked, key=lambda t: (sign * t["score"], t["trial"]))
    return {
        "n": n,
        "metric": metric,
        "trial": best["trial"],
        "values": {**own_values(ctx, space), **best["values"]},
        "trials": trials,
    }


def own_values(ctx: RunContext, space: Mapping[str, Any]) -> dict[str, Any]:
    """The algorithm's own values of the searched settings (what trial 0 runs with)."""
    sc = variant_scenario(ctx.scenario, ctx.algo, quick=ctx.quick)
    d = to_dict(sc)
    out: dict[str, Any] = {}
    dotted = [k for k in space if "." in k]
    for k in dotted:
        node: Any = d
        for part in k.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[k] = node
    bare = [k for k in space if "." not in k]
    if bare:
        settings = getattr(build_method(ctx.algo, sc), "settings", None)
        if settings is not None:
            sd = to_dict(settings)
            out.update({k: sd.get(k) for k in bare})
    return out


def meta_val_score(ctx: RunContext, values: dict[str, Any], run_dir: Path) -> float:
    """Train ``ctx.algo`` with ``values`` on ``ctx.splits`` (test states removed) and return its
    meta-val score, adapting as the test evaluation does."""
    if ctx.scenario.warmup is not None:  # item warm-up: mean AUC over the phases
        from metarec.bench.warmup_rows import warmup_val_score

        return warmup_val_score(ctx, values, run_dir)
    pool = ctx.splits.pools[ctx.splits.val]
    metric = PRIMARY[ctx.table.feedback]
    sc = tuned_scenario(variant_scenario(ctx.scenario, ctx.algo, quick=ctx.quick), values)
    fitted = fit_method(replace(ctx, tuned=values), sc, run_dir)
    scfg = sampler_config(sc.protocol)
    a = adaptation_for(fitted, scfg)
    ev = evaluate_fitted(
        fitted,
        ctx.table,
        pool,
        scfg,
        steps=a.steps,
        lr=a.lr,
        max_tasks=sc.train.val_tasks,
        k=sc.metrics.k,
        seed=ctx.seed,
        device=ctx.device,
        dtype=fitted_place(fitted)[1],
    )
    return float(ev[metric])
