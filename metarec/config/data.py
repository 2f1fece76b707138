"""The ``[data]`` section of a scenario: where interactions come from (:class:`DataConfig`,
its ``[[data.files]]`` entries :class:`DataFile` and the generator :class:`SyntheticConfig`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from metarec._errors import ConfigError, suggest
from metarec.config._checks import _check_at_least
from metarec.config.features import FeatureFile
from metarec.config.schema import _NONE_WORDS, coerce_tables

__all__ = ["DataConfig", "DataFile", "SyntheticConfig", "resolve_data_paths"]

_COLUMN_ROLES = ("user", "item", "rating", "domain", "timestamp", "part")


@dataclass(frozen=True)
class SyntheticConfig:
    """The generator behind ``data.source = "synthetic"``: domains of users and items whose
    ratings come from latent factors shifted per domain.

    Fields:
        n_domains: number of domains.
        n_users: users per domain.
        n_items: items per domain.
        n_factors: latent dimension of the true rating model.
        shift: scale of the per-domain shift of the latent factors (0 = identical domains).
        density: mean fraction of (user, item) pairs observed within a domain.
        density_spread: relative spread of density across users (0 = every user alike).
        feedback: ``"explicit"`` ratings or ``"implicit"`` positives.
        noise: standard deviation of the rating noise.
        n_user_features, n_item_features: number of categorical side features.
        seed: seed of the generator; the same seed gives the same data.
    """

    n_domains: int = 40
    n_users: int = 200
    n_items: int = 300
    n_factors: int = 8
    shift: float = 0.5
    density: float = 0.05
    density_spread: float = 0.5
    feedback: Literal["explicit", "implicit"] = "explicit"
    noise: float = 0.3
    n_user_features: int = 3
    n_item_features: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "n_domains", "n_users", "n_items", "n_factors")
        _check_at_least(
            self, 0, "shift", "density_spread", "noise", "n_user_features", "n_item_features"
        )
        if not 0.0 < self.density <= 1.0:
            raise ConfigError(
                f"density={self.density!r}: the observed fraction of pairs must lie in (0, 1]; "
                f"e.g. density = 0.05"
            )


_PARTS = ("train", "valid", "test")


@dataclass(frozen=True)
class DataFile:
    """One entry of ``[[data.files]]``: an interaction file and what its rows are.

    Fields:
        path: the file; may use ``${METAREC_DATA}``.
        domain: the domain of every row of the file (``None``: the file's own domain column,
            or no domains).
        part: the part of the dataset's own split: ``"train"``, ``"valid"`` or ``"test"``
            (``protocol.split = "predefined"`` evaluates on it); ``None``: no predefined split.
    """

    path: str
    domain: str | None = None
    part: Literal["train", "valid", "test"] | None = None

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise ConfigError(
                'path="": each data.files entry needs the path of a file; e.g. path = "books.dat"'
            )


@dataclass(frozen=True)
class DataConfig:
    """Where interactions come from.

    Fields:
        source: ``"synthetic"``, ``"movielens-100k"``, ``"movielens-1m"``, ``"recbole"``
            (atomic files), ``"amazon"`` (cross-domain pairs) or ``"csv"``.
        path: file or folder to read; may use ``${METAREC_DATA}``. ``None`` for synthetic. A
            relative path in a scenario file is relative to that file's folder (one given with
            ``--set`` to the current folder); the loaded scenario holds it absolute.
        name: RecBole dataset name (``source = "recbole"``).
        pair: Amazon domain pair, e.g. ``"sport_cloth"`` (``source = "amazon"``).
        feedback: ``"explicit"`` ratings or ``"implicit"`` positives.
        rating_scale: ``(low, high)`` of explicit ratings, or ``None`` (implicit).
        melu_extra: read MovieLens side features as MeLU does (genre, director, actors).
        columns: CSV column mapping from role (user, item, rating, domain, timestamp) to the
            column name in the file; roles not given keep their own name.
        synthetic: the generator's settings (``source = "synthetic"``).
        domain_by: derive domains from item features: ``"genre_group"`` puts each movie in
            one of four genre groups by its first genre (MovieLens cross-genre scenarios).
        item_text: MovieLens-1M item columns added as text features (e.g. ``["title", "plot"]``).
        files: several interaction files (``[[data.files]]`` tables with ``path``, ``domain``,
            ``part``) instead of one ``path`` (``source = "csv"`` or ``"shared_below_k"``).
        format: ``"csv"``, ``"tsv"`` or ``"parquet"`` for files of any extension (``None``:
            from the extension).
        sep: separator of text files, any string (``"\t"``, ``"::"``); ``"auto"`` sniffs it.
        header: text files start with a header line; ``false`` for header-less files (then
            ``names`` names the columns).
        names: column names of header-less files, e.g. ``["user", "item", "rating"]``.
        ids: ``"string"``: ids kept exactly as written (``1``, ``01``, ``001`` are three
            users); ``"numeric"``: user and item ids are integers (``01`` is ``1``).
        namespace: ``["item"]`` and/or ``["user"]``: prefix those ids with their domain
            (``"books:7"``) when the same number means different things in different domains.
        duplicates: repeated (user, item, domain) rows: ``"error"``, keep ``"first"`` /
            ``"last"``, or ``"mean"`` of the ratings.
        shared_users: ``source = "shared_below_k"``: K, the number of shared users (ids
            ``0..K-1`` are in every domain, ids from K on are local to their domain).
        user_features, item_features: side-feature files (``[[data.user_features]]``,
            ``[[data.item_features]]`` tables, each a :class:`~metarec.config.features.FeatureFile`:
            path, id column, feature columns and their kinds), read with the interactions
            (``source = "csv"``); several files of one entity are joined on the id.
    """

    source: Literal[
        "synthetic", "movielens-100k", "movielens-1m", "recbole", "amazon", "csv", "shared_below_k"
    ] = "synthetic"
    path: str | None = None
    name: str | None = None
    pair: str | None = None
    feedback: Literal["explicit", "implicit"] = "explicit"
    rating_scale: tuple[float, ...] | None = (1.0, 5.0)
    melu_extra: bool = True
    columns: dict[str, str] = field(default_factory=dict)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    domain_by: Literal["genre_group"] | None = None
    item_text: tuple[str, ...] = ()
    files: tuple[DataFile, ...] = ()
    format: Literal["csv", "tsv", "parquet"] | None = None
    sep: str | None = None
    header: bool = True
    names: tuple[str, ...] | None = None
    ids: Literal["string", "numeric"] = "string"
    namespace: tuple[str, ...] = ()
    duplicates: Literal["error", "first", "last", "mean"] = "error"
    shared_users: int | None = None
    user_features: tuple[FeatureFile, ...] = ()
    item_features: tuple[FeatureFile, ...] = ()

    def __post_init__(self) -> None:
        coerce_tables(self)  # DataConfig(files=[{...}], user_features=[{...}]) from Python
        self._check_files()
        self._check_feature_files()
        scale = self.rating_scale
        if scale is not None and (len(scale) != 2 or not scale[0] < scale[1]):
            raise ConfigError(
                f"rating_scale={list(scale)}: expected [low, high] with low < high; "
                f'e.g. rating_scale = [1.0, 5.0], or "none" for implicit feedback'
            )
        for role in self.columns:
            if role not in _COLUMN_ROLES:
                raise ConfigError(
                    f"columns={self.columns!r}: unknown column role {role!r}{suggest(role, _COLUMN_ROLES)}; "
                    f"roles are {', '.join(_COLUMN_ROLES)}"
                )
        used: dict[str, str] = {}
        for role, col in self.columns.items():
            if col.strip().lower() in _NONE_WORDS:
                continue
            if col in used:
                raise ConfigError(
                    f"columns.{role}={col!r}: column {col!r} is already columns.{used[col]}; one column cannot play "
                    f"two roles; set data.columns.{role} to another column"
                )
            used[col] = role
        for role in ("user", "item"):
            if self.columns.get(role, role).strip().lower() in _NONE_WORDS:
                raise ConfigError(
                    f"columns.{role}={self.columns[role]!r}: every interaction needs a {role} column; name it"
                )

    def _check_feature_files(self) -> None:
        for what in ("user_features", "item_features"):
            entries = getattr(self, what)
            if entries and self.source != "csv":
                builtin = (
                    " (its reader loads the dataset's own features)"
                    if self.source != "synthetic"
                    else ""
                )
                raise ConfigError(
                    f'{what}: [[data.{what}]] files are read with source = "csv", not source={self.source!r}'
                    f'{builtin}; read the interactions as source = "csv" too, or remove the {what} entries'
                )
            seen: dict[str, int] = {}
            for i, entry in enumerate(entries):
                for col in entry.columns:
                    if col in seen:
                        raise ConfigError(
                            f"{what}[{i}].columns.{col}: feature {col!r} is already read from {what}[{seen[col]}]; "
                            "each feature comes from one file; rename or drop one of them"
                        )
                    seen[col] = i

    def _check_files(self) -> None:
        if self.files and self.path is not None:
            raise ConfigError(
                f"files: both data.path={self.path!r} and {len(self.files)} data.files entries are set; "
                "give one file as path or several as [[data.files]], not both"
            )
        if self.files and self.source not in ("csv", "shared_below_k"):
            raise ConfigError(
                f'files: data.files is read by source = "csv" or "shared_below_k", not source={self.source!r}; '
                'set source = "csv"'
            )
        if self.source == "shared_below_k" and not self.files:
            raise ConfigError(
                'source="shared_below_k": needs one [[data.files]] entry per domain (path = "...", domain = "...")'
            )
        if self.shared_users is not None and self.shared_users < 1:
            raise ConfigError(
                f"shared_users={self.shared_users}: must be >= 1 (ids 0..K-1 are shared); e.g. shared_users = 1000"
            )
        if self.shared_users is not None and self.source != "shared_below_k":
            raise ConfigError(
                f'shared_users={self.shared_users}: only read by source = "shared_below_k" (source={self.source!r}); '
                'set source = "shared_below_k" or remove shared_users'
            )
        parts = [f.part is not None for f in self.files]
        if any(parts) and not all(parts):
            i = parts.index(False)
            raise ConfigError(
                f"files[{i}]: no part, while other entries name one; when the dataset ships its own split every "
                'entry needs part = "train", "valid" or "test"'
            )
        for n in self.namespace:
            if n not in ("user", "item"):
                raise ConfigError(
                    f"namespace={list(self.namespace)}: {n!r} cannot be namespaced{suggest(n, ('user', 'item'))}; "
                    'use namespace = ["item"], ["user"] or ["user", "item"]'
                )
        if self.names is not None:
            if len(set(self.names)) != len(self.names) or not all(n.strip() for n in self.names):
                raise ConfigError(
                    f"names={list(self.names)}: column names must be distinct and non-empty; "
                    'e.g. names = ["user", "item", "rating"]'
                )
        if self.sep == "":
            raise ConfigError(
                'sep="": the separator needs at least one character; e.g. sep = "\\t", or "auto"'
            )


def resolve_data_paths(
    cfg: DataConfig, base: str | os.PathLike[str], *, cwd_keys: Iterable[str] = ()
) -> DataConfig:
    """``cfg`` with its relative paths made absolute (``~`` expanded): ``path``, ``files[].path``
    and the feature files' ``path`` against ``base``, except the keys of ``cwd_keys`` (``"path"``,
    ``"files"``, ``"user_features"``, ``"item_features"``) against the current folder.

    :func:`~metarec.config.load_scenario` resolves the paths a scenario file gives against the
    file's folder, and those given otherwise (``--set``, a dict) against the current folder, so
    a run reads the same files from any working folder (and its saved ``config.json`` names them
    absolutely).
    """
    cwd = set(cwd_keys)

    def _abs(p: str, key: str) -> str:
        q = Path(os.path.expanduser(p))
        root = Path.cwd() if key in cwd else Path(base)
        return str(q if q.is_absolute() else Path(os.path.abspath(root / q)))

    return replace(
        cfg,
        path=_abs(cfg.path, "path") if cfg.path is not None else None,
        files=tuple(replace(f, path=_abs(f.path, "files")) for f in cfg.files),
        user_features=tuple(
            replace(f, path=_abs(f.path, "user_features")) for f in cfg.user_features
        ),
        item_features=tuple(
            replace(f, path=_abs(f.path, "item_features")) for f in cfg.item_features
        ),
    )
