"""From a scenario's ``[data]`` and ``[protocol]`` sections to an interaction table and splits.

``load_table`` reads the data source, ``build_splits`` applies the protocol and
``inspect_scenario`` (behind ``metarec tasks inspect``) builds the tasks and reports sizes and
the leakage checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metarec._errors import ConfigError
from metarec.config import DataConfig, ProtocolConfig, Scenario
from metarec.data.encoding import IdEncoder
from metarec.data.table import Columns, InteractionTable
from metarec.episodes.leakage import run_leakage_checks
from metarec.episodes.predefined import predefined_split
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.episodes.splits import (
    MetaSplits,
    cold_domain_users_split,
    melu_split,
    random_split,
    time_split,
)

__all__ = [
    "load_table",
    "build_splits",
    "sampler_config",
    "inspect_scenario",
    "genre_group_domains",
    "GENRE_GROUPS",
]


def load_table(cfg: DataConfig) -> InteractionTable:
    """Read the interaction table a ``[data]`` section describes."""
    table = _read(cfg)
    if cfg.domain_by == "genre_group":
        table = genre_group_domains(table)
    return table


GENRE_GROUPS = {
    "action-thriller": ("Action", "Adventure", "Thriller", "War", "Western", "Crime"),
    "comedy-family": ("Comedy", "Children's", "Animation", "Musical"),
    "drama-romance": ("Drama", "Romance", "Film-Noir", "Documentary"),
    "scifi-horror": ("Sci-Fi", "Horror", "Fantasy", "Mystery"),
}
"""The four MovieLens genre groups of the cross-genre scenarios (a movie's first genre decides)."""


def genre_group_domains(table: InteractionTable, feature: str = "genre") -> InteractionTable:
    """Re-assign each interaction's domain to the genre group of its item's first genre."""
    f = table.item_features
    if f is None or feature not in f.categorical:
        raise ConfigError(
            f"data.domain_by='genre_group' needs an item feature {feature!r}; load MovieLens with its movie features"
        )
    vocab = [""] + [str(v) for v in f.vocabs[feature].values]
    group_of = {g: name for name, gs in GENRE_GROUPS.items() for g in gs}
    names = sorted(GENRE_GROUPS)
    code = np.array(
        [names.index(group_of[v]) + 1 if v in group_of else 0 for v in vocab], dtype=np.int64
    )
    first = f.categorical[feature][:, 0]  # (n_items,) first genre code
    item_group = code[first]
    dom = item_group[table.items]
    keep = dom > 0
    enc = IdEncoder(names, name="domain")
    t = table.subset(keep)
    return InteractionTable(
        t.users,
        t.items,
        t.ratings,
        dom[keep],
        t.timestamps,
        t.user_ids,
        t.item_ids,
        enc,
        feedback=t.feedback,
        rating_scale=t.rating_scale,
        user_features=t.user_features,
        item_features=t.item_features,
    )


def _read(cfg: DataConfig) -> InteractionTable:
    if cfg.source == "synthetic":
        from metarec.data.synthetic import make_synthetic

        s = cfg.synthetic
        return make_synthetic(
            s.n_domains,
            s.n_users,
            s.n_items,
            n_factors=s.n_factors,
            shift=s.shift,
            density=s.density,
            density_spread=s.density_spread,
            feedback=s.feedback,
            noise=s.noise,
            n_user_features=s.n_user_features,
            n_item_features=s.n_item_features,
            seed=s.seed,
        )  # type: ignore[return-value]
    if cfg.path is None and not cfg.files:
        more = " or [[data.files]] entries" if cfg.source == "csv" else ""
        raise ConfigError(
            f'data.path: required for source={cfg.source!r}; set it in the scenario (path = "${{METAREC_DATA}}/..."){more} '
            "and export METAREC_DATA or pass --data-root"
        )
    from metarec.data import readers, sources

    if cfg.source in ("csv", "shared_below_k"):
        cols = _columns(cfg)
        scale = (cfg.rating_scale[0], cfg.rating_scale[1]) if cfg.rating_scale else None
        files = [sources.SourceFile(f.path, f.domain, f.part) for f in cfg.files] or [
            sources.SourceFile(cfg.path)  # type: ignore[arg-type]
        ]
        opts = dict(format=cfg.format, sep=cfg.sep, header=cfg.header, names=cfg.names)
        if cfg.source == "shared_below_k":
            return sources.read_shared_below_k(
                files,
                cfg.shared_users,
                cols,
                namespace_items="item" in cfg.namespace or not cfg.namespace,
                feedback=cfg.feedback,
                rating_scale=scale,
                duplicates=cfg.duplicates,
                **opts,  # type: ignore[arg-type]
            )
        return sources.read_files(
            files,
            cols,
            ids=cfg.ids,
            namespace=cfg.namespace,
            feedback=cfg.feedback,
            rating_scale=scale,
            duplicates=cfg.duplicates,
            **opts,  # type: ignore[arg-type]
        )
    path = Path(cfg.path)  # type: ignore[arg-type]
    if cfg.source == "movielens-100k":
        return readers.read_movielens_100k(path)
    if cfg.source == "movielens-1m":
        return readers.read_movielens_1m(path, melu_extra=cfg.melu_extra, item_text=cfg.item_text)
    if cfg.source == "recbole":
        if not cfg.name:
            raise ConfigError(
                "data.name: required for source='recbole' (the atomic files' stem, e.g. 'ml-100k')"
            )
        return readers.read_recbole_atomic(path, cfg.name)
    if not cfg.pair:
        raise ConfigError("data.pair: required for source='amazon', e.g. pair = \"sport_cloth\"")
    return readers.read_amazon_pair(path, cfg.pair)


def _columns(cfg: DataConfig) -> Columns:
    """The column mapping of ``data.columns`` (``"none"`` drops a role: ``rating = "none"``)."""
    roles = {
        k: (None if v.strip().lower() in ("none", "null") else v) for k, v in cfg.columns.items()
    }
    return Columns(**roles)  # type: ignore[arg-type]


# Per ``protocol.split``: the split function and the ``[protocol]`` fields it takes beside
# ``n_query``, ``min_interactions``, ``max_interactions`` and ``seed`` (each under its own name).
_SPLITS: dict[str, tuple[Callable[..., MetaSplits], tuple[str, ...]]] = {
    "melu": (melu_split, ("existing_user_fraction", "new_item_year", "val_fraction")),
    "cold_domain_users": (cold_domain_users_split, ("target_domain", "beta", "val_fraction")),
    "predefined": (predefined_split, ("unit", "target_domain", "val_fraction", "order")),
    "time": (time_split, ("unit", "fractions", "cohort_by")),
    "random": (random_split, ("unit", "fractions", "order", "cohort_by")),
}


def build_splits(table: InteractionTable, p: ProtocolConfig) -> MetaSplits:
    """Apply a ``[protocol]`` section: meta-train / meta-val / test pools."""
    split, fields = _SPLITS.get(p.split, _SPLITS["random"])
    return split(
        table,
        n_query=p.n_query or 10,
        min_interactions=p.min_interactions,
        max_interactions=p.max_interactions,
        seed=p.seed,
        **{name: getattr(p, name) for name in fields},
    )


def sampler_config(p: ProtocolConfig, *, n_support: int | None = -1) -> SamplerConfig:
    """The sampler settings of a protocol (``n_support`` overrides the shots)."""
    ns = p.n_support if n_support == -1 else n_support
    return SamplerConfig(
        n_support=ns,
        n_query=p.n_query,
        order=p.order if p.split != "time" else "time",
        negatives=p.negatives,
    )


def _dist(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"min": 0, "max": 0, "mean": 0.0}
    return {"min": int(x.min()), "max": int(x.max()), "mean": round(float(x.mean()), 2)}


def inspect_scenario(scenario: Scenario, *, seed: int = 0) -> dict[str, Any]:
    """Build the scenario's tasks; report per split the number of task units, the support and
    query size distributions, the leakage checks and the time taken."""
    t0 = time.perf_counter()
    table = load_table(scenario.data)
    t_load = time.perf_counter() - t0
    splits = build_splits(table, scenario.protocol)
    cfg = sampler_config(scenario.protocol)
    out: dict[str, Any] = {"scenario": scenario.name, "data": table.summary(), "splits": {}}
    for name, pool in splits.pools.items():
        if len(pool) == 0:
            out["splits"][name] = {
                "tasks": 0,
                "support": _dist(np.zeros(0)),
                "query": _dist(np.zeros(0)),
            }
            continue
        sampler = TaskSampler(table, pool, cfg, seed=seed)
        batches = (
            sampler.iterate(1024)
            if name != splits.train
            else [sampler.sample(min(1024, len(pool)))]
        )
        sup = np.concatenate([b.support.sizes().numpy() for b in batches])
        qry = np.concatenate([b.query.sizes().numpy() for b in batches])
        out["splits"][name] = {"tasks": len(pool), "support": _dist(sup), "query": _dist(qry)}
    checks, details = run_leakage_checks(splits, cfg, seed=seed)
    out["leakage_checks"] = checks
    out["leakage_details"] = details
    out["states"] = splits.states
    out["seconds"] = {"load": round(t_load, 3), "total": round(time.perf_counter() - t0, 3)}
    return out
