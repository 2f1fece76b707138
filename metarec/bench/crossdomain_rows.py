"""Cross-domain methods in the benchmark: their names, the quick suite of a cold-domain-users
scenario and the transfer summary (metarec's best method against EMCDR / PTUPCDR).

A cross-domain benchmark algorithm is a :data:`metarec.methods.crossdomain.METHODS` name,
optionally with ``"+adapt"`` (``emcdr``, ``ptupcdr+adapt``, ``da-mmd+adapt``, ...). It runs on
scenarios with a cold-domain-users protocol like every other method, through the method
interface (:func:`metarec.bench.runner.run_method`): trained on the same splits as the
meta-learners (meta-train rows only, best epoch on meta-val), every test state scored **once**
per shots value with the same query sets, sampled negatives, ranking candidates and evaluation
seed; ``"+adapt"`` methods choose their adaptation step size on meta-val for each shots value.
``"m"`` and ``"m+adapt"`` in one benchmark share one training run per seed (through
:class:`~metarec.methods.FitData`'s ``memo``); both rows report that run's training time, and
the ``+adapt`` row names the shared run in ``fit_shared_with``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from metarec.bench.report import cell_values, load_rows, protocol_line, run_protocol, summarize
from metarec.bench.stats import lower_is_better, paired_t_test
from metarec.bench.variants import BASELINES, QUICK_BUDGET, REFERENCES, variant_scenario
from metarec.config import Scenario
from metarec.data.table import InteractionTable
from metarec.methods.crossdomain.method import scenario_crossdomain_config
from metarec.methods.crossdomain.methods import METHODS
from metarec.methods.crossdomain.settings import CrossDomainConfig

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


def quick_defaults(scenario: Scenario, data: Any = None) -> tuple[tuple[str, ...], int] | None:
    """``(algorithms, seeds)`` of the quick suite for a cold-domain-users scenario, else ``None``.

    A ``predefined`` split with a ``target_domain`` gets the cross-domain suite when the dataset's
    own test users are cold (its split decides: see :func:`predefined_is_warm`); a warm one (its
    test users also train in the target domain, e.g. a leave-one-out split) the default suite,
    as the cross-domain methods need cold target users. ``data``: an object whose ``table()``
    gives the scenario's table (read once by the caller); without it the table is read here."""
    p = scenario.protocol
    if p.split == "cold_domain_users":
        return QUICK_CROSSDOMAIN, QUICK_CROSSDOMAIN_SEEDS
    if (
        p.split == "predefined"
        and p.target_domain is not None
        and not predefined_is_warm(scenario, None if data is None else data.table())
    ):
        return QUICK_CROSSDOMAIN, QUICK_CROSSDOMAIN_SEEDS
    return None


def predefined_is_warm(scenario: Scenario, table: InteractionTable | None = None) -> bool:
    """Whether the test users of a ``predefined`` cross-domain scenario also train in its target
    domain (builds the split of ``table``, read from the scenario when not given)."""
    from metarec.data.load import load_table
    from metarec.episodes.build import build_splits

    table = load_table(scenario.data) if table is None else table
    splits = build_splits(table, scenario.protocol)
    return any(len(u) for u in splits.warm_units.values())


def bench_config(scenario: Scenario, seed: int, *, quick: bool = False) -> CrossDomainConfig:
    """The cross-domain settings of one benchmark run: the scenario's ``[crossdomain]`` settings
    as the benchmark resolves them (:func:`metarec.bench.variants.variant_scenario`: quick
    budget, the benchmark's evaluation seed and meta-val budget)."""
    sc = replace(scenario, train=replace(scenario.train, seed=seed))
    return scenario_crossdomain_config(variant_scenario(sc, "emcdr", quick=quick))


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
        f"Primary metric **{metric}** ({'lower' if sign < 0 else 'higher'} is better); mean ± 95% "
        f"half-width over {len(meta['seeds'])} seeds; p: paired t-test over seeds. metarec's "
        f"methods: {', '.join(own)}. The best is picked on these same numbers, so treat a "
        "borderline p as exploratory.",
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
