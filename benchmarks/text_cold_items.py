"""Cold items from their text: does a text-predicted item bias beat the item mean on ml1m-melu?

On MeLU's item-cold and user-item-cold states every query item is new (released 1998 or later),
so the ``popularity`` baseline ("the item mean") predicts the meta-train mean ``mu`` for all of
them. This script measures, on the same pinned queries and supports as the benchmark:

* ``item-mean``: the popularity baseline (``mu`` for a cold item);
* ``user-mean``: ``mu`` + the user's support residual, shrunk (no text, no item information);
* ``text-bias``: ``mu + b(i)``, where ``b`` is a ridge regression from the item's content
  (text embeddings of title and plot, L2-normalised, plus genre and MPAA-rate indicators) to its
  meta-train mean deviation from ``mu`` (MetaEmb-style: learned on warm items, used for cold ones);
* ``text-bias+user``: ``mu + b(i)`` + the user's support residual around it, shrunk.

Hyper-parameters (the ridge strength and the user shrinkage) are selected on **meta-val only**:
the ridge is fitted with meta-train items held out in 5 folds (each fold's items predicted by a
ridge fitted on the other folds, so they are scored as if cold), and meta-val tasks are scored
with those out-of-fold biases. Test states are scored once per seed with the selected values.

Output: per-seed MAE per method and state (JSONL), mean ± 95% CI over seeds, and paired
t-tests against ``item-mean`` over tasks (pooled over seeds) and over seeds (markdown).

    METAREC_DATA=/work/shared/datasets python benchmarks/text_cold_items.py --seeds 3 \\
        --out benchmarks/suite/ml1m-melu-text-cold-items
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from metarec import metrics as M
from metarec.bench.stats import student_t_cdf
from metarec.config import load_scenario
from metarec.episodes.sampler import TaskSampler
from metarec.metrics import student_t_quantile
from metarec.scenario import build_splits, load_table, sampler_config

STATES = ("item-cold", "user-item-cold")
METHODS = ("item-mean", "user-mean", "text-bias", "text-bias+user")
ALPHAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
SHRINK = (0.0, 1.0, 3.0, 10.0)
PRIOR = 5.0  # the popularity baseline's pseudo ratings (metarec.methods.popularity.PRIOR_STRENGTH)


def item_matrix(table) -> np.ndarray:
    """``(n_items, F)``: L2-normalised text blocks, genre and rate indicators, a constant."""
    f = table.item_features
    blocks = []
    for name in sorted(f.text):
        t = f.text[name].astype(np.float64)
        norm = np.linalg.norm(t, axis=1, keepdims=True)
        blocks.append(np.where(norm > 0, t / np.maximum(norm, 1e-12), 0.0))
    for name in ("genre", "rate"):
        if name in f.categorical:
            codes = f.categorical[name]
            onehot = np.zeros((table.n_items, len(f.vocabs[name])))
            rows, cols = np.nonzero(codes)
            onehot[rows, codes[rows, cols]] = 1.0
            blocks.append(onehot[:, 1:])
    blocks.append(np.ones((table.n_items, 1)))
    return np.concatenate(blocks, axis=1)


def ridge(X: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """Weighted ridge ``argmin sum w (X b - y)^2 + alpha |b|^2`` (the constant penalised too)."""
    Xw = X * w[:, None]
    return np.linalg.solve(X.T @ Xw + alpha * np.eye(X.shape[1]), Xw.T @ y)


def item_targets(table, rows: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``mu``, rated items, their mean deviations from ``mu``, and weights ``n / (n + PRIOR)``."""
    it, r = table.items[rows], table.ratings[rows].astype(np.float64)
    mu = float(r.mean())
    n = np.bincount(it, minlength=table.n_items).astype(np.float64)
    s = np.bincount(it, weights=r, minlength=table.n_items)
    rated = np.nonzero(n > 0)[0]
    dev = s[rated] / n[rated] - mu
    return mu, rated, dev, n[rated] / (n[rated] + PRIOR)


def predict(batch, mu: float, bias: np.ndarray, shrink: float | None) -> torch.Tensor:
    """``(T, N)`` query predictions ``mu + bias[i] (+ shrunk support residual)``, clipped to 1..5."""
    b = torch.as_tensor(bias, dtype=torch.float64)
    s, q = batch.support, batch.query
    pred = mu + b[q.items]
    if shrink is not None:
        m = s.mask.to(torch.float64)
        resid = ((s.targets.double() - mu - b[s.items]) * m).sum(1)
        pred = pred + (resid / (m.sum(1) + shrink)).unsqueeze(1)
    return pred.clamp(1.0, 5.0)


def per_task_mae(table, pool, scfg, mu, bias, shrink) -> np.ndarray:
    sampler = TaskSampler(table, pool, scfg, seed=0, dtype=torch.float64)
    out = []
    for batch in sampler.iterate(256):
        p = predict(batch, mu, bias, shrink)
        out.append(M.mae(p, batch.query.targets.double(), batch.query.mask).numpy())
    return np.concatenate(out)


def run_seed(table, X, sc, seed: int, shots: list[int | None]) -> dict:
    from dataclasses import replace

    splits = build_splits(table, replace(sc.protocol, seed=seed))
    train_rows = splits.pools[splits.train].rows
    mu, rated, dev, w = item_targets(table, train_rows)
    # out-of-fold biases for meta-train items (scored as if cold) to select on meta-val
    folds = np.random.default_rng(seed).integers(0, 5, size=rated.shape[0])
    scfg = sampler_config(sc.protocol)
    val = splits.pools[splits.val]
    best, grid = None, []
    for alpha in ALPHAS:
        oof = np.zeros(table.n_items)
        for k in range(5):
            fit, held = folds != k, folds == k
            beta = ridge(X[rated[fit]], dev[fit], w[fit], alpha)
            oof[rated[held]] = X[rated[held]] @ beta
        for shrink in SHRINK:
            v = float(np.nanmean(per_task_mae(table, val, scfg, mu, oof, shrink)))
            grid.append({"alpha": alpha, "shrink": shrink, "val_mae": v})
            if best is None or v < best[0]:
                best = (v, alpha, shrink)
    zero = np.zeros(table.n_items)
    user_only = min(
        SHRINK, key=lambda m: float(np.nanmean(per_task_mae(table, val, scfg, mu, zero, m)))
    )
    _, alpha, shrink = best
    bias = X @ ridge(X[rated], dev, w, alpha)  # all meta-train items; cold items by their content
    pop = np.zeros(table.n_items)  # the popularity baseline: shrunk item means, mu for cold items
    n = np.bincount(table.items[train_rows], minlength=table.n_items).astype(np.float64)
    s = np.bincount(
        table.items[train_rows],
        weights=table.ratings[train_rows].astype(np.float64),
        minlength=table.n_items,
    )
    pop = (s + PRIOR * mu) / (n + PRIOR) - mu
    methods = {
        "item-mean": (pop, None),
        "user-mean": (zero, user_only),
        "text-bias": (bias, None),
        "text-bias+user": (bias, shrink),
    }
    res: dict = {"seed": seed, "alpha": alpha, "shrink": shrink, "user_shrink": user_only}
    res["val_grid"] = grid
    res["states"] = {}
    for state in STATES:
        pool = splits.pools[state]
        res["states"][state] = {}
        for k in shots:
            cfg = sampler_config(sc.protocol, n_support=k)
            key = "default" if k is None else str(k)
            res["states"][state][key] = {
                m: per_task_mae(table, pool, cfg, mu, b, sh).tolist()
                for m, (b, sh) in methods.items()
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


def report(results: list[dict]) -> str:
    lines = []
    seeds = [r["seed"] for r in results]
    for state in STATES:
        for key in results[0]["states"][state]:
            lines += [
                f"\n### {state}, support {key} (seeds {seeds})\n",
                "| method | mae (mean ± 95% CI over seeds) | − item-mean, over tasks (95% CI) | p, tasks | p, seeds |",
                "|---|---:|---:|---:|---:|",
            ]
            for m in METHODS:
                per_seed = np.array(
                    [np.nanmean(r["states"][state][key][m]) for r in results], dtype=np.float64
                )
                mean, half, _ = _t_ci(per_seed)
                d_tasks = np.concatenate(
                    [
                        np.array(r["states"][state][key][m])
                        - np.array(r["states"][state][key]["item-mean"])
                        for r in results
                    ]
                )
                d_seeds = per_seed - np.array(
                    [np.nanmean(r["states"][state][key]["item-mean"]) for r in results]
                )
                if m == "item-mean":
                    lines.append(f"| {m} | {mean:.4f} ± {half:.4f} | | | |")
                    continue
                dm, dh, dp = _t_ci(d_tasks)
                _, _, sp = _t_ci(d_seeds)
                lines.append(
                    f"| {m} | {mean:.4f} ± {half:.4f} | {dm:+.4f} ± {dh:.4f} | {dp:.3g} | {sp:.3g} |"
                )
    sel = ", ".join(
        f"seed {r['seed']}: alpha={r['alpha']}, shrink={r['shrink']} (user-mean shrink={r['user_shrink']})"
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
    X = item_matrix(table)
    shots = [None if s == "default" else int(s) for s in a.shots.split(",")]
    results = [run_seed(table, X, sc, s, shots) for s in range(a.seeds)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("w") as f:
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
