"""A small meta-val-only search over a learner's own settings (quick budget), for choosing defaults.

Each configuration is fitted through the method interface on meta-train with the quick suite's
budget (``metarec bench --quick``: :func:`metarec.bench.variants.quick_scenario`; ``--full``: the
scenario's own budget, as ``metarec bench`` without ``--quick``) and scored by its best meta-val
score (``fit.log["best_val"]``: MAE for explicit, AUC for implicit feedback; the ranking learners:
meta-val ``ndcg@10_all``, per support size for ``elae``), which is also what
selects its checkpoint. ``--shots 1,5,default`` also scores the selected model on meta-val tasks with
that many support interactions (``default``: the scenario's own support), as the bench does. No
test pool is read. One JSON row per configuration and seed goes to ``--out`` (JSONL); a summary
(mean over seeds) is printed.

Usage (needs the datasets)::

    METAREC_DATA=/work/shared/datasets OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/learners_tune.py \\
        --scenario tasks/ml1m-melu.toml --method tanp --seeds 2 \\
        --grid '[{}, {"hidden": 128}, {"latent": 64}, {"cluster_weight": 0.0}]'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metarec.bench.variants import quick_scenario  # noqa: E402
from metarec.config import load_scenario  # noqa: E402
from metarec.data.load import load_table  # noqa: E402
from metarec.episodes.build import build_splits, sampler_config
from metarec.methods import FitData, build_method  # noqa: E402
from metarec.methods.learners import evaluate_fitted  # noqa: E402


def _meta_val(fitted) -> float | dict[str, float] | None:
    """The fit's best meta-val score: ``log["best_val"]`` (the learners), the training log's
    ``best_val`` (the ranking learners: ``elae`` one ``ndcg@10_all`` per support size, averaged in
    the summary), else the validation MAE."""
    best = getattr(fitted, "log", {}).get("best_val")
    if best is not None:
        return best
    log = getattr(fitted, "training_log", None)
    if log is not None and log.best_val:
        vals = {k: float(v) for k, v in log.best_val.items()}
        return vals if len(vals) > 1 else next(iter(vals.values()))
    return getattr(fitted, "val_mae", None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--grid", default="[{}]", help="JSON list of settings dicts ({} = defaults)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--full", action="store_true", help="the scenario's own budget (not --quick)")
    p.add_argument(
        "--shots", default="", help="also score meta-val at these shots, e.g. 1,5,default"
    )
    p.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "learners_tune.jsonl")
    )
    args = p.parse_args(argv)
    sc = load_scenario(args.scenario)
    sc = sc if args.full else quick_scenario(sc)
    shots = [k.strip() for k in args.shots.split(",") if k.strip()]
    table = load_table(sc.data)
    splits = build_splits(table, sc.protocol)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    summary = []
    extra: dict[str, list[list[float]]] = {}
    for settings in json.loads(args.grid):
        vals = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            fitted = build_method(args.method, sc, **settings).fit(
                FitData(table, splits, seed=seed)
            )
            row = {
                "scenario": sc.name,
                "method": args.method,
                "settings": settings,
                "seed": seed,
                "meta_val": _meta_val(fitted),
                "best_step": getattr(fitted, "log", {}).get("best_step"),
                "fit_s": round(time.perf_counter() - t0, 1),
            }
            for k in shots:
                cfg = sampler_config(sc.protocol)
                if k != "default":
                    cfg = dataclasses.replace(cfg, n_support=int(k))
                res = evaluate_fitted(fitted, table, splits.pools[splits.val], cfg, seed=seed)
                row[f"meta_val@{k}"] = res["mae" if table.feedback == "explicit" else "auc"]
            mv = row["meta_val"]
            vals.append(statistics.mean(mv.values()) if isinstance(mv, dict) else mv)
            if isinstance(mv, dict):
                print("  " + "  ".join(f"{key}: {v:.4f}" for key, v in mv.items()), flush=True)
            extra.setdefault(json.dumps(settings), []).append([row[f"meta_val@{k}"] for k in shots])
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
        summary.append((settings, statistics.mean(vals), vals))
    print(f"\n{args.method} on {sc.name}: meta-val (mean over {args.seeds} seeds)")
    for settings, mean, vals in summary:
        at = extra.get(json.dumps(settings), [])
        by_k = "".join(
            f"  @{k}: {statistics.mean(r[j] for r in at):.4f}" for j, k in enumerate(shots)
        )
        print(
            f"  {json.dumps(settings):40s} {mean:.4f}  {' '.join(f'{v:.4f}' for v in vals)}{by_k}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
