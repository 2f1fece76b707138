"""Quick-budget smoke results of the cold-start meta-learners on the real scenarios (not headline numbers).

Each method is built by name through the method registry, fitted through the method interface
(``fit(FitData)`` trains on meta-train and selects on meta-val only), and scored once on the
test pools; 3 seeds, mean and 95% Student-t interval over seeds. Sections:

* ``melu``: tasks/ml1m-melu.toml, four states, all non-query ratings as support: ``mamo``,
  ``tanp`` and the no-adaptation ``feature-global`` (same encoders);
* ``implicit``: tasks/amazon-sport-cloth.toml (beta 0.2, 3 shots): ``lwa``, ``nlba``, ``feature-global``;
* ``warmup``: tasks/ml1m-item-warmup.toml: ``warmup-base``, ``metaemb``, ``mwuf``; AUC and
  logloss per phase;
* ``amazon-cd`` / ``genre-cd``: tasks/amazon-sport-cloth.toml / tasks/ml1m-cross-genre.toml:
  ``metabridge``, ``maml-source-init``, ``reptile-source-init`` against the target-only MF
  (``no-transfer``, zero-shot average user; ``no-transfer+adapt``, k-shot fine-tuning of it).

Usage (needs the datasets)::

    METAREC_DATA=/work/shared/datasets OMP_NUM_THREADS=1 PYTHONPATH=. \\
        python benchmarks/learners_quick.py --sections melu,implicit,warmup --steps 200

Writes ``benchmarks/results/learners_quick.jsonl`` (one row per method, section, state and
seed) and ``learners_quick.md`` (the summary table).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import metarec.methods.learners  # noqa: E402,F401  (registers the methods)
from metarec.config import load_scenario  # noqa: E402
from metarec.data.load import load_table  # noqa: E402
from metarec.episodes.build import build_splits, sampler_config
from metarec.episodes.warmup import (  # noqa: E402
    click_table,
    item_warmup_split,
    load_warmup_scenario,
)
from metarec.methods import FitData, build_method  # noqa: E402
from metarec.methods.learners import evaluate_fitted  # noqa: E402
from metarec.metrics.per_task import student_t_quantile  # noqa: E402
from metarec.metrics.warmup import evaluate_warmup  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"


def _budget(steps: int) -> dict:
    return {
        "steps": steps,
        "val_every": max(steps // 2, 1),
        "val_tasks": 256,
        "meta_batch": 16,
        "patience": None,
    }


def run_episodic(
    section: str, scenario_path: str, methods: list[str], seeds: int, steps: int, extra: dict, out
) -> None:
    sc = load_scenario(ROOT / scenario_path)
    table = load_table(sc.data)
    splits = build_splits(table, sc.protocol)
    scfg = sampler_config(sc.protocol)
    for seed in range(seeds):
        for name in methods:
            t0 = time.perf_counter()
            settings = {**_budget(steps), **extra.get(name, {})}
            fitted = build_method(name, sc, **settings).fit(FitData(table, splits, seed=seed))
            fit_s = time.perf_counter() - t0
            for state in splits.states:
                res = evaluate_fitted(fitted, table, splits.pools[state], scfg, seed=0)
                row = {
                    "section": section,
                    "scenario": sc.name,
                    "method": name,
                    "state": state,
                    "seed": seed,
                    "steps": steps,
                    "fit_s": round(fit_s, 1),
                    "best_step": fitted.log.get("best_step"),
                    "n_tasks": res["n_tasks"],
                    "settings": settings,
                    **{
                        k: res[k]
                        for k in ("mae", "rmse", "auc", "ndcg@10", "hr@10", "mrr")
                        if k in res
                    },
                }
                out(row)


def run_warmup(methods: list[str], seeds: int, steps: int, pretrain_epochs: int, out) -> None:
    sc, cfg = load_warmup_scenario(ROOT / "tasks/ml1m-item-warmup.toml")
    table = click_table(load_table(sc.data), cfg.threshold)
    splits = item_warmup_split(table, cfg)
    for seed in range(seeds):
        for name in methods:
            t0 = time.perf_counter()
            settings = {**_budget(steps), "pretrain_epochs": pretrain_epochs, "batch_size": 4096}
            if name == "warmup-base":
                settings["steps"] = 0
            fitted = build_method(name, sc, **settings).fit(FitData(table, splits, seed=seed))
            fit_s = time.perf_counter() - t0
            res = evaluate_warmup(fitted, table, splits.pools["meta-test"], cfg.k)
            for phase, r in res.items():
                out(
                    {
                        "section": "warmup",
                        "scenario": sc.name,
                        "method": name,
                        "state": phase,
                        "seed": seed,
                        "steps": settings["steps"],
                        "fit_s": round(fit_s, 1),
                        "settings": settings,
                        "warm_lr": fitted.log.get("selected", {}).get("warm_lr"),
                        **r,
                    }
                )


def run_crossdomain(
    section: str,
    scenario_path: str,
    methods: list[str],
    seeds: int,
    steps: int,
    mf_epochs: int,
    out,
) -> None:
    from metarec.methods.crossdomain import config_from_scenario, fit_method

    sc = load_scenario(ROOT / scenario_path)
    table = load_table(sc.data)
    splits = build_splits(table, sc.protocol)
    scfg = sampler_config(sc.protocol)
    cd_cfg = config_from_scenario(sc)
    for seed in range(seeds):
        for name in ["no-transfer", "no-transfer+adapt", *methods]:
            t0 = time.perf_counter()
            if name.startswith("no-transfer"):
                fm = fit_method(name, table, splits, seed=seed, config=cd_cfg)
                res, settings = (
                    fm.evaluate(splits.pools["meta-test"], scfg),
                    {"crossdomain_config": "scenario"},
                )
            else:
                settings = {**_budget(steps), "mf_epochs": mf_epochs}
                fitted = build_method(name, sc, **settings).fit(FitData(table, splits, seed=seed))
                res = evaluate_fitted(fitted, table, splits.pools["meta-test"], scfg, seed=0)
            out(
                {
                    "section": section,
                    "scenario": sc.name,
                    "method": name,
                    "state": "meta-test",
                    "seed": seed,
                    "steps": steps,
                    "fit_s": round(time.perf_counter() - t0, 1),
                    "settings": settings,
                    "n_tasks": res["n_tasks"],
                    **{
                        k: res[k]
                        for k in ("mae", "rmse", "auc", "ndcg@10", "hr@10", "mrr")
                        if k in res
                    },
                }
            )


def _ci(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return m, float("nan")
    return m, student_t_quantile(0.975, len(vals) - 1) * statistics.stdev(vals) / math.sqrt(
        len(vals)
    )


def report(rows: list[dict], path: Path, command: str) -> None:
    lines = [
        "# Cold-start meta-learners: quick-budget smoke results",
        "",
        "**Quick budgets, not headline numbers**: a few hundred outer steps, defaults untuned except the",
        "warm-up rate (chosen on meta-val from the same grid for every warm-up method). Mean ± 95% CI over",
        "seeds (Student t); every method fitted through the method interface, selected on meta-val only,",
        "scored once on the test pools.",
        "",
        f"Command: `{command}`",
        "",
    ]
    metrics = {
        "melu": ["mae", "rmse", "ndcg@10"],
        "implicit": ["auc", "ndcg@10", "mrr"],
        "warmup": ["auc", "logloss"],
        "amazon-cd": ["auc", "ndcg@10", "mrr"],
        "genre-cd": ["mae", "rmse", "ndcg@10"],
    }
    for section in dict.fromkeys(r["section"] for r in rows):
        sel = [r for r in rows if r["section"] == section]
        ms = metrics.get(section, ["auc"])
        lines += [
            f"## {section}: {sel[0]['scenario']}",
            "",
            "| state | method | seeds | " + " | ".join(ms) + " | fit s |",
            "|---|---|---:|" + "---:|" * len(ms) + "---:|",
        ]
        for state in dict.fromkeys(r["state"] for r in sel):
            for method in dict.fromkeys(r["method"] for r in sel):
                rs = [r for r in sel if r["state"] == state and r["method"] == method]
                if not rs:
                    continue
                cells = []
                for m in ms:
                    mean, hw = _ci([r.get(m) for r in rs])
                    cells.append(f"{mean:.4f} ± {hw:.4f}" if math.isfinite(hw) else f"{mean:.4f}")
                fit = statistics.fmean(r["fit_s"] for r in rs)
                lines.append(
                    f"| {state} | {method} | {len(rs)} | " + " | ".join(cells) + f" | {fit:.0f} |"
                )
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default="melu,implicit,warmup")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--pretrain-epochs", type=int, default=2)
    ap.add_argument("--mf-epochs", type=int, default=5)
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    torch.set_num_threads(1)
    RESULTS.mkdir(exist_ok=True)
    stem = f"learners_quick{a.tag}"
    jsonl, md = RESULTS / f"{stem}.jsonl", RESULTS / f"{stem}.md"
    rows: list[dict] = []
    commit = _commit()
    command = (
        "METAREC_DATA=/work/shared/datasets OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/learners_quick.py "
        + " ".join(sys.argv[1:])
    )
    jsonl.write_text("")

    def out(row: dict) -> None:
        row = {**row, "commit": commit, "device": "cpu", "torch_threads": torch.get_num_threads()}
        rows.append(row)
        with jsonl.open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        print(
            json.dumps({k: row[k] for k in ("section", "method", "state", "seed") if k in row}),
            flush=True,
        )
        report(rows, md, command)

    for section in a.sections.split(","):
        if section == "melu":
            run_episodic(
                "melu",
                "tasks/ml1m-melu.toml",
                ["feature-global", "tanp", "mamo"],
                a.seeds,
                a.steps,
                {},
                out,
            )
        elif section == "implicit":
            run_episodic(
                "implicit",
                "tasks/amazon-sport-cloth.toml",
                ["feature-global", "lwa", "nlba"],
                a.seeds,
                a.steps,
                {"nlba": {"lr": 3e-3}, "lwa": {"lr": 3e-3}},
                out,
            )
        elif section in ("amazon-cd", "genre-cd"):
            path = (
                "tasks/amazon-sport-cloth.toml"
                if section == "amazon-cd"
                else "tasks/ml1m-cross-genre.toml"
            )
            run_crossdomain(
                section,
                path,
                ["metabridge", "maml-source-init", "reptile-source-init"],
                a.seeds,
                a.steps,
                a.mf_epochs,
                out,
            )
        elif section == "warmup":
            run_warmup(["warmup-base", "metaemb", "mwuf"], a.seeds, a.steps, a.pretrain_epochs, out)
        else:
            raise SystemExit(
                f"--sections: unknown section {section!r}; choose from melu, implicit, warmup"
            )


if __name__ == "__main__":
    main()
