"""The ranking objective: explicit ratings trained as relevance labels with sampled negatives.

In a ranking scenario (``protocol.ranking = true``) on explicit ratings, ``algorithm.loss =
"bce"``, ``"bpr"`` or ``"softmax"`` trains a method to rank instead of to predict ratings: a
task's ratings become relevance labels (``rating >= protocol.relevance`` -> 1, else 0) and each
interaction of its support and query gets ``negatives`` sampled catalogue items the user never
interacted with (label 0), so the click losses apply (:mod:`metarec.algorithms.losses`). Adapting
to a cold user does the same to the user's support (labels, and negatives drawn uniformly from
the catalogue, never from the user's support), so training and adaptation see the same kind of
set. :class:`RankingObjective` holds these settings; the engine carries them as
:class:`~metarec.algorithms.AlgorithmConfig`'s ``relevance`` / ``negatives`` / ``proposal``.

Example:
    >>> RankingObjective("bpr", 4.0)
    RankingObjective(loss='bpr', relevance=4.0, negatives=4, proposal='uniform')
    >>> RankingObjective("softmax", 4.0).proposal      # logQ-corrected: popularity negatives
    'popularity'
    >>> RankingObjective("mse", 4.0)
    Traceback (most recent call last):
    ...
    metarec._errors.ConfigError: loss='mse': a ranking objective trains a click loss on relevance
    labels; choose one of ('bce', 'bpr', 'softmax')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from metarec._errors import ConfigError

__all__ = ["RANK_LOSSES", "RANKING_NEGATIVES", "PROPOSALS", "RankingObjective"]

RANK_LOSSES = ("bce", "bpr", "softmax")
"""The losses that train on 0/1 labels (clicks, or relevance labels of ratings)."""

RANKING_NEGATIVES = 4
"""Sampled negatives per interaction of a task trained to rank on ratings (support and query)."""

PROPOSALS = ("uniform", "popularity")
"""How training draws negatives: uniformly from the meta-train items of the task's domain, or in
proportion to their meta-train interaction counts (the distribution of in-batch negatives, which
the ``softmax`` loss's logQ correction removes)."""


@dataclass(frozen=True)
class RankingObjective:
    """Ratings trained as relevance labels (see the module docstring).

    Fields:
        loss: ``"bce"``, ``"bpr"`` or ``"softmax"`` (:data:`RANK_LOSSES`).
        relevance: a rating at least this is relevant (label 1).
        negatives: sampled negatives per interaction (:data:`RANKING_NEGATIVES`), in training
            and at adaptation.
        proposal: how training draws them (:data:`PROPOSALS`); ``None``: ``"popularity"`` for
            ``softmax`` (its logQ correction is what removes the popularity bias of such
            negatives), ``"uniform"`` for the uncorrected ``bce`` / ``bpr``. Adaptation always
            draws uniformly: it needs no statistic of the training data.
    """

    loss: str
    relevance: float
    negatives: int = RANKING_NEGATIVES
    proposal: str | None = None

    def __post_init__(self) -> None:
        if self.loss not in RANK_LOSSES:
            raise ConfigError(
                f"loss={self.loss!r}: a ranking objective trains a click loss on relevance labels; "
                f"choose one of {RANK_LOSSES}"
            )
        if not isinstance(self.relevance, (int, float)) or not math.isfinite(self.relevance):
            raise ConfigError(
                f"relevance={self.relevance!r}: the relevance threshold must be a finite rating, "
                "e.g. 4.0"
            )
        if (
            isinstance(self.negatives, bool)
            or not isinstance(self.negatives, int)
            or self.negatives < 0
        ):
            raise ConfigError(
                f"negatives={self.negatives!r}: sampled negatives per interaction must be an int "
                f">= 0; e.g. negatives={RANKING_NEGATIVES}"
            )
        if self.proposal is None:
            object.__setattr__(
                self, "proposal", "popularity" if self.loss == "softmax" else "uniform"
            )
        if self.proposal not in PROPOSALS:
            raise ConfigError(
                f"proposal={self.proposal!r}: negatives are drawn 'uniform' or by 'popularity'; "
                f"choose one of {PROPOSALS}"
            )

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object (a fitted method's manifest keeps them)."""
        return {
            "loss": self.loss,
            "relevance": float(self.relevance),
            "negatives": self.negatives,
            "proposal": self.proposal,
        }
