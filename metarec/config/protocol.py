"""The ``[protocol]`` and ``[metrics]`` sections of a scenario: how interactions become few-shot
tasks (:class:`ProtocolConfig`) and what is reported on them (:class:`MetricsConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from metarec._errors import ConfigError, suggest
from metarec.config._checks import _check_at_least

__all__ = ["METRIC_NAMES", "MetricsConfig", "ProtocolConfig"]


@dataclass(frozen=True)
class ProtocolConfig:
    """How interactions become few-shot tasks and disjoint meta-train/val/test pools.

    Fields:
        unit: what one task is: a ``"user"``, a ``"domain"`` or a ``"cohort"`` of users.
        cohort_by: user column that groups users into cohorts (``unit = "cohort"``).
        split: how task units are split into pools: ``"random"``, ``"time"``, ``"melu"``,
            ``"melu-time"`` (MeLU's states with MAMO's time-based user split: new users arrive
            after every existing one; :func:`metarec.episodes.splits.melu_time_split`)
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
        ranking: the catalogue ranking protocol (:mod:`metarec.episodes.ranking`): every
            evaluation task (meta-val and the test states) is cut once into a support pool of
            ``support_pool`` interactions (``k`` shots take its first ``k``) and a query of all
            its other interactions; its candidates are the whole catalogue of its state minus
            the support pool; the benchmark reports ``recall@20_all``, ``ndcg@10_all``,
            ``hr@10_all``, ``mrr_all``, ``coverage@10``, ``overlap@10``, ``pop@10`` and the
            same-named ``*_neg`` metrics against 100 sampled negatives per relevant item.
            ``n_query`` then sizes the meta-train tasks' queries only.
        relevance: ranking protocol, explicit feedback: a query item is relevant when its rating
            is at least this (``None``: ``low + 0.75 * (high - low)`` of the rating scale, 4 on
            1..5); implicit feedback: every positive is relevant (leave it ``None``).
        support_pool: ranking protocol: interactions per evaluation task set aside as its
            support pool (the largest number of shots); a unit needs ``support_pool + 1``
            interactions (``min_interactions``) so that the largest support leaves a query.
        ranking_negatives: ranking protocol: sampled negatives per relevant query item
            (``*_neg`` metrics, for comparison with papers that sample).
    """

    unit: Literal["user", "domain", "cohort"] = "user"
    cohort_by: str | None = None
    split: Literal["random", "time", "melu", "melu-time", "cold_domain_users", "predefined"] = (
        "random"
    )
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
    ranking: bool = False
    relevance: float | None = None
    support_pool: int = 20
    ranking_negatives: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(
                f"val_fraction={self.val_fraction}: the validation share must lie in [0, 1); e.g. "
                "val_fraction = 0.1"
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
        if self.ranking:
            self._check_ranking()
        elif self.relevance is not None:
            raise ConfigError(
                f"relevance={self.relevance}: the relevance threshold belongs to the catalogue "
                "ranking protocol; set protocol.ranking = true, or drop protocol.relevance"
            )
        if self.unit == "cohort" and not self.cohort_by:
            raise ConfigError(
                f"unit='cohort' needs cohort_by, the user column that groups users into "
                f'cohorts (cohort_by={self.cohort_by!r}); set cohort_by = "age" or use '
                f'unit = "user"'
            )

    def _check_ranking(self) -> None:
        """The ranking protocol's rules (see the ``ranking`` field)."""
        _check_at_least(self, 1, "support_pool", "ranking_negatives")
        if self.n_support is None:
            raise ConfigError(
                'n_support="none": the ranking protocol takes k shots from a pinned support pool; '
                f"set protocol.n_support to a number of shots <= support_pool={self.support_pool}, "
                "e.g. n_support = 5"
            )
        if self.n_support > self.support_pool:
            raise ConfigError(
                f"n_support={self.n_support}: more shots than the support pool holds (support_pool="
                f"{self.support_pool}); lower n_support or raise protocol.support_pool"
            )
        if self.split != "predefined" and self.min_interactions < self.support_pool + 1:
            raise ConfigError(
                f"min_interactions={self.min_interactions}: the ranking protocol needs "
                f"support_pool + 1 = {self.support_pool + 1} interactions per task unit, so that "
                f"the largest support ({self.support_pool} shots) leaves a query; set "
                f"min_interactions >= {self.support_pool + 1} or lower protocol.support_pool"
            )
        if self.unit != "user":
            raise ConfigError(
                f"unit={self.unit!r}: the ranking protocol ranks a catalogue for one user per "
                'task; set protocol.unit = "user"'
            )


@dataclass(frozen=True)
class MetricsConfig:
    """What is reported on query sets.

    Fields:
        names: the within-query metrics computed and reported (``"mae"``, ``"rmse"``,
            ``"ndcg@10"``, ...; empty: the standard set of the data's feedback kind), see
            :func:`metarec.metrics.evaluate.metric_selection`; the primary metric (``mae`` / ``auc``)
            is always among them, since it selects the best validation step.
        k: default cut-off for ranking metrics named without ``@k``.
    """

    names: tuple[str, ...] = ()
    k: int = 10

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "k")
        for name in self.names:
            _check_metric_name(name)


METRIC_NAMES: tuple[str, ...] = ("mae", "rmse", "auc", "logloss", "mrr", "ndcg", "hr")
"""Metric names ``metrics.names`` accepts (``logloss``: the item warm-up protocol); ``ndcg`` and
``hr`` take a cut-off (``ndcg@10``)."""
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
