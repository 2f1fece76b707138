"""What each benchmark algorithm is: a scenario override, so every row is reproducible from its
resolved config.

A benchmark algorithm is a name (the row label) and a set of ``--set``-style overrides applied to
the scenario under test (:data:`VARIANTS`); the resolved scenario is what ``metarec train`` would
run with the same ``--set`` values, and its :func:`~metarec.config.config_hash` is stored in every
result row. ``popularity`` has no training and no override: it is a tiny evaluator
(:mod:`metarec.bench.popularity`).

``melu-ref`` is the MeLU reference configuration (Lee et al., KDD 2019; hyper-parameters of the
authors' code, github.com/hoyeoplee/MeLU ``config``): model ``melu`` on MeLU's side features,
embeddings of 32, decision layers 64-64 adapted in the inner loop (the model's default adapt
patterns), inner rate 5e-6, outer rate 5e-5, 32 tasks per meta-batch, **1** local update in
training (the code's ``inner = 1``) and **5** at evaluation (the paper's reported setting). The
authors' code copies the fast weights into the module with ``load_state_dict``, which cuts the
graph through the local update, so its meta-gradient is first-order: ``first_order = true`` here
(with a 5e-6 inner rate the second-order term is negligible anyway). Differences that remain:
metarec's MeLU also embeds the release year, clips the meta-gradient norm (``train.grad_clip``)
and selects the checkpoint on meta-val. Budget: the authors' 30 epochs of 32-task batches without
early stopping, 1,700 outer steps on ml1m-melu's 1,816 meta-train users, in the full and the quick
suite alike (at a 5e-5 outer rate a shorter budget leaves the model at its initial constant
prediction, which would make the comparison meaningless).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from metarec._errors import ConfigError, suggest
from metarec.algorithms import ALGORITHMS
from metarec.config import Scenario, merge, scenario_from_dict, to_dict
from metarec.methods import BUILTIN_METHODS, method_names
from metarec.methods.crossdomain.methods import METHODS as _CROSSDOMAIN_METHODS
from metarec.methods.engine.method import MELU_REF

__all__ = [
    "VARIANTS",
    "VARIANT_SETTINGS",
    "QUICK_BUDGET",
    "BENCH_ALGORITHMS",
    "BASELINES",
    "REFERENCES",
    "QUICK_ALGORITHMS",
    "QUICK_SHOTS",
    "QUICK_SEEDS",
    "QUICK_STEPS",
    "QUICK_VAL_TASKS",
    "variant_scenario",
    "seeded_scenario",
    "quick_scenario",
    "check_algorithms",
    "extra_methods",
]

_PLAIN = {"first_order": False, "per_step_lr": False, "multi_step_loss": False}

VARIANTS: dict[str, dict[str, Any] | None] = {
    # the MAML family keeps the scenario's own MAML++ / first-order choices
    "maml": {"algorithm": {"name": "maml"}},
    "fomaml": {"algorithm": {"name": "fomaml"}},
    "reptile": {"algorithm": {"name": "reptile", **_PLAIN}},
    "metasgd": {"algorithm": {"name": "metasgd", "first_order": False, "per_step_lr": False}},
    "anil": {"algorithm": {"name": "anil"}, "model": {"adapt": None}},
    # baselines: the same model trained without an inner loop; ``global`` is scored as it is,
    # ``finetune`` after fine-tuning on the support (algorithm.eval_steps at algorithm.eval_lr)
    "global": {"algorithm": {"name": "global", **_PLAIN, "eval_steps": 0}},
    "finetune": {"algorithm": {"name": "finetune", **_PLAIN}},
    "popularity": None,
    "melu-ref": MELU_REF,
}
"""Benchmark algorithm name -> scenario overrides (``None``: an evaluator without training)."""

VARIANT_SETTINGS: dict[str, dict[str, Any]] = {
    "finetune": {"eval_lrs": (0.001, 0.003, 0.01, 0.03, 0.1)},
}
"""Benchmark algorithm -> settings of its method (``build_method(name, scenario, **settings)``):
``finetune`` chooses its fine-tuning rate among ``eval_lrs`` on meta-val when the scenario sets
no ``algorithm.eval_lr``."""

BENCH_ALGORITHMS = tuple(VARIANTS)
CROSSDOMAIN = tuple(m + s for m in _CROSSDOMAIN_METHODS for s in ("", "+adapt"))
"""Cross-domain methods (:mod:`metarec.methods.crossdomain`), benchmarked on cold-domain-users
scenarios with the benchmark's evaluation seed and meta-val budget (:func:`variant_scenario`)."""
QUICK_BUDGET = {"mf_epochs": 5, "epochs": 5, "mapping_epochs": 30, "patience": 2}
"""Training budget of the cross-domain methods in a quick run (else the config defaults)."""
BASELINES = (
    "global",
    "finetune",
    "popularity",
    "no-transfer",
    "no-transfer+adapt",
    "feature-global",
    "warmup-base",
    "content-bias",
    "itemknn",
    "ease",
    "mf-foldin",
    "content-knn",
    "ease-source",
    "lightgcn",
    "bitgcf",
)
"""Non-meta-learning baselines: the significance test compares the best row against the best of these."""
REFERENCES = ("melu-ref", "emcdr", "ptupcdr")
"""Re-implementations of published methods (compared with metarec's own algorithms)."""

QUICK_ALGORITHMS = ("global", "finetune", "popularity", "maml", "reptile", "melu-ref")
QUICK_SHOTS = (5, 10)
QUICK_SEEDS = 2
QUICK_STEPS = 300
"""Outer steps of a quick run when the scenario sets no ``bench.quick_steps``."""
QUICK_VAL_TASKS = 64
QUICK_META_BATCH = 16
"""Tasks per outer step in a quick run (at most; ``melu-ref`` keeps MeLU's 32)."""

assert all(a in ALGORITHMS for a in VARIANTS if VARIANTS[a] is not None and a != "melu-ref")


def extra_methods() -> tuple[str, ...]:
    """Methods registered with :func:`~metarec.methods.register_method` beyond the built-in ones
    (a user's own methods): ``metarec bench`` runs them by default beside the scenario's list. The
    cold-start learners of :mod:`metarec.methods.learners` and the ranking baselines of
    :mod:`metarec.methods.ranking` are opt-in (``--algorithms tanp,ease,...``)."""
    from metarec.methods.learners import LEARNER_METHODS
    from metarec.methods.ranking import RANKING_METHODS

    shipped = (*BUILTIN_METHODS, *LEARNER_METHODS, *RANKING_METHODS)
    return tuple(n for n in method_names() if n not in shipped)


def check_algorithms(names: Sequence[str]) -> tuple[str, ...]:
    """Validate benchmark algorithm names: built-in variants, cross-domain methods and any
    registered method (unknown names get a close-match suggestion)."""
    if isinstance(names, str):
        raise ConfigError(
            f"algorithms={names!r}: expected a list of names; pass algorithms=[{names!r}]"
        )
    out = tuple(names)
    if not out:
        raise ConfigError(
            f"algorithms=[]: nothing to benchmark; choose some of {', '.join(BENCH_ALGORITHMS)}"
        )
    for a in out:
        if a not in VARIANTS and a not in CROSSDOMAIN and a not in method_names():
            more = tuple(
                n for n in method_names() if n not in BUILTIN_METHODS
            )  # learners and user-registered
            raise ConfigError(
                f"algorithm {a!r}: unknown benchmark algorithm{suggest(a, BENCH_ALGORITHMS + CROSSDOMAIN + more)}; "
                f"choose from {', '.join(BENCH_ALGORITHMS + more)} or a cross-domain method ({', '.join(CROSSDOMAIN)})"
            )
    dup = sorted({a for a in out if out.count(a) > 1})
    if dup:
        raise ConfigError(f"algorithms: {dup[0]!r} is listed twice; list each algorithm once")
    return out


def _override(sc: Scenario, overrides: Mapping[str, Any]) -> Scenario:
    return scenario_from_dict(merge(to_dict(sc), overrides))


def variant_scenario(sc: Scenario, algorithm: str, *, quick: bool = False) -> Scenario:
    """The resolved scenario that trains benchmark ``algorithm``: its :data:`VARIANTS` overrides
    (``popularity`` and other methods: ``sc``); a cross-domain method evaluates on meta-val with
    the benchmark's seed (``train.seed``) and budget (``train.val_tasks``), and trains with
    :data:`QUICK_BUDGET` in a quick run."""
    check_algorithms([algorithm])
    if algorithm in CROSSDOMAIN:
        budget = QUICK_BUDGET if quick else {}
        own = {"eval_seed": sc.train.seed, "val_tasks": sc.train.val_tasks}
        return _override(sc, {"crossdomain": {**budget, **own}})
    ov = VARIANTS.get(algorithm)
    return sc if ov is None else _override(sc, ov)


def seeded_scenario(sc: Scenario, seed: int) -> Scenario:
    """``sc`` with the protocol's split seed and the training seed both set to ``seed``."""
    return replace(sc, protocol=replace(sc.protocol, seed=seed), train=replace(sc.train, seed=seed))


def quick_scenario(sc: Scenario) -> Scenario:
    """The quick suite's budget: ``bench.quick_steps`` (default :data:`QUICK_STEPS`, never more
    than ``train.steps``) outer steps, at most :data:`QUICK_VAL_TASKS` validation tasks, about
    four validations per run, at most :data:`QUICK_META_BATCH` tasks per outer step, one checkpoint
    at the end."""
    t = sc.train
    steps = sc.bench.quick_steps if sc.bench.quick_steps is not None else min(t.steps, QUICK_STEPS)
    every = max(1, min(t.val_every, steps // 4 or 1))
    return replace(
        sc,
        algorithm=replace(sc.algorithm, meta_batch=min(sc.algorithm.meta_batch, QUICK_META_BATCH)),
        train=replace(
            t,
            steps=steps,
            val_every=every,
            val_tasks=min(t.val_tasks, QUICK_VAL_TASKS),
            checkpoint_every=max(steps, 1),
        ),
    )
