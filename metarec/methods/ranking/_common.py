"""What the ranking baselines share: settings from the scenario, the support as item lists, the
item universe, the meta-train matrix, tuning on meta-val, and the item-score adapted object."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import torch

from metarec._errors import CheckpointError, ConfigError
from metarec.config import from_dict
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeSet
from metarec.episodes.ranking import state_catalogue
from metarec.episodes.sampler import SamplerConfig
from metarec.episodes.splits import MetaSplits
from metarec.methods.base import FitData
from metarec.methods.catalogue import evaluate_ranking
from metarec.methods.ranking.by_shots import ByShots
from metarec.metrics.select import RANK_SELECT_METRIC
from metarec.train.log import TrainingLog

__all__: list[str] = []

S = TypeVar("S")

TUNE_METRIC = RANK_SELECT_METRIC[0]
"""What the baselines' grids are scored by on meta-val (higher is better)."""


@dataclass(frozen=True)
class Protocol:
    """The parts of a scenario a baseline's tuning reads (defaults without a scenario)."""

    sampler: SamplerConfig
    relevance: float | None = None
    val_tasks: int = 512
    shots: tuple[int, ...] = ()
    """The support sizes tuned on, one choice each (the scenario's ``bench.shots`` and its
    ``protocol.n_support``); empty: the sampler's support size only."""
    ranking: bool = False
    """A ranking scenario (``protocol.ranking``): its own meta-val tasks are what every method
    is selected on. ``relevance`` is ``None`` there for implicit feedback (every interaction is
    relevant), so it does not tell a ranking scenario apart."""

    @classmethod
    def of(cls, scenario: Any) -> Protocol:
        if scenario is None:
            return cls(SamplerConfig(n_support=5, n_query=None))
        from metarec.episodes.build import sampler_config

        p = scenario.protocol
        shots = {int(k) for k in (getattr(getattr(scenario, "bench", None), "shots", None) or ())}
        if isinstance(p.n_support, int):
            shots.add(int(p.n_support))
        return cls(
            sampler_config(p),
            p.relevance if p.ranking else None,
            scenario.train.val_tasks,
            tuple(sorted(shots)) if p.ranking else (),
            bool(p.ranking),
        )


def parse(cls: type[S], name: str, scenario: Any, settings: Mapping[str, Any]) -> S:
    """``cls`` from the scenario's ``[learners.<name>]`` table overridden by ``settings``
    (errors name the ``--set learners.<name>.KEY`` key)."""
    section = (getattr(scenario, "learners", None) or {}).get(name, {})
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"learners.{name}={section!r}: expected a table of {name}'s settings, e.g. "
            f"--set 'learners.{name}.neighbours=[50,100]'"
        )
    return from_dict(cls, {**dict(section), **dict(settings)}, where=f"learners.{name}")


def check_grid(
    name: str, key: str, values: Sequence[Any], low: float, strict: bool = False
) -> None:
    """A non-empty grid of numbers ``>= low`` (``> low`` when ``strict``)."""
    if not values:
        raise ConfigError(f"learners.{name}.{key}=[]: give at least one value to try on meta-val")
    for v in values:
        if v is None:
            continue
        bad = v <= low if strict else v < low
        if bad:
            rule = f"> {low}" if strict else f">= {low}"
            raise ConfigError(
                f"learners.{name}.{key}={list(values)}: {v!r} is not {rule}; e.g. --set 'learners.{name}.{key}=[...]'"
            )


def support_lists(support: EpisodeSet, feedback: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(task (P,), item (P,))`` of the support's interactions, by task: every real row with
    explicit feedback (a rating is an interaction), the positives with implicit feedback
    (sampled negatives in a support carry no taste)."""
    keep = support.mask.clone()
    if feedback == "implicit":
        keep &= support.targets > 0.5
    t, j = torch.nonzero(keep, as_tuple=True)
    return t.cpu(), support.items[t, j].cpu().long()


def positions(items: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Positions of ``query`` item indices in the sorted ``items`` (``-1``: not there)."""
    if items.numel() == 0:
        return torch.full_like(query, -1)
    pos = torch.searchsorted(items, query)
    ok = (pos < items.shape[0]) & (items[pos.clamp(max=items.shape[0] - 1)] == query)
    return torch.where(ok, pos, torch.full_like(pos, -1))


def universe(table: InteractionTable, splits: MetaSplits) -> np.ndarray:
    """The items a baseline ranks: the union of every evaluation pool's catalogue
    (:func:`metarec.episodes.ranking.state_catalogue`), sorted."""
    parts = [
        state_catalogue(splits, n) for n, p in splits.pools.items() if n != splits.train and len(p)
    ]
    return np.unique(np.concatenate(parts)) if parts else np.unique(table.items)


def train_matrix(
    table: InteractionTable, splits: MetaSplits, columns: np.ndarray
) -> tuple[torch.Tensor, int]:
    """The binary meta-train user x item matrix over ``columns`` (sorted item indices), as a
    sparse CSR ``float64 (n_users_train, len(columns))`` tensor (an interaction is 1, repeats
    count once), and its number of rows."""
    rows = splits.pools[splits.train].rows
    u, i = table.users[rows], table.items[rows]
    pos = np.searchsorted(columns, i)
    ok = (pos < columns.shape[0]) & (columns[np.minimum(pos, max(columns.shape[0] - 1, 0))] == i)
    keys = np.unique(u[ok].astype(np.int64) * columns.shape[0] + pos[ok])
    uu, cc = keys // columns.shape[0], keys % columns.shape[0]
    _, r = np.unique(uu, return_inverse=True)
    n_rows = int(r.max()) + 1 if r.size else 0
    x = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([r, cc])),
        torch.ones(r.shape[0], dtype=torch.float64),
        (n_rows, columns.shape[0]),
    ).coalesce()
    return x.to_sparse_csr(), n_rows


def tune(
    name: str,
    grid: Sequence[Mapping[str, Any]],
    build: Callable[[Mapping[str, Any]], Any],
    data: FitData,
    protocol: Protocol,
) -> tuple[Any, dict[str, Any]]:
    """Build one fitted object per grid point, score each on meta-val (:data:`TUNE_METRIC`, at
    most ``val_tasks`` tasks) at every support size of ``protocol.shots`` (or the sampler's
    only) and keep the best point per support size (the first on ties). Returns ``(best,
    log)``: ``best`` is the one fitted object when one point wins at every size, else a
    :class:`~metarec.methods.ranking.by_shots.ByShots` of the winners; the log lists every
    point's scores and the choice per size."""
    val = data.splits.val
    if val not in data.splits.pools or len(data.splits.pools[val]) == 0:
        raise ConfigError(
            f"{name}: the split has no meta-val tasks to tune on; raise protocol.val_fraction (e.g. 0.1)"
        )
    ns = protocol.sampler.n_support
    shots: list[int] = list(protocol.shots) or [ns if isinstance(ns, int) else 5]
    best: list[Any] = [None] * len(shots)
    best_score = [-np.inf] * len(shots)
    best_point = [0] * len(shots)
    trials = []
    t0 = time.perf_counter()
    for i, point in enumerate(grid):
        fitted = build(point)
        row: dict[str, Any] = {k: _json(v) for k, v in point.items()}
        for j, k in enumerate(shots):
            sampler = (
                protocol.sampler
                if k == protocol.sampler.n_support
                else replace(protocol.sampler, n_support=k)
            )
            ev = evaluate_ranking(
                fitted,
                data.table,
                data.splits,
                val,
                sampler,
                relevance=protocol.relevance,
                max_tasks=protocol.val_tasks,
                seed=data.seed,
            )
            score = float(ev[TUNE_METRIC])
            row[f"{TUNE_METRIC}@{k}" if len(shots) > 1 else TUNE_METRIC] = score
            if np.isfinite(score) and score > best_score[j]:
                best[j], best_score[j], best_point[j] = fitted, score, i
        trials.append(row)
        del fitted
    for j in range(len(shots)):
        if best[j] is None:  # no finite score (no relevant meta-val item): the first point
            best[j] = build(grid[0])
    seconds = time.perf_counter() - t0
    members: list[Any] = []
    which = []
    for b in best:
        if not any(b is m for m in members):
            members.append(b)
        which.append(next(i for i, m in enumerate(members) if m is b))
    out = members[0] if len(members) == 1 else ByShots(name, data.table, shots, which, members)
    log = {
        "metric": TUNE_METRIC,
        "pool": val,
        "shots": shots,
        "chosen": [
            {k: _json(v) for k, v in grid[best_point[j]].items()} for j in range(len(shots))
        ],
        "trials": trials,
        "seconds": round(seconds, 2),
    }
    default = shots.index(protocol.sampler.n_support) if protocol.sampler.n_support in shots else 0
    out.training_log = TrainingLog(  # closed form: no steps; the chosen points' meta-val scores
        seconds=seconds,
        metric=TUNE_METRIC,
        best_val={
            (f"{TUNE_METRIC}@{k}" if len(shots) > 1 else TUNE_METRIC): v
            for k, v in zip(shots, best_score, strict=True)
            if np.isfinite(v)
        }
        | ({TUNE_METRIC: best_score[default]} if np.isfinite(best_score[default]) else {}),
    )
    return out, log


def _json(v: Any) -> Any:
    return float(v) if isinstance(v, (np.floating, float)) else v


class ItemScoresAdapted:
    """Adapted tasks whose scores are one dense row per task over every item index.

    ``rows (T, n_items)`` is computed once from the supports; ``score`` gathers from it and
    ``score_catalogue`` slices it, so both paths give the very same numbers. The scores rank
    items; they are not ratings (``score_kind = "rank"``: the benchmark leaves out error metrics).
    """

    score_kind = "rank"

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows

    @property
    def n_tasks(self) -> int:
        return int(self.rows.shape[0])

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` item indices -> ``(T, N)`` scores (``users`` unused: each row is its task)."""
        return torch.gather(self.rows, 1, items.to(self.rows.device).long())

    def score_catalogue(self, items: torch.Tensor) -> torch.Tensor:
        """``items (C,)`` -> ``(T, C)``."""
        return self.rows[:, items.to(self.rows.device).long()]

    def select(self, rows: torch.Tensor) -> ItemScoresAdapted:
        """The tasks ``rows`` (``int64 (R,)``), in that order."""
        return ItemScoresAdapted(self.rows[rows.to(self.rows.device)])

    @classmethod
    def concat(cls, parts: list[ItemScoresAdapted]) -> ItemScoresAdapted:
        """The tasks of ``parts``, one after the other."""
        return cls(torch.cat([p.rows for p in parts]))


def load_tensors(
    obj: Any, state: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...] | None]
) -> None:
    """Set ``obj.<key>`` from ``state`` for each key of ``shapes`` (``None``: any shape), with a
    clear error on a missing tensor or a shape mismatch."""
    for key, shape in shapes.items():
        got = state.get(key)
        if got is None or (shape is not None and tuple(got.shape) != tuple(shape)):
            raise CheckpointError(
                f"state_dict: {key!r} has shape {None if got is None else tuple(got.shape)}, "
                f"{type(obj).__name__} needs {shape}; the weights belong to another run or catalogue; re-train"
            )
        setattr(obj, key, got)
