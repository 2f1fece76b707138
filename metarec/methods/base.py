"""One interface for every method: fit on meta-train, adapt to a support set, score, save/load.

A *method* (MAML, Reptile, a cross-domain bridge, fine-tune transfer, an amortised neural
process, popularity, ...) is three small objects, in the spirit of optax's
``GradientTransformation`` (a few pure functions with explicit state):

* :class:`Method`: settings only. ``fit(data)`` trains on ``data.splits``' meta-train pool,
  selects on meta-val (never on a test pool) and returns a :class:`Fitted`.
* :class:`Fitted`: the trained, not yet adapted method. ``adapt(support)`` fits it to a batch of
  support sets (one task per row of an :class:`~metarec.episodes.batch.EpisodeSet`: one cold user,
  a batch of users, or a whole new domain as one task) and returns an :class:`Adapted`. Gradient
  methods run inner steps; amortised methods run one forward pass; zero-shot methods ignore the
  support. ``state_dict()`` / ``load_state_dict()`` hold every tensor it needs (weights and
  buffers; tensors only, no pickled objects) and ``config()`` the JSON settings that rebuild it.
* :class:`Adapted`: ``score(users, items)`` with ``(T, N)`` index tensors, one row per adapted
  task, returns ``(T, N)`` scores: predicted ratings (explicit feedback, unclipped) or logits
  (implicit feedback).

Everything here is in encoded indices (the :class:`~metarec.data.table.InteractionTable`'s);
raw ids are the serving layer's concern. Evaluation is therefore the same loop for every
method::

    fitted = method.fit(FitData(table, splits, seed=0))
    for batch in sampler.iterate():                        # EpisodeBatch: support + query
        scores = fitted.adapt(batch.support).score(batch.query.users, batch.query.items)

Methods are registered by name (:func:`register_method`) and built from a scenario section by
:func:`build_method`; the shipped methods are registered on first use of the registry
(:func:`metarec.methods.registry.ensure_registered`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import torch

from metarec._errors import ConfigError, suggest
from metarec.methods.registry import ensure_registered
from metarec.train.log import TrainingLog

if TYPE_CHECKING:  # imported for annotations only: no import cycle at run time
    from metarec.data.table import InteractionTable
    from metarec.episodes.batch import EpisodeSet
    from metarec.episodes.sampler import SamplerConfig
    from metarec.episodes.splits import MetaSplits

__all__ = [
    "FitData",
    "Method",
    "Fitted",
    "Adapted",
    "MethodFactory",
    "FittedLoader",
    "RunReader",
    "RunTrainer",
    "MethodTags",
    "MethodInfo",
    "Adaptation",
    "adaptation_for",
    "training_log_of",
    "fitted_place",
    "register_method",
    "unregister_method",
    "method_info",
    "build_method",
    "build_fitted",
    "method_names",
]


@dataclass(frozen=True)
class FitData:
    """What :meth:`Method.fit` may read.

    Attributes:
        table: the interaction table (encoders, side features, domains).
        splits: the meta-splits; a method trains on ``splits.pools[splits.train]`` and selects
            on ``splits.pools[splits.val]`` only.
        seed: seeds every initialisation, shuffle and sampled negative.
        device: where training runs.
        out: a run directory for checkpoints and logs, or ``None`` (in memory only).
        progress: show progress bars.
        memo: a dictionary the caller owns across several fits on the same data (a benchmark's,
            one per seed); methods that train alike under two names (a cross-domain ``m`` and
            ``m+adapt``) keep their shared fit in it. ``None``: nothing is shared.

    Example:
        >>> from metarec.data.synthetic_personal import make_taste_table
        >>> from metarec.episodes.splits import random_split
        >>> table = make_taste_table(n_users=30, n_items=20, per_user=8, seed=0)
        >>> data = FitData(table, random_split(table, "user", (0.6, 0.2, 0.2), n_query=3,
        ...                                    min_interactions=5), seed=1)
        >>> data.seed, data.splits.train
        (1, 'meta-train')
    """

    table: InteractionTable
    splits: MetaSplits
    seed: int = 0
    device: torch.device = torch.device("cpu")
    out: Path | None = None
    progress: bool = False
    memo: dict[Any, Any] | None = field(default=None, compare=False, repr=False)


@runtime_checkable
class Adapted(Protocol):
    """A method adapted to ``T`` support sets (tasks).

    ``score(users, items)`` takes ``(T, N)`` index tensors, row ``t`` scored by task ``t``, and
    returns ``(T, N)`` scores. A family's class may also offer ``select(rows)`` and
    ``concat(parts)`` (see :mod:`metarec.methods.adapted`), which the recommender uses to score
    one user's task without the others.

    Example:
        >>> import torch
        >>> from metarec.methods.popularity import PopularityAdapted
        >>> a = PopularityAdapted(torch.tensor([0.0, 2.0, 1.0]), tasks=2)
        >>> a.score(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[1, 2], [2, 1]]))
        tensor([[2., 1.],
                [1., 2.]])
    """

    @property
    def n_tasks(self) -> int:
        """``T``: the number of adapted tasks (rows of :meth:`score`'s inputs)."""
        ...

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(T, N)`` user and item indices -> ``(T, N)`` scores (ratings or logits)."""
        ...


@runtime_checkable
class Fitted(Protocol):
    """A trained method, ready to adapt.

    Attributes:
        name: the method's registered name; table: the data's encoders and side features.
        training_log: what training did (:class:`~metarec.train.log.TrainingLog`: steps, best
            step, early stop, the meta-val curve, seconds), saved with the run and read back.

    A family may also give its default adaptation budget as ``steps`` / ``lr`` attributes, the
    adaptation it uses per shots as ``adaptation(sampler) -> Adaptation``
    (:func:`adaptation_for`), and write its adapted tasks itself
    (:class:`~metarec.methods.adapted.SavesAdapted`).

    Example:
        >>> from metarec.data.synthetic_personal import make_taste_table
        >>> from metarec.episodes.splits import random_split
        >>> from metarec.episodes.sampler import TaskSampler, SamplerConfig
        >>> from metarec.methods.popularity import PopularityMethod
        >>> table = make_taste_table(n_users=30, n_items=20, per_user=8, seed=0)
        >>> splits = random_split(table, "user", (0.6, 0.2, 0.2), n_query=3, min_interactions=5)
        >>> fitted = PopularityMethod().fit(FitData(table, splits))
        >>> batch = TaskSampler(table, splits.pools["meta-test"], SamplerConfig(n_support=2, n_query=3),
        ...                     seed=0).sample(4)
        >>> fitted.adapt(batch.support).score(batch.query.users, batch.query.items).shape
        torch.Size([4, 3])
        >>> sorted(fitted.state_dict())
        ['scores']
    """

    name: str
    table: InteractionTable
    training_log: TrainingLog

    def adapt(
        self, support: EpisodeSet, *, steps: int | None = None, lr: float | None = None
    ) -> Adapted:
        """Adapt to each task (row) of ``support``; ``steps`` / ``lr`` override the defaults
        chosen on meta-val (methods without an inner loop ignore them)."""
        ...

    def config(self) -> dict[str, Any]:
        """JSON-ready settings that, with :meth:`state_dict`, rebuild this object."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor this object needs (weights, buffers, learned rates): tensors only."""
        ...

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`'s tensors (shapes checked, with a clear error)."""
        ...


@runtime_checkable
class Method(Protocol):
    """A method's settings; :meth:`fit` trains it.

    Example:
        >>> from metarec.data.synthetic_personal import make_taste_table
        >>> from metarec.episodes.splits import random_split
        >>> from metarec.methods.popularity import PopularityMethod
        >>> table = make_taste_table(n_users=30, n_items=20, per_user=8, seed=0)
        >>> splits = random_split(table, "user", (0.6, 0.2, 0.2), n_query=3, min_interactions=5)
        >>> method: Method = PopularityMethod()
        >>> fitted = method.fit(FitData(table, splits, seed=0))
        >>> fitted.name, fitted.training_log.steps
        ('popularity', 0)
    """

    name: str

    def fit(self, data: FitData) -> Fitted:
        """Train on meta-train, select on meta-val; return the trained method."""
        ...


@dataclass(frozen=True)
class Adaptation:
    """How a fitted method adapts at evaluation for one sampler setting: the ``steps`` / ``lr``
    to pass to :meth:`Fitted.adapt` and the ``report`` fields a benchmark row records
    (``eval_steps``, ``eval_lr``, ...)."""

    steps: int | None = None
    lr: float | None = None
    report: Mapping[str, Any] = field(default_factory=dict)


def adaptation_for(fitted: Fitted, sampler: SamplerConfig) -> Adaptation:
    """The :class:`Adaptation` ``fitted`` uses for tasks of ``sampler`` (its shots).

    A :class:`Fitted` may define ``adaptation(sampler) -> Adaptation`` (the MAML family: its
    evaluation steps and rate; a cross-domain method: the step size it chose on meta-val for
    those shots); without one, ``adapt``'s own defaults (``steps`` / ``lr`` left to the method).
    """
    own = getattr(fitted, "adaptation", None)
    if callable(own):
        return own(sampler)
    return Adaptation(report={"eval_steps": getattr(fitted, "steps", 0) or 0, "eval_lr": None})


def training_log_of(fitted: Fitted) -> TrainingLog:
    """``fitted.training_log`` (an empty log for a method registered without one)."""
    log = getattr(fitted, "training_log", None)
    return log if isinstance(log, TrainingLog) else TrainingLog()


def fitted_place(fitted: Fitted) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of a fitted method's tensors (CPU / float32 if none): where
    its support tensors go and the dtype of its scores."""
    for v in fitted.state_dict().values():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v.device, v.dtype
    return torch.device("cpu"), torch.float32


MethodFactory = Callable[..., Method]
"""``factory(scenario, **settings) -> Method``: builds a method from a resolved scenario."""

FittedLoader = Callable[[str, Mapping[str, Any], "InteractionTable"], Fitted]
"""``loader(name, config, table) -> Fitted``: an untrained shell with the architecture that
``Fitted.config()`` describes, to be filled by ``load_state_dict`` (how run directories load)."""

RunReader = Callable[..., tuple[Fitted, int]]
"""``reader(opened_run, which, device) -> (fitted, step)``: a family that keeps its own run
format (the MAML family's ``params`` / ``buffers`` / ``state`` checkpoints) reads it."""

RunTrainer = Callable[..., Any]
"""``trainer(scenario, out, *, resume, overwrite, table, splits, evaluate_test, loggers)
-> TrainResult``: a family whose outer loop writes (and resumes) its run directory itself
(``metrics.jsonl`` rows streamed to ``loggers`` as they are written)."""

Feedback = Literal["explicit", "implicit"]
Unit = Literal["user", "item", "domain"]


@dataclass(frozen=True)
class MethodTags:
    """What a method needs and offers, for generic code (train, bench, tests) to read instead of
    name lists.

    Attributes:
        feedback: the feedback kinds it trains on (``"explicit"`` ratings, ``"implicit"`` clicks).
        units: what one of its tasks is: a ``"user"`` (cold users), an ``"item"`` (cold items,
            the warm-up protocol) or a ``"domain"`` (a new domain as one task).
        source_history: it needs the users' history in a source domain (a two-domain table
            with a ``cold_domain_users`` or ``predefined`` split).
        item_features: it needs item side features.
        inner_loop: ``adapt``'s ``steps`` / ``lr`` change what it does.
        family: the family it belongs to (``"maml"``, ``"learner"``, ``"crossdomain"``,
            ``"baseline"``, or a user's own name); informative only.
        ranks: in a ranking scenario on explicit ratings whose ``algorithm.loss`` is a click
            loss (:mod:`metarec.config.objective`), it trains to rank (or ranks whatever the
            loss); a ``"learner"`` or ``"crossdomain"`` method without it keeps its rating
            objective there, and :func:`build_method` warns so.

    Example:
        >>> MethodTags(feedback=("implicit",), units=("item",)).units
        ('item',)
    """

    feedback: tuple[Feedback, ...] = ("explicit", "implicit")
    units: tuple[Unit, ...] = ("user",)
    source_history: bool = False
    item_features: bool = False
    inner_loop: bool = False
    family: str = "custom"
    ranks: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (
            ("feedback", ("explicit", "implicit")),
            ("units", ("user", "item", "domain")),
        ):
            got = tuple(getattr(self, name))
            bad = [v for v in got if v not in allowed]
            if bad or not got:
                raise ConfigError(
                    f"tags.{name}={got!r}: each entry is one of {allowed}; pass e.g. {name}={allowed[:1]!r}"
                )
            object.__setattr__(self, name, got)


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its ``factory``, ``loader``, :class:`MethodTags` and the family hooks
    ``reader`` (its own run format) and ``trainer`` (it writes its run directory itself)."""

    name: str
    factory: MethodFactory
    loader: FittedLoader | None = None
    tags: MethodTags = MethodTags()
    reader: RunReader | None = None
    trainer: RunTrainer | None = None


_REGISTRY: dict[str, MethodInfo] = {}


def register_method(
    name: str,
    factory: MethodFactory,
    *,
    loader: FittedLoader | None = None,
    tags: MethodTags | None = None,
    reader: RunReader | None = None,
    trainer: RunTrainer | None = None,
    replace: bool = False,
) -> None:
    """Make ``name`` buildable by :func:`build_method` (``metarec train``/``bench`` use it).

    Args:
        name: the method name (``algorithm.name`` in a scenario, a row label in the benchmark).
        factory: ``factory(scenario, **settings) -> Method``.
        loader: ``loader(name, config, table) -> Fitted`` rebuilding the trained object from a run
            directory (:func:`build_fitted`); without one the method trains and benchmarks, but
            ``metarec train`` cannot save it for ``metarec recommend``.
        tags: what the method needs and offers (:class:`MethodTags`; default: both feedback
            kinds, user tasks, no source history, no inner loop).
        reader: the family's reader of its own run format (:data:`RunReader`), when its runs
            are not the generic ``state_dict`` format.
        trainer: the family's run trainer (:data:`RunTrainer`), when its outer loop writes and
            resumes the run directory itself (``metarec train --resume``).
        replace: allow replacing an existing registration.

    Raises:
        ConfigError: ``name`` is already registered and ``replace`` is False.

    Example:
        >>> from metarec.methods.popularity import PopularityFitted, PopularityMethod
        >>> register_method("my-popularity", lambda scenario: PopularityMethod(),
        ...                 loader=PopularityFitted.build, tags=MethodTags(family="baseline"))
        >>> method_info("my-popularity").tags.family
        'baseline'
        >>> unregister_method("my-popularity")
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name={name!r}: a method name is a non-empty string")
    if tags is not None and not isinstance(tags, MethodTags):
        raise ConfigError(
            f"tags={tags!r}: pass a MethodTags(...), e.g. MethodTags(feedback=('explicit',))"
        )
    ensure_registered()  # the shipped methods first, so that a clash is reported here
    if name in _REGISTRY and not replace:
        raise ConfigError(f"method {name!r} is already registered; pass replace=True to replace it")
    _REGISTRY[name] = MethodInfo(name, factory, loader, tags or MethodTags(), reader, trainer)


def unregister_method(name: str) -> None:
    """Remove method ``name`` from the registry (a no-op when it is not registered)."""
    _REGISTRY.pop(name, None)


def method_info(name: str) -> MethodInfo:
    """The registration of method ``name``: factory, loader, :class:`MethodTags`, hooks.

    Raises:
        ConfigError: ``name`` is not registered (with the closest name).

    Example:
        >>> info = method_info("maml")
        >>> info.tags.family, info.tags.inner_loop, info.tags.units
        ('engine', True, ('user', 'domain'))
        >>> method_info("r2d2").tags.inner_loop   # an amortised learner: adapting is a forward pass
        False
        >>> method_info("mamll")
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: algorithm.name='mamll': unknown method; choose one of [...] (did you mean 'maml'?)
    """
    ensure_registered()
    if name not in _REGISTRY:
        names = method_names()
        raise ConfigError(
            f"algorithm.name={name!r}: unknown method; choose one of {list(names)}{suggest(name, names)}"
        )
    return _REGISTRY[name]


def build_fitted(name: str, config: Mapping[str, Any], table: InteractionTable) -> Fitted:
    """The untrained shell of method ``name`` for ``config`` (see :data:`FittedLoader`).

    Raises:
        ConfigError: ``name`` is unknown or was registered without a loader.
    """
    ensure_registered()
    info = _REGISTRY.get(name)
    if info is None or info.loader is None:
        why = "is not registered" if info is None else "was registered without a loader"
        raise ConfigError(
            f"method {name!r} {why}; a saved run of it cannot be loaded; register it with "
            "register_method(name, factory, loader=...) before loading"
        )
    return info.loader(name, config, table)


def method_names() -> tuple[str, ...]:
    """Every registered method name, sorted.

    Example:
        >>> names = method_names()
        >>> {"maml", "r2d2", "popularity"} <= set(names), names == tuple(sorted(names))
        (True, True)
        >>> cross = [n for n in names if method_info(n).tags.source_history]  # need a source domain
        >>> "emcdr" in cross, "maml" in cross
        (True, False)
    """
    ensure_registered()
    return tuple(sorted(_REGISTRY))


def build_method(name: str, *args: Any, **kwargs: Any) -> Method:
    """The registered method ``name``, built by its factory (``factory(scenario, **settings)``).

    Raises:
        ConfigError: ``name`` is not registered (with the closest name).

    Example:
        >>> from metarec.config import load_scenario
        >>> sc = load_scenario("tasks/synthetic-cold-start.toml")
        >>> build_method("r2d2", sc, rank=4).settings.rank
        4
        >>> build_method("r2d3", sc)
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: algorithm.name='r2d3': unknown method; choose one of [...] (did you mean 'r2d2'?)
    """
    info = method_info(name)
    method = info.factory(*args, **kwargs)
    scenario = args[0] if args else kwargs.get("scenario")
    tags = info.tags
    if (
        scenario is not None
        and tags.family in ("learner", "crossdomain")
        and not tags.ranks
        and _trains_to_rank(scenario)
    ):
        warnings.warn(
            f"{name}: algorithm.loss={scenario.algorithm.loss!r} trains to rank in this ranking scenario, but "
            f"{name} has no ranking objective; it trains on its own rating objective (its scores are "
            "predicted ratings); use a method that ranks (maml, reptile, r2d2, r2d2-source, mamo, elae, ...)",
            stacklevel=2,
        )
    return method


def _trains_to_rank(scenario: Any) -> bool:
    """Whether ``scenario`` is a ranking scenario on explicit ratings with a click loss."""
    p, a, d = (getattr(scenario, k, None) for k in ("protocol", "algorithm", "data"))
    if p is None or a is None or d is None or not p.ranking:
        return False
    feedback = d.synthetic.feedback if d.source == "synthetic" else d.feedback
    return feedback == "explicit" and a.loss in ("bce", "bpr", "softmax")
