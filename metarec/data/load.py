"""From a scenario's ``[data]`` section to an interaction table: :func:`load_table`.

The readers (:mod:`metarec.data.readers`, :mod:`metarec.data.sources`) and the embedded
synthetic generator (:mod:`metarec.data.synthetic`) behind one call, plus the genre-group domains
of the cross-genre scenarios (:func:`genre_group_domains`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metarec._errors import ConfigError
from metarec.config import DataConfig
from metarec.data.drops import Drop, lost_entities
from metarec.data.encoding import IdEncoder
from metarec.data.table import Columns, InteractionTable

__all__ = ["load_table", "genre_group_domains", "GENRE_GROUPS"]


def load_table(cfg: DataConfig) -> InteractionTable:
    """Read the interaction table a ``[data]`` section describes.

    Example:
        >>> import tempfile, pathlib, metarec as mr
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ratings.csv"
        >>> _ = path.write_text("user,item,rating\\nu1,i1,4\\nu1,i2,2\\nu2,i1,5\\n")
        >>> sc = mr.Scenario(data={"source": "csv", "path": str(path)})
        >>> load_table(sc.data)
        InteractionTable(3 interactions, 2 users, 2 items, 1 domains, explicit)
        >>> sc = mr.Scenario(data={"source": "synthetic",
        ...                        "synthetic": {"n_domains": 2, "n_users": 20, "n_items": 30}})
        >>> load_table(sc.data)
        InteractionTable(600 interactions, 40 users, 60 items, 2 domains, explicit)
    """
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
            f"data.domain_by='genre_group' needs an item feature {feature!r}; load MovieLens with "
            "its movie features"
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
    out = InteractionTable(
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
    out.filtered = list(table.filtered)
    if not keep.all():
        out.filtered.append(
            Drop(
                "data.domain_by",
                "genre_group",
                int((~keep).sum()),
                lost_entities(table.users, ~keep, keep),
                lost_entities(table.items, ~keep, keep),
                "ratings of movies whose first genre is in no genre group "
                f"(e.g. {_first_orphan(vocab, first, group_of)!r})",
                "no setting keeps them: they have no domain",
            )
        )
    return out


def _first_orphan(vocab: list[str], first: np.ndarray, group_of: dict[str, str]) -> str:
    codes = [c for c in np.unique(first) if c and vocab[c] not in group_of]
    return vocab[codes[0]] if codes else "no genre"


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
            f"data.path: required for source={cfg.source!r}; "
            f'set it in the scenario (path = "${{METAREC_DATA}}/..."){more} '
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
            **_feature_kwargs(cfg),
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


def _feature_kwargs(cfg: DataConfig) -> dict[str, Any]:
    """``user_features=``, ``user_feature_specs=``, ... of the ``[[data.*_features]]`` files."""
    from metarec.data.feature_files import read_feature_files

    out: dict[str, Any] = {}
    for what in ("user", "item"):
        entries = getattr(cfg, f"{what}_features")
        if entries:
            frame, specs = read_feature_files(entries, what, ids=cfg.ids, namespace=cfg.namespace)
            out |= {
                f"{what}_features": frame,
                f"{what}_feature_specs": specs,
                f"{what}_feature_id": entries[0].id,
            }
    return out


def _columns(cfg: DataConfig) -> Columns:
    """The column mapping of ``data.columns`` (``"none"`` drops a role: ``rating = "none"``)."""
    roles = {
        k: (None if v.strip().lower() in ("none", "null") else v) for k, v in cfg.columns.items()
    }
    return Columns(**roles)  # type: ignore[arg-type]
