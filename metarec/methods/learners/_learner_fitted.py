"""The fitted and adapted objects every cold-start learner shares (:class:`LearnerFitted`,
:class:`LearnerAdapted`) and their run loader; the meta-training loop is in
:mod:`metarec.methods.learners._loop`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import torch
from torch import nn

from metarec._errors import CheckpointError, ConfigError
from metarec.config import from_dict, to_dict
from metarec.config.objective import RankingObjective
from metarec.data.table import InteractionTable
from metarec.episodes.batch import EpisodeBatch, EpisodeSet
from metarec.episodes.relevance import NegativeCatalogue, rank_support
from metarec.methods.adapted import cat_tasks, index_tasks
from metarec.methods.base import FitData
from metarec.train.log import TrainingLog

__all__ = ["LearnerFitted", "LearnerAdapted", "learner_loader"]


class _LearnerAPI(Protocol):
    """The three methods of a learner (see the module docstring), for the type checker: the
    learner itself is held as an ``nn.Module``, whose attribute types do not include them."""

    def meta_loss(self, batch: EpisodeBatch) -> torch.Tensor: ...

    def adapt(self, support: EpisodeSet, steps: int | None, lr: float | None) -> Any: ...

    def score(self, context: Any, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...


def _api(learner: nn.Module) -> _LearnerAPI:
    return cast(_LearnerAPI, learner)


class LearnerAdapted:
    """A learner adapted to ``T`` tasks: ``score(users (T, N), items (T, N)) -> (T, N)``.

    ``score_kind``: ``"rank"`` for a learner trained to rank (its scores order items; they are
    not ratings), else ``"rating"``."""

    def __init__(
        self, learner: nn.Module, context: Any, n_tasks: int, score_kind: str = "rating"
    ) -> None:
        self._learner, self._context, self._n = learner, context, n_tasks
        self.score_kind = score_kind

    @property
    def n_tasks(self) -> int:
        return self._n

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if users.shape != items.shape or users.dim() != 2 or users.shape[0] != self._n:
            raise ConfigError(
                f"score(users {tuple(users.shape)}, items {tuple(items.shape)}): expected two (T, N) tensors with "
                f"T={self._n} (one row per adapted task)"
            )
        with torch.no_grad():
            return _api(self._learner).score(self._context, users, items)

    def select(self, rows: torch.Tensor) -> LearnerAdapted:
        """The tasks ``rows``: every tensor of the context with a task axis, indexed."""
        return LearnerAdapted(
            self._learner,
            index_tasks(self._context, rows, self._n),
            int(rows.shape[0]),
            self.score_kind,
        )

    @classmethod
    def concat(cls, parts: list[LearnerAdapted]) -> LearnerAdapted:
        """The tasks of ``parts`` (one learner), one after the other."""
        sizes = [p._n for p in parts]
        ctx = cat_tasks([p._context for p in parts], sizes)
        return cls(parts[0]._learner, ctx, sum(sizes), parts[0].score_kind)


class LearnerFitted:
    """A trained learner behind the :class:`~metarec.methods.Fitted` protocol.

    Attributes:
        name: the method name; table: the interaction table; learner: the module.
        settings: the resolved settings dataclass; log: what training did, as a dict (best
            step, history, pretraining, selections); training_log: the episodic loop's
            :class:`~metarec.train.log.TrainingLog`.
        ranking: the :class:`~metarec.config.objective.RankingObjective` of a learner trained to
            rank on ratings (``adapt`` then turns a support into a ranking set first,
            :func:`~metarec.episodes.relevance.rank_support`); ``None`` otherwise.
    """

    def __init__(
        self,
        name: str,
        table: InteractionTable,
        learner: nn.Module,
        settings: Any,
        log: dict[str, Any],
    ) -> None:
        self.name, self.table, self.learner, self.settings, self.log = (
            name,
            table,
            learner,
            settings,
            log,
        )
        self.k: int | None = None  # the scenario's shots (n_support), for protocols that need it
        self.training_log = TrainingLog()
        self.ranking: RankingObjective | None = None
        self._negatives: NegativeCatalogue | None = None

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> LearnerAdapted:
        if support.users.dim() != 2:
            raise ConfigError(
                f"support.users has shape {tuple(support.users.shape)}: adapt takes a batch of tasks, (T, N) tensors; "
                "for one task use support.select(slice(0, 1)) or unsqueeze(0)"
            )
        if steps is not None and steps < 0:
            raise ConfigError(f"steps={steps}: must be >= 0")
        dev = next(iter(self.learner.parameters())).device
        dtype = next(iter(self.learner.parameters())).dtype
        self.learner.eval()
        kind = "rating"
        if self.ranking is not None:
            if self._negatives is None:
                self._negatives = NegativeCatalogue.of(self.table)
            support, kind = rank_support(support, self.ranking, self._negatives), "rank"
        ctx = _api(self.learner).adapt(support.to(dev, dtype), steps, lr)
        return LearnerAdapted(self.learner, ctx, support.n_tasks, kind)

    def config(self) -> dict[str, Any]:
        """``{"method", "settings", "k", "shape"}``: the resolved settings, the scenario's shots
        and the learner's own sizes (``learner.shape()``, for modules whose architecture depends
        on more than the settings and the table); with the table, they rebuild the learner's
        modules (:func:`learner_loader`), and :meth:`load_state_dict` fills them."""
        shape = getattr(self.learner, "shape", None)
        out = {
            "method": self.name,
            "settings": to_dict(self.settings),
            "k": self.k,
            "shape": shape() if callable(shape) else {},
        }
        if self.ranking is not None:
            out["ranking"] = self.ranking.to_json()
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.learner.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        own = self.learner.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise CheckpointError(
                f"{self.name}: state_dict keys differ: missing {missing[:5]}, unexpected {extra[:5]}; load a state "
                f"saved by the same method and settings"
            )
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise CheckpointError(
                    f"{self.name}: state_dict[{k!r}] has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}; the "
                    "settings (dim, hidden, table) differ from the saved run's"
                )
        self.learner.load_state_dict(dict(state))


Build = Callable[[FitData, Any], nn.Module]
Shell = Callable[[InteractionTable, Any, Mapping[str, Any]], nn.Module]
"""``shell(table, settings, shape) -> learner``: an untrained learner of the saved architecture
(``shape`` holds ``"ranking"``, the saved :class:`~metarec.config.objective.RankingObjective`'s
fields, for a learner trained to rank)."""
Objective = Callable[[InteractionTable], "RankingObjective | None"]
"""``objective(table)``: the ranking objective a learner trains on ``table`` (``None``: its own)."""


def learner_loader(cls: type, shell: Shell) -> Callable[..., LearnerFitted]:
    """A :data:`~metarec.methods.FittedLoader` for learners whose settings dataclass is ``cls``:
    ``loader(name, config, table)`` rebuilds the settings from ``config["settings"]`` and the
    modules with ``shell(table, settings, config["shape"])`` (untrained; ``load_state_dict``
    restores every tensor: weights, buffers, memories).

    Raises:
        CheckpointError: the saved settings do not rebuild (a damaged manifest or one from
            another metarec version).
    """

    def load(name: str, config: Mapping[str, Any], table: InteractionTable) -> LearnerFitted:
        try:
            settings: Any = from_dict(cls, dict(config["settings"]), where=f"learners.{name}")
        except (ConfigError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"manifest.json: the saved settings of {name!r} do not rebuild ({e}); the run is damaged or "
                "from another metarec version; re-train it"
            ) from None
        ranking = _saved_objective(config.get("ranking"), name)
        shape = dict(config.get("shape") or {})
        if ranking is not None:
            shape["ranking"] = ranking
        # the shell's random initialisation is overwritten by load_state_dict: keep the global RNG
        with torch.random.fork_rng(devices=[]):
            learner = shell(table, settings, shape)
        learner.eval()
        fitted = LearnerFitted(name, table, learner, settings, {})
        fitted.ranking = ranking
        k = config.get("k")
        fitted.k = None if k is None else int(k)
        return fitted

    return load


def _saved_objective(raw: Any, name: str) -> RankingObjective | None:
    if raw is None:
        return None
    try:
        return RankingObjective(**dict(raw))
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"manifest.json: the saved ranking objective of {name!r} does not rebuild ({e}); the run is damaged "
            "or from another metarec version; re-train it"
        ) from None
