"""Cold items from their text: does ``content-bias`` beat the item mean on ml1m-melu, and is it
the text?

On MeLU's item-cold and user-item-cold states every query item is new (released 1998 or later),
so the ``popularity`` baseline ("the item mean") predicts the meta-train mean ``mu`` for all of
them. This script scores, on the benchmark's pinned queries and supports (per seed: the split
seed), ``popularity`` and three ``content-bias`` variants (:mod:`metarec.methods.learners.content_bias`,
hyper-parameters selected on meta-val only):

* ``offset-only``: no content (the constant only): warm items keep their shrunk means, cold items
  get ``mu``, plus the user's support offset (no text, no attribute);
* ``attributes``: content = the categorical attributes (genre, rate, ...), no text;
* ``text+attributes``: content = the text embeddings of title and plot and the attributes.

Output: per-seed per-task MAE (``per_task.jsonl.gz``) and a markdown report: mean ± 95% CI over seeds, and paired
t-tests against ``popularity`` over tasks (pooled over seeds) and over seeds.

    METAREC_DATA=/work/shared/datasets python benchmarks/text_cold_items.py --seeds 3 \\
        --out benchmarks/suite/ml1m-melu-text-cold-items
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from metarec.bench.stats import student_t_cdf
from metarec.config import load_scenario
from metarec.data.load import load_table
from metarec.episodes.build import build_splits, sampler_config
from metarec.methods import FitData
from metarec.methods.learners.content_bias import ContentBiasMethod
from metarec.methods.popularity import PopularityMethod
from metarec.metrics.evaluate import evaluate_fitted
from metarec.metrics.per_task import student_t_quantile

STATES = ("item-cold", "user-item-cold")
METHODS = ("popularity", "offset-only", "attributes", "text+attributes")


def variant(table, name: str):
    """``table`` with its item content reduced for the ``name`` variant (interactions shared)."""
    if name == "text+attributes":
        return table
    t = copy.copy(table)
    f = copy.copy(table.item_features)
    f.text, f.text_sources = {}, {}
    if name == "offset-only":
        f.categorical, f.vocabs = {}, {}
        f.numeric = f.numeric[:, :0]
    t.item_features = f
    return t


def run_seed(table, sc, seed: int, shots: list[int | None]) -> dict:
    splits = build_splits(table, replace(sc.protocol, seed=seed))
    scfg = sampler_config(sc.protocol)
    fitted = {"popularity": PopularityMethod().fit(FitData(table, splits, seed=seed))}
    for name in METHODS[1:]:
        t = variant(table, name)
        fitted[name] = ContentBiasMethod(scfg).fit(FitData(t, replace(splits, table=t), seed=seed))
    res: dict = {
        "seed": seed,
        "selected": {m: f.config() for m, f in fitted.items() if m != "popularity"},
        "states": {},
    }
    for state in STATES:
        res["states"][state] = {}
        for k in shots:
            cfg = sampler_config(sc.protocol, n_support=k)
            res["states"][state]["default" if k is None else str(k)] = {
                m: evaluate_fitted(
                    f,
                    table,
                    splits[state],
                    cfg,
                    seed=seed,
                    dtype=torch.float64,
                    return_per_task=True,
                )["per_task"]["mae"].tolist()
                for m, f in fitted.items()
            }
    return res


def _t_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean, 95% half-width and two-sided p of a one-sample t-test of ``x`` against 0."""
    x = x[np.isfinite(x)]
    n = x.size
    m = float(x.mean())
    if n < 2:
        return m, math.nan, math.nan
    se = float(x.std(ddof=1)) / math.sqrt(n)
    half = student_t_quantile(0.975, n - 1) * se
    p = 2.0 * (1.0 - student_t_cdf(abs(m / se), n - 1)) if se > 0 else 0.0
    return m, half, p


def _diff(results: list[dict], state: str, key: str, a: str, b: str) -> str:
    """``a − b``: mean ± 95% CI and p over tasks (pooled over seeds), p over seeds."""
    cell = [r["states"][state][key] for r in results]
    d_tasks = np.concatenate([np.array(c[a]) - np.array(c[b]) for c in cell])
    d_seeds = np.array([np.nanmean(c[a]) - np.nanmean(c[b]) for c in cell])
    dm, dh, dp = _t_ci(d_tasks)
    return f"{dm:+.4f} ± {dh:.4f} | {_p(dp)} | {_p(_t_ci(d_seeds)[2])}"


def _p(p: float) -> str:
    return "< 1e-12" if p < 1e-12 else f"{p:.3g}"


def report(results: list[dict]) -> str:
    lines = []
    seeds = [r["seed"] for r in results]
    for state in STATES:
        for key in results[0]["states"][state]:
            lines += [
                f"\n### {state}, support {key} (seeds {seeds})\n",
                "| method | mae (mean ± 95% CI over seeds) | − popularity, over tasks (95% CI) | p, tasks | p, seeds |",
                "|---|---:|---:|---:|---:|",
            ]
            for m in METHODS:
                per_seed = np.array(
                    [np.nanmean(r["states"][state][key][m]) for r in results], dtype=np.float64
                )
                mean, half, _ = _t_ci(per_seed)
                rest = " | |" if m == "popularity" else _diff(results, state, key, m, "popularity")
                lines.append(f"| {m} | {mean:.4f} ± {half:.4f} | {rest} |")
            lines.append(
                f"| text+attributes − attributes (the text's share) | | "
                f"{_diff(results, state, key, 'text+attributes', 'attributes')} |"
            )
    sel = "; ".join(
        f"seed {r['seed']}: "
        + ", ".join(
            f"{m} alpha={c['alpha']} shrink={c['shrink']} text_weight={c['text_weight']}"
            for m, c in r["selected"].items()
        )
        for r in results
    )
    return "\n".join(lines) + f"\n\nSelected on meta-val: {sel}.\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="tasks/ml1m-melu-text.toml")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shots", default="5,10,default")
    ap.add_argument("--out", default="benchmarks/suite/ml1m-melu-text-cold-items")
    a = ap.parse_args()
    t0 = time.perf_counter()
    sc = load_scenario(a.scenario)
    table = load_table(sc.data)
    shots = [None if s == "default" else int(s) for s in a.shots.split(",")]
    results = [run_seed(table, sc, s, shots) for s in range(a.seeds)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "per_task.jsonl.gz", "wt") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    md = (
        f"# Cold items from text on {sc.name} ({a.seeds} seeds, {time.perf_counter() - t0:.0f} s)\n\n"
        f"`python benchmarks/text_cold_items.py --seeds {a.seeds} --shots {a.shots} --out {a.out}`\n"
        + report(results)
    )
    (out / "report.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
