"""Scenario configuration: the schema of ``tasks/*.toml`` (typed, frozen dataclasses).

A scenario is data, not code: one table per section, every key optional except ``name``
(which defaults to the file's stem)::

    name = "movielens-user-cold-start"
    [data]
    source = "movielens-100k"
    path = "${METAREC_DATA}/ml-100k"
    [algorithm]
    name = "maml"
    inner_steps = 5

:func:`load_scenario` reads the file, applies ``--set a.b=value`` overrides, expands
``${METAREC_DATA}`` and builds a :class:`Scenario`, checking every key, type and value on the
way (the engine is :mod:`metarec.schema`): an unknown key is an error with a close-match
suggestion; a wrong type or a bad value names the dotted key, the value, the rule and the
``--set`` fix. :func:`save_config` writes the resolved scenario as JSON beside a result, and
:func:`config_hash` names it.

The ``[algorithm]`` section is the engine's :class:`~metarec.algorithms.AlgorithmConfig` plus the
evaluation budget: :meth:`AlgorithmSection.engine` produces the engine's config, and every value
an engine algorithm would reject is rejected at load time.

>>> s = scenario_from_dict({"name": "demo", "algorithm": {"inner_steps": 3}})
>>> s.algorithm.inner_steps, s.protocol.n_support
(3, 10)
>>> from_dict(AlgorithmSection, {"inner_stpes": 3})
Traceback (most recent call last):
...
metarec._errors.ConfigError: unknown key 'inner_stpes' (did you mean 'inner_steps'?); valid keys: ...
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from metarec._errors import ConfigError, suggest
from metarec.algorithms.config import ALGORITHMS, AlgorithmConfig
from metarec.federated.config import FederatedConfig
from metarec.limits import check_device, check_seed, check_steps
from metarec.schema import (
    _NONE_WORDS,
    cli_literal,
    config_hash,
    expand_vars,
    from_dict,
    merge,
    parse_overrides,
    read_config_file,
    to_dict,
)

__all__ = [
    "AlgorithmSection",
    "BenchConfig",
    "DataConfig",
    "DataFile",
    "MetricsConfig",
    "ModelConfig",
    "ProtocolConfig",
    "Scenario",
    "SyntheticConfig",
    "TrainConfig",
    "config_hash",
    "expand_vars",
    "from_dict",
    "load_scenario",
    "merge",
    "parse_overrides",
    "save_config",
    "scenario_from_dict",
    "to_dict",
]


# --------------------------------------------------------------------------------------------
# The scenario schema
# --------------------------------------------------------------------------------------------

_COLUMN_ROLES = ("user", "item", "rating", "domain", "timestamp", "part")


def _check_at_least(obj: Any, low: float, *names: str, fix: str = "") -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < low:
            raise ConfigError(f"{name}={value!r}: must be >= {low}; set {name} >= {low}{fix}")


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
        path: file or folder to read; may use ``${METAREC_DATA}``. ``None`` for synthetic.
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

    def __post_init__(self) -> None:
        self._check_files()
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


@dataclass(frozen=True)
class ProtocolConfig:
    """How interactions become few-shot tasks and disjoint meta-train/val/test pools.

    Fields:
        unit: what one task is: a ``"user"``, a ``"domain"`` or a ``"cohort"`` of users.
        cohort_by: user column that groups users into cohorts (``unit = "cohort"``).
        split: how task units are split into pools: ``"random"``, ``"time"``, ``"melu"``
            (existing/new users x existing/new items), ``"cold_domain_users"`` (a ``beta``
            fraction of the target domain's users are held out cold) or ``"predefined"`` (the
            dataset's own ``train`` / ``valid`` / ``test`` parts, see ``data.files``).
        fractions: meta-train, validation and test fractions of task units (sum to 1).
        n_support: support interactions per task (the shots); ``None`` = all non-query
            interactions (MeLU's protocol).
        n_query: query interactions per task; ``None`` = all remaining.
        order: how a task's interactions are ordered before the support/query cut.
        min_interactions: task units with fewer interactions are dropped; for the
            ``"random"`` and ``"time"`` splits at least ``n_support + (n_query or 1)``.
        max_interactions: task units with more are dropped (``None`` = no limit).
        negatives: implicit feedback: sampled negatives per positive.
        new_item_year: ``"melu"`` split: items released from this year on are new.
        existing_user_fraction: ``"melu"`` split: fraction of users that are existing.
        beta: ``"cold_domain_users"`` split: cold fraction of the target domain's users.
        target_domain: the target domain (``None`` = the protocol picks; ``"predefined"``
            split: evaluate only that domain's held-out users).
        seed: seed of the split and the task sampler.
        val_fraction: validation share: of the cold users (``"cold_domain_users"``), of the
            existing users (``"melu"``), or of the training users when a ``"predefined"`` split
            ships no ``valid`` part.
    """

    unit: Literal["user", "domain", "cohort"] = "user"
    cohort_by: str | None = None
    split: Literal["random", "time", "melu", "cold_domain_users", "predefined"] = "random"
    fractions: tuple[float, ...] = (0.7, 0.1, 0.2)
    n_support: int | None = 10
    n_query: int | None = 10
    order: Literal["random", "time"] = "random"
    min_interactions: int = 20
    max_interactions: int | None = 100
    negatives: int = 0
    new_item_year: int = 1998
    existing_user_fraction: float = 0.8
    beta: float = 0.2
    target_domain: str | None = None
    seed: int = 0
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(
                f"val_fraction={self.val_fraction}: the validation share must lie in [0, 1); e.g. val_fraction = 0.1"
            )
        fractions = list(self.fractions)
        example = "e.g. fractions = [0.7, 0.1, 0.2]"
        if len(fractions) != 3:
            raise ConfigError(
                f"fractions={fractions}: expected 3 entries (meta-train, validation, test); "
                f"{example}"
            )
        if not all(0.0 <= f <= 1.0 for f in fractions):
            raise ConfigError(f"fractions={fractions}: each fraction must lie in [0, 1]; {example}")
        if abs(sum(fractions) - 1.0) > 1e-6:
            raise ConfigError(
                f"fractions={fractions}: the fractions must sum to 1 (they sum to "
                f"{sum(fractions):g}); {example}"
            )
        if self.n_support is not None and self.n_support < 1:
            raise ConfigError(
                f"n_support={self.n_support}: each task needs at least one support "
                f"interaction; set n_support >= 1"
            )
        if self.n_query is not None and self.n_query < 1:
            raise ConfigError(
                f"n_query={self.n_query}: each task needs at least one query interaction; "
                f'set n_query >= 1, or n_query = "none" for all remaining interactions'
            )
        need = (self.n_support or 1) + (self.n_query or 1)
        if self.split in ("random", "time") and self.min_interactions < need:
            parts = f"n_support + {'n_query' if self.n_query else '1'}"
            raise ConfigError(
                f"min_interactions={self.min_interactions}: a task unit needs {parts} = {need} "
                f"interactions to fill its support and query sets; set min_interactions >= "
                f"{need} or lower n_support/n_query"
            )
        if self.max_interactions is not None and self.max_interactions < self.min_interactions:
            raise ConfigError(
                f"max_interactions={self.max_interactions}: must be >= min_interactions="
                f'{self.min_interactions}; raise it or set max_interactions = "none"'
            )
        _check_at_least(self, 0, "negatives")
        if not 0.0 <= self.existing_user_fraction <= 1.0:
            raise ConfigError(
                f"existing_user_fraction={self.existing_user_fraction}: must lie in [0, 1]; "
                f"e.g. existing_user_fraction = 0.8"
            )
        if not 0.0 < self.beta < 1.0:
            raise ConfigError(
                f"beta={self.beta}: the cold fraction of target-domain users must lie strictly "
                f"between 0 and 1; e.g. beta = 0.2"
            )
        if self.unit == "cohort" and not self.cohort_by:
            raise ConfigError(
                f"unit='cohort' needs cohort_by, the user column that groups users into "
                f'cohorts (cohort_by={self.cohort_by!r}); set cohort_by = "age" or use '
                f'unit = "user"'
            )


@dataclass(frozen=True)
class MetricsConfig:
    """What is reported on query sets.

    Fields:
        names: metric names (``"mae"``, ``"rmse"``, ``"ndcg@10"``, ...), see ``metarec.metrics``.
        k: default cut-off for ranking metrics named without ``@k``.
    """

    names: tuple[str, ...] = ("mae", "rmse", "ndcg@10")
    k: int = 10

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "k")
        for name in self.names:
            _check_metric_name(name)


METRIC_NAMES: tuple[str, ...] = ("mae", "rmse", "auc", "logloss", "mrr", "ndcg", "hr")
"""Metric names ``metrics.names`` accepts (``logloss``: the item warm-up protocol); ``ndcg`` and ``hr`` take a cut-off (``ndcg@10``)."""
_AT_K = ("ndcg", "hr")


def _check_metric_name(name: str) -> None:
    base, at, k = name.partition("@")
    choices = [*METRIC_NAMES, *(f"{m}@10" for m in _AT_K)]
    if base not in METRIC_NAMES:
        raise ConfigError(
            f"names: unknown metric {name!r}{suggest(name, choices)}; metrics are {', '.join(METRIC_NAMES)} "
            '(ndcg and hr with a cut-off, e.g. "ndcg@10")'
        )
    if at and (base not in _AT_K or not k.isdigit() or int(k) < 1):
        what = (
            f"{base} takes no cut-off"
            if base not in _AT_K
            else f"cut-off {k!r} is not a positive integer"
        )
        raise ConfigError(
            f'names: metric {name!r}: {what}; e.g. names = ["mae", "ndcg@10", "hr@5"]'
        )


@dataclass(frozen=True)
class ModelConfig:
    """The recommender being meta-learned.

    Fields:
        name: model name (``"melu"``, ...), see ``metarec.models``.
        embedding_dim: size of the user/item/feature embeddings.
        hidden: widths of the hidden layers of the rating MLP.
        adapt: names of the parameters adapted in the inner loop (``None`` = the model's own
            choice).
        dropout: dropout probability in the MLP.
    """

    name: str = "melu"
    embedding_dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    adapt: tuple[str, ...] | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "embedding_dim")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(
                f"hidden={list(self.hidden)}: each layer width must be >= 1; e.g. hidden = [64, 64]"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout}: must lie in [0, 1); e.g. dropout = 0.1")


_ENGINE_FIELDS = tuple(
    f.name for f in dataclasses.fields(AlgorithmConfig) if f.name not in ("adapt", "loss")
)


@dataclass(frozen=True)
class AlgorithmSection:
    """The method and its engine settings (section ``[algorithm]``).

    Fields:
        name: the method: an engine algorithm (``"maml"``, ``"fomaml"``, ``"reptile"``,
            ``"metasgd"``, ``"anil"``, ``"global"``, ``"finetune"``; see ``metarec.algorithms``),
            ``"melu-ref"``, ``"popularity"``, a cross-domain method (``"emcdr"``,
            ``"ptupcdr+adapt"``, ...; settings in ``[crossdomain]``) or any name registered with
            ``metarec.register_method``.
        inner_steps, inner_lr, first_order, meta_batch, chunk_size, sort_tasks, encode_once,
            buckets, engine, per_step_lr, multi_step_loss: the engine's options, exactly
            :class:`~metarec.algorithms.AlgorithmConfig`'s (same names, defaults and rules).
        loss: ``"mse"``, ``"bce"`` or ``"bpr"``; ``None`` = ``"mse"`` for explicit feedback,
            ``"bce"`` for implicit.
        eval_steps: inner steps at evaluation (``None`` = ``inner_steps``; ``global``: 0).
        eval_lr: inner learning rate at evaluation (``None`` = ``inner_lr``).

    For an engine algorithm every value is checked at load time by building the engine's config,
    and a rejected value names its ``--set`` key.
    """

    name: str = "maml"
    inner_steps: int = 5
    inner_lr: float = 0.01
    first_order: bool = False
    meta_batch: int = 32
    chunk_size: int | None = None
    sort_tasks: bool = False
    encode_once: bool = True
    buckets: int = 2
    engine: Literal["auto", "analytic", "vmap"] = "auto"
    per_step_lr: bool = False
    multi_step_loss: bool = False
    loss: Literal["mse", "bce", "bpr"] | None = None
    eval_steps: int | None = None
    eval_lr: float | None = None

    def __post_init__(self) -> None:
        _check_at_least(self, 0, "eval_steps")
        for name in ("inner_steps", "eval_steps"):  # bound (metarec.limits.MAX_STEPS)
            if isinstance(getattr(self, name, None), int):
                check_steps(getattr(self, name), f"algorithm.{name}")
        if self.eval_lr is not None and not self.eval_lr > 0:
            raise ConfigError(
                f"eval_lr={self.eval_lr!r}: must be > 0; e.g. --set algorithm.eval_lr=0.01, or none"
            )
        if self.name in ALGORITHMS:
            self.engine_config("explicit")

    def engine_config(self, feedback: str, adapt: Sequence[str] | None = None) -> AlgorithmConfig:
        """The engine's :class:`~metarec.algorithms.AlgorithmConfig` of this section
        (``loss`` from ``feedback`` when unset; ``adapt``: the model's inner-loop patterns)."""
        loss = self.loss or ("mse" if feedback == "explicit" else "bce")
        kw = {k: getattr(self, k) for k in _ENGINE_FIELDS}
        try:
            return AlgorithmConfig(**kw, adapt=tuple(adapt) if adapt else None, loss=loss)
        except ConfigError as e:
            key = str(e).split("=", 1)[0].split(" ", 1)[0]
            if key in _ENGINE_FIELDS:
                good = {f.name: f.default for f in dataclasses.fields(AlgorithmConfig)}[key]
                raise ConfigError(f"{e}; e.g. --set algorithm.{key}={cli_literal(good)}") from None
            raise


@dataclass(frozen=True)
class TrainConfig:
    """The outer loop's budget and bookkeeping.

    Fields:
        steps: outer (meta) steps.
        outer_lr: learning rate of the outer optimizer.
        val_every: steps between validations.
        val_tasks: validation tasks per validation.
        patience: stop after this many validations without improvement (``None`` = never).
        grad_clip: clip the meta-gradient norm (``None`` = no clipping).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        bf16: autocast the forward pass to bfloat16 on CUDA.
        checkpoint_every: steps between checkpoints.
        seed: seed of initialisation and task sampling.
        progress: show a progress bar.
        loggers: extra logging callbacks beside ``metrics.jsonl``: ``"tensorboard"`` (writes
            ``RUN_DIR/tensorboard``; extra ``metarec[tensorboard]``), ``"mlflow"`` (extra
            ``metarec[mlflow]``).
    """

    steps: int = 300
    outer_lr: float = 1e-3
    val_every: int = 50
    val_tasks: int = 256
    patience: int | None = None
    grad_clip: float | None = 10.0
    device: str = "auto"
    bf16: bool = False
    checkpoint_every: int = 50
    seed: int = 0
    progress: bool = True
    loggers: tuple[Literal["tensorboard", "mlflow"], ...] = ()

    def __post_init__(self) -> None:
        _check_at_least(self, 0, "steps")
        _check_at_least(self, 1, "val_every", "val_tasks", "patience", "checkpoint_every")
        check_seed(self.seed)  # bound (metarec.limits)
        check_device(self.device)
        if self.outer_lr <= 0 or (self.grad_clip is not None and self.grad_clip <= 0):
            name = "outer_lr" if self.outer_lr <= 0 else "grad_clip"
            raise ConfigError(
                f"{name}={getattr(self, name)}: must be > 0; e.g. outer_lr = 0.001, grad_clip = 10.0"
            )


@dataclass(frozen=True)
class BenchConfig:
    """The benchmark grid run by ``metarec bench``.

    Fields:
        algorithms: algorithm names to compare.
        seeds: seeds per (algorithm, shots) cell.
        shots: support sizes (``protocol.n_support``) to evaluate.
        quick_steps: outer steps per run in a quick run (``None`` = ``train.steps``).
    """

    algorithms: tuple[str, ...] = ("global", "finetune", "maml", "fomaml", "reptile")
    seeds: int = 3
    shots: tuple[int, ...] = (1, 3, 5, 10)
    quick_steps: int | None = None

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "seeds", "quick_steps")
        if any(s < 1 for s in self.shots):
            raise ConfigError(
                f"shots={list(self.shots)}: each support size must be >= 1; e.g. shots = [1, 5, 10]"
            )


@dataclass(frozen=True)
class Scenario:
    """One experiment: data, protocol, metrics, model, algorithm, training and benchmark.

    Fields:
        name: the scenario's name (a file's stem when the file sets none).
        description: free text.
        data, protocol, metrics, model, algorithm, train, bench: the sections, each with
            documented defaults.
        crossdomain: settings of the cross-domain methods (``algorithm.name = "emcdr"``, ...):
            the fields of :class:`metarec.crossdomain.CrossDomainConfig`, checked key by key when
            the method is built (before any data is read); unset keys keep their defaults.
        federated: the ``[federated]`` section (``metarec federated``).
        learners: settings of the cold-start meta-learners, one table per method
            (``[learners.tanp]``, ``--set learners.mamo.inner_lr=0.01``): the fields of the
            method's settings dataclass (:mod:`metarec.learners`), checked when it is built.
    """

    name: str
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmSection = field(default_factory=AlgorithmSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    crossdomain: dict[str, Any] = field(default_factory=dict)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    learners: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def scenario_from_dict(d: Mapping[str, Any]) -> Scenario:
    """Build a :class:`Scenario` from a dict (a parsed TOML file or a saved JSON config)."""
    return from_dict(Scenario, d)


def load_scenario(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    data_root: str | os.PathLike[str] | None = None,
) -> Scenario:
    """Read a scenario file, apply ``--set`` overrides, expand ``${...}`` and validate it.

    Args:
        path: a ``.toml`` scenario, or a ``.json`` config written by :func:`save_config`.
        overrides: ``["algorithm.inner_steps=5", ...]``, applied in order after the file.
        data_root: value of ``${METAREC_DATA}``; defaults to the ``METAREC_DATA`` environment
            variable, which is needed only when a value uses it. Other ``${NAME}`` come from
            the environment.

    Raises:
        ConfigError: the file is missing (the message lists the ``.toml`` files beside it) or
            unparsable, an override is malformed, or a key, type or value is invalid.
    """
    path = Path(path)
    raw = read_config_file(path)
    data = merge(raw, parse_overrides(overrides))
    data.setdefault("name", path.stem)
    variables = dict(os.environ)
    if data_root is not None:
        variables["METAREC_DATA"] = os.fspath(data_root)
    try:
        return scenario_from_dict(expand_vars(data, variables))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_config(scenario: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved ``scenario`` (any config dataclass) to ``path`` as indented JSON.

    The file loads back with :func:`load_scenario`; returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(scenario), indent=2) + "\n", encoding="utf-8")
    return path
