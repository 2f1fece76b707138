"""One benchmark run's context (method, seed, data, splits, shots, device) and how every run
scores its test states: the same pools, shots, query sets and ranking candidates for every
method (:func:`evaluate_states`, :func:`ranking`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metarec.bench.evaluation import NEGATIVES, Catalogue
from metarec.bench.ranking import ranking_spec
from metarec.config import Scenario
from metarec.data.table import InteractionTable
from metarec.episodes.build import sampler_config
from metarec.episodes.splits import MetaSplits

__all__ = ["RunContext", "ranking", "evaluate_states"]


@dataclass
class RunContext:
    algo: str
    seed: int
    scenario: Scenario  # seeded, not yet the variant
    table: InteractionTable
    splits: MetaSplits
    shots: tuple[int, ...]
    device: torch.device
    env: dict[str, Any]
    out: Path
    cat: Catalogue | None = None  # per-user seen items and per-domain catalogues (ranking metrics)
    catalogue: bool = False  # rank against the whole catalogue at the default support
    runs: Path | None = None  # folder of the run directories (default: out/runs)
    quick: bool = False  # quick suite: sampled-negative ranking at the default support only
    tuned: dict[str, Any] | None = (
        None  # a configuration chosen by ``--tune`` (dotted: scenario keys)
    )
    memo: dict[Any, Any] | None = None  # fits this seed's methods share (FitData.memo)

    @property
    def run_id(self) -> str:
        return f"{self.algo}-s{self.seed}"


def ranking(ctx: RunContext, default: bool) -> dict[str, Any]:
    """Ranking settings of one scoring: sampled negatives everywhere (quick: at the default
    support only), the full catalogue at the default support when ``ctx.catalogue``. A ranking
    scenario (``protocol.ranking``) ranks every relevant query item against the catalogue at
    every shots value, quick or not (:mod:`metarec.bench.ranking`)."""
    spec = ranking_spec(ctx.scenario, ctx.splits, ctx.seed)
    if spec is not None:
        return {"ranking": spec}
    return {
        "negatives": NEGATIVES if (default or not ctx.quick) else None,
        "catalogue": bool(default and ctx.catalogue),
    }


def evaluate_states(
    ctx: RunContext, sc: Scenario, evaluate: Any, *, catalogue: bool = False
) -> list[tuple[str, int | str, Any, dict[str, Any]]]:
    """``[(state, shots, n_support, evaluation)]``; identical sampler settings are scored once.

    ``evaluate(pool, sampler_config)`` scores one pool; with ``catalogue`` the default support is
    scored as ``evaluate(pool, sampler_config, True)`` (the evaluator may add ranking metrics there)."""
    out: list[tuple[str, int | str, Any, dict[str, Any]]] = []
    for state in ctx.splits.states:
        pool = ctx.splits.pools[state]
        if len(pool) == 0:
            continue
        cache: dict[Any, dict[str, Any]] = {}
        every: tuple[int | str, ...] = ("default", *ctx.shots)
        for shots in every:
            scfg = (
                sampler_config(sc.protocol)
                if isinstance(shots, str)
                else sampler_config(sc.protocol, n_support=shots)
            )
            if scfg not in cache:
                cache[scfg] = (
                    evaluate(pool, scfg, True)
                    if (catalogue and shots == "default")
                    else evaluate(pool, scfg)
                )
            out.append((state, shots, scfg.n_support, cache[scfg]))
    order = {s: i for i, s in enumerate((*ctx.shots, "default"))}
    return sorted(out, key=lambda e: (ctx.splits.states.index(e[0]), order[e[1]]))
