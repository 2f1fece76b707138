"""Cross-domain methods as benchmark algorithms: rows beside the meta-learners'.

A cross-domain benchmark algorithm is a :data:`metarec.methods.crossdomain.METHODS` name, optionally
with ``"+adapt"`` (``emcdr``, ``ptupcdr+adapt``, ``da-mmd+adapt``, ...). It runs on scenarios
with a cold-domain-users protocol (``protocol.split = "cold_domain_users"``): per seed it is
trained by :func:`metarec.methods.crossdomain.fit_method` on the same splits as the meta-learners
(meta-train rows only, best epoch on meta-val), then every test state is scored **once** per
shots value by :func:`metarec.bench.evaluation.score_pool` through
:func:`metarec.bench.context.evaluate_states`, so the query sets, the sampled negatives, the ranking
candidates and the evaluation seed are the meta-learners'. ``"+adapt"`` methods choose their
adaptation step size on meta-val for each shots value.

``"m"`` and ``"m+adapt"`` in one benchmark share one training run per seed (the fit does not
depend on adaptation); both rows report that run's training time, and the ``+adapt`` row names
the shared run in ``fit_shared_with``.

The settings are :class:`metarec.methods.crossdomain.CrossDomainConfig`'s defaults with the scenario's
evaluation protocol (:func:`bench_config`); the resolved settings are stored in
``configs.json`` under each row's ``config_hash``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from metarec.bench.context import RunContext, evaluate_states, ranking
from metarec.bench.evaluation import score_pool
from metarec.bench.report import cell_values, load_rows, protocol_line, run_protocol, summarize
from metarec.bench.stats import lower_is_better, paired_t_test
from metarec.bench.variants import BASELINES, REFERENCES
from metarec.bench.writers import context_rows, rss_mb
from metarec.config import Scenario, config_hash, to_dict
from metarec.episodes.build import sampler_config
from metarec.methods.crossdomain.evaluate import AdaptConfig
from metarec.methods.crossdomain.method import CrossDomainFitted
from metarec.methods.crossdomain.methods import METHODS, FittedMethod, fit_method, parse_method
from metarec.methods.crossdomain.settings import CrossDomainConfig, config_from_scenario

__all__ = [
    "CROSSDOMAIN_ALGORITHMS",
    "CROSSDOMAIN_REFERENCES",
    "CROSSDOMAIN_BASELINES",
    "QUICK_CROSSDOMAIN",
    "QUICK_CROSSDOMAIN_SEEDS",
    "is_crossdomain",
    "quick_defaults",
    "QUICK_BUDGET",
    "bench_config",
    "crossdomain_run",
    "write_transfer_summary",
]

CROSSDOMAIN_ALGORITHMS = tuple(m + s for m in METHODS for s in ("", "+adapt"))
"""Every cross-domain benchmark algorithm name."""
CROSSDOMAIN_REFERENCES = ("emcdr", "ptupcdr")
"""Re-implementations of published bridges (EMCDR, PTUPCDR), zero-shot as published; their
``+adapt`` forms (bridge initialisation, then few-shot steps on the support) are metarec's."""
CROSSDOMAIN_BASELINES = ("no-transfer", "no-transfer+adapt")
"""Target-only baselines (no knowledge from the source domain)."""

QUICK_CROSSDOMAIN = (
    "no-transfer",
    "no-transfer+adapt",
    "emcdr",
    "emcdr+adapt",
    "ptupcdr",
    "ptupcdr+adapt",
    "finetune-transfer+adapt",
    "da-mmd+adapt",
    "maml",
    "popularity",
)
"""The quick suite of a cold-domain-users scenario: the cross-domain methods beside MAML over
(user, domain) tasks (source-domain tasks are auxiliary meta-train tasks) and item popularity."""
QUICK_CROSSDOMAIN_SEEDS = 3


def is_crossdomain(name: str) -> bool:
    """Whether ``name`` is a cross-domain benchmark algorithm."""
    return name in CROSSDOMAIN_ALGORITHMS


def quick_defaults(scenario: Scenario) -> tuple[tuple[str, ...], int] | None:
    """``(algorithms, seeds)`` of the quick suite for a cold-domain-users scenario, else ``None``.

    A ``predefined`` split with a ``target_domain`` gets the cross-domain suite when the dataset's
    own test users are cold (its split decides: see :func:`predefined_is_warm`); a warm one (its
    test users also train in the target domain, e.g. a leave-one-out split) the default suite,
    as the cross-domain methods need cold target users."""
    p = scenario.protocol
    if p.split == "cold_domain_users":
        return QUICK_CROSSDOMAIN, QUICK_CROSSDOMAIN_SEEDS
    if p.split == "predefined" and p.target_domain is not None and not predefined_is_warm(scenario):
        return QUICK_CROSSDOMAIN, QUICK_CROSSDOMAIN_SEEDS
    return None


def predefined_is_warm(scenario: Scenario) -> bool:
    """Whether the test users of a ``predefined`` cross-domain scenario also train in its target
    domain (reads the table and builds the split; the bench builds them again, which is cheap
    next to training)."""
    from metarec.data.load import load_table
    from metarec.episodes.build import build_splits

    splits = build_splits(load_table(scenario.data), scenario.protocol)
    return any(len(u) for u in getattr(splits, "warm_units", {}).values())


QUICK_BUDGET = {"mf_epochs": 5, "epochs": 5, "mapping_epochs": 30, "patience": 2}
"""Training budget of the cross-domain methods in a quick run (else the config defaults)."""


def bench_config(scenario: Scenario, seed: int, *, quick: bool = False) -> CrossDomainConfig:
    """The cross-domain settings of one benchmark run: defaults (quick: :data:`QUICK_BUDGET`), the
    scenario's evaluation protocol, its meta-val budget (``train.val_tasks``) and the
    benchmark's evaluation seed."""
    cfg = config_from_scenario(scenario, QUICK_BUDGET if quick else None)
    return replace(cfg, eval_seed=seed, val_tasks=scenario.train.val_tasks)


_CACHE: dict[tuple[int, int, str], FittedMethod] = {}


def _fit(ctx: RunContext, cfg: CrossDomainConfig) -> tuple[FittedMethod, str | None]:
    """The fitted method, reusing a fit of the same base method, seed and splits."""
    base, _ = parse_method(ctx.algo)
    key = (id(ctx.splits), ctx.seed, base)
    for k in [k for k in _CACHE if k[0] != id(ctx.splits)]:
        del _CACHE[k]  # a new seed's splits: drop the previous seed's models
    prev = _CACHE.get(key)
    if prev is not None and prev.config == cfg:
        shared = FittedMethod(
            ctx.algo,
            ctx.table,
            ctx.splits,
            prev.view,
            prev.scorer,
            cfg,
            dict(prev.log),
            prev.fit_seconds,
        )
        return shared, f"{prev.method}-s{ctx.seed}"
    fitted = fit_method(
        ctx.algo,
        ctx.table,
        ctx.splits,
        seed=ctx.seed,
        config=cfg,
        val_sampler=sampler_config(ctx.scenario.protocol),
    )
    _CACHE[key] = fitted
    return fitted, None


def _scorer_for(fitted: CrossDomainFitted, adapt: AdaptConfig | None):
    """The benchmark's per-batch scorer through the method interface: the tasks' zero-shot user
    vectors, adapted on the support with the step size chosen on meta-val for these shots."""

    def scorer_for(batch):
        steps, lr = (adapt.steps, adapt.lr) if adapt is not None else (0, None)
        return fitted.adapt(
            batch.support, steps=steps, lr=lr
        ).score  # (T, N): rows are the batch's tasks

    return scorer_for


def crossdomain_run(
    ctx: RunContext, say
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Train and score one cross-domain algorithm for one seed: ``(rows, config, curves)``."""
    cfg = bench_config(ctx.scenario, ctx.seed, quick=ctx.quick)
    fm, shared = _fit(ctx, cfg)
    fitted = CrossDomainFitted.from_fitted_method(fm, None)
    t_eval = time.perf_counter()
    chosen_by: dict[Any, AdaptConfig | None] = {}

    def score_test(pool, scfg, default=False):
        chosen, _ = fm.select_adapt(scfg)  # step size chosen on meta-val for these shots
        chosen_by[scfg.n_support] = chosen
        return score_pool(
            ctx.table,
            pool,
            scfg,
            _scorer_for(fitted, chosen),
            k=ctx.scenario.metrics.k,
            names=ctx.scenario.metrics.names,
            seed=ctx.seed,
            cat=ctx.cat,
            **ranking(ctx, default),
        )

    evals = evaluate_states(ctx, ctx.scenario, score_test, catalogue=True)
    eval_s = time.perf_counter() - t_eval
    resolved = {
        "benchmark_algorithm": ctx.algo,
        "crossdomain": to_dict(cfg),
        "scenario": to_dict(ctx.scenario),
    }
    h = config_hash(resolved)
    log = fm.log
    stage = next((log[k] for k in ("mapping", "bridge", "finetune", "target_mf") if k in log), log)
    rows: list[dict[str, Any]] = []
    for ev in evals:
        chosen = chosen_by.get(ev[2])
        extra = {
            "best_step": stage.get("best_epoch"),
            "steps": len(stage.get("history", [])),
            "eval_steps": chosen.steps if chosen else 0,
            "eval_lr": chosen.lr if chosen else None,
            "family": "crossdomain",
            "fit_shared_with": shared,
        }
        rows += context_rows(
            ctx,
            ctx.scenario,
            [ev],
            train_seconds=fm.fit_seconds,
            eval_seconds=eval_s,
            peak_mb=rss_mb(),
            memory="ru_maxrss (process peak so far)",
            extra=extra,
            cfg_hash=h,
        )
    best = stage.get("best_val")
    say(
        f"  seed {ctx.seed} {ctx.algo:<10} fitted in {fm.fit_seconds:.0f} s"
        + (" (shared fit)" if shared else "")
        + (
            f" (best meta-val {fm.metric} {abs(best):.4f} at epoch {stage.get('best_epoch')})"
            if best is not None
            else ""
        )
        + f"; test states scored in {eval_s:.0f} s"
    )
    return rows, resolved, []


def write_transfer_summary(out: str | Path) -> Path:
    """Write ``out/transfer-summary.md``: per test state and shots, metarec's best method on the
    primary metric (any algorithm that is neither a baseline nor a reference re-implementation:
    the meta-learners and the cross-domain transfer / DA methods) against each EMCDR / PTUPCDR
    row, as mean ± 95% Student-t half-width over seeds and a paired t-test over seeds."""
    out = Path(out)
    rows = load_rows(out)
    meta = json.loads((out / "bench.json").read_text())
    metric, algos = meta["primary_metric"], meta["algorithms"]
    own = [a for a in algos if a not in BASELINES and a not in REFERENCES]
    refs = [a for a in algos if a in CROSSDOMAIN_REFERENCES]
    sign = -1.0 if lower_is_better(metric) else 1.0
    fmt = lambda m, h: f"{m:.4f} ± {h:.4f}"  # noqa: E731
    lines = [
        f"# {meta['scenario']}: metarec's best method vs EMCDR / PTUPCDR on cold users",
        "",
        f"Primary metric **{metric}** ({'lower' if sign < 0 else 'higher'} is better); mean ± 95% half-width over "
        f"{len(meta['seeds'])} seeds; p: paired t-test over seeds. metarec's methods: {', '.join(own)}. The best is picked "
        "on these same numbers, so treat a borderline p as exploratory.",
        "",
        *protocol_line(run_protocol(out, meta)),
        "",
    ]
    for state in meta["states"]:
        lines += [
            f"## {state}",
            "",
            "| shots | metarec best | reference | difference | p (seeds) | verdict |",
            "|---|---|---|---:|---:|---|",
        ]
        for shots in meta["shots"]:
            means = {a: summarize(cell_values(rows, state, a, shots, metric))[0] for a in own}
            best = max(
                (a for a in means if means[a] == means[a]),
                key=lambda a: sign * means[a],
                default=None,
            )
            if best is None:
                continue
            b = cell_values(rows, state, best, shots, metric)
            for ref in refs:
                r = cell_values(rows, state, ref, shots, metric)
                t = paired_t_test(b, r)
                better = sign * t["mean_diff"] > 0
                verdict = (
                    ("metarec better" if better else "reference better")
                    if t["p"] < 0.05
                    else "no significant difference"
                )
                lines.append(
                    f"| {shots} | {best} {fmt(*summarize(b))} | {ref} {fmt(*summarize(r))} | "
                    f"{t['mean_diff']:+.4f} | {t['p']:.3g} | {verdict} |"
                )
        lines.append("")
    path = out / "transfer-summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
