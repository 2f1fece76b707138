"""The model contract: a forward pass over index tensors, and which parameters adapt.

Every metarec model is a plain :class:`torch.nn.Module` with

* ``forward(users, items)``: ``int64 (..., N)`` user and item indices to ``(..., N)``
  predictions (a rating for explicit feedback, a logit for implicit feedback). Side features
  live in the model as buffers looked up by index, so a batch carries indices only;
* ``adapt``: fnmatch-style patterns over parameter names (``"decision.*"``) naming the
  parameters the inner loop adapts ("fast" weights); every other parameter is meta-learned
  only ("slow" weights);
* ``head_patterns``: the patterns of the output layer (what ANIL adapts).

Optionally, a model splits its forward pass into a feature encoder and a decision part,
``forward(users, items) == decide(encode(users, items))``, and declares in ``encode_patterns``
the parameters ``encode`` reads (``None``: no split). When no inner-loop parameter matches
``encode_patterns``, the engine computes ``encode`` once per task (from the meta-parameters,
inside the differentiated function, so meta-gradients still reach the encoder) and runs the
inner loop over ``decide`` alone (:func:`encoder_is_fixed`, :func:`staged_call`).

:func:`split_params` turns a model (or a parameter dict with the model's names) into the
``(fast, slow)`` dicts the functional algorithms consume.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fnmatch import fnmatchcase

import torch
from torch import nn
from torch.func import functional_call

from metarec._errors import ConfigError, suggest

__all__ = [
    "RecModel",
    "split_params",
    "check_patterns",
    "seeded",
    "encoder_is_fixed",
    "staged_call",
    "model_adapt_patterns",
    "ALL_PARAMETERS",
]

ALL_PARAMETERS = ("*",)
"""The inner-loop patterns of a plain ``nn.Module`` that declares none: every parameter adapts."""


def model_adapt_patterns(model: nn.Module) -> tuple[str, ...]:
    """The inner-loop patterns a model declares: ``model.adapt_patterns`` (or its older name
    ``model.adapt``); a plain ``nn.Module`` with neither adapts every parameter
    (:data:`ALL_PARAMETERS`), as in MAML's original formulation."""
    pats = getattr(model, "adapt_patterns", None)
    if pats is None:
        pats = getattr(model, "adapt", None)
    if pats is None or callable(pats):
        return ALL_PARAMETERS
    return tuple(pats)


class RecModel(nn.Module):
    """Base class of metarec's models (see the module docstring for the contract).

    Args:
        adapt: inner-loop patterns overriding the class default ``adapt``.

    Example:
        A model of per-user and per-item biases whose inner loop adapts the user bias only:

        >>> class Biases(RecModel):
        ...     adapt = ("user_bias",)
        ...     def __init__(self, n_users, n_items):
        ...         super().__init__()
        ...         self.user_bias = nn.Parameter(torch.zeros(n_users))
        ...         self.item_bias = nn.Parameter(torch.zeros(n_items))
        ...     def forward(self, users, items):  # (..., N) indices -> (..., N) predictions
        ...         return self.user_bias[users] + self.item_bias[items]
        >>> model = Biases(n_users=5, n_items=7)
        >>> model(torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5, 6]])).shape
        torch.Size([1, 3])
        >>> fast, slow = split_params(model)
        >>> list(fast), list(slow)
        (['user_bias'], ['item_bias'])
    """

    adapt: tuple[str, ...] = ()
    head_patterns: tuple[str, ...] = ()
    encode_patterns: tuple[str, ...] | None = None
    serving_kernel: str | None = None
    """The batched adapt-and-score kernel the server may use for this model (a name of
    :data:`metarec.serve.kernels.KERNELS`), or ``None`` (the library's path)."""

    def __init__(self, adapt: Sequence[str] | None = None) -> None:
        super().__init__()
        if adapt is not None:
            self.adapt = check_patterns(adapt, "adapt")

    @property
    def adapt_patterns(self) -> tuple[str, ...]:
        """The inner-loop ("fast") parameter patterns (the class attribute ``adapt``)."""
        return tuple(self.adapt)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def encode(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Per-interaction representation ``(..., N) x2 -> (..., N, F)`` (models that set
        ``encode_patterns``)."""
        raise NotImplementedError

    def decide(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Predictions from :meth:`encode`'s output: ``(..., N, F) -> (..., N)``."""
        raise NotImplementedError


def encoder_is_fixed(model: nn.Module, fast: Iterable[str]) -> bool:
    """Whether ``model`` splits into ``encode``/``decide`` and no name in ``fast`` (the
    inner-loop parameters) is read by ``encode``: then ``encode`` can run once per task."""
    pats = getattr(model, "encode_patterns", None)
    if pats is None:
        return False
    return not any(fnmatchcase(n, p) for n in fast for p in pats)


class _Stage(nn.Module):
    """``forward(*args) = model.<method>(*args)``, so :func:`functional_call` can run one stage
    (parameter names gain the prefix ``m.``)."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.m = model
        self.method = method

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return getattr(self.m, self.method)(*args)


def staged_call(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    method: str,
    args: tuple[torch.Tensor, ...],
) -> torch.Tensor:
    """``model.<method>(*args)`` (``"encode"`` or ``"decide"``) with ``params`` in place of the
    module's parameters of those names (as :func:`torch.func.functional_call` for ``forward``)."""
    stage = _Stage(model, method)
    return functional_call(stage, {f"m.{k}": v for k, v in params.items()}, args)


def check_patterns(patterns: Sequence[str] | str, arg: str = "adapt") -> tuple[str, ...]:
    """Validate a tuple of fnmatch patterns (a bare string is the common mistake)."""
    if isinstance(patterns, str):
        raise ConfigError(
            f"{arg}={patterns!r}: expected a tuple of name patterns, got one string; "
            f"pass {arg}=({patterns!r},)"
        )
    out = tuple(patterns)
    if not out:
        raise ConfigError(
            f"{arg}=(): no parameter would adapt in the inner loop; pass at least one pattern, "
            f"e.g. {arg}=('head.*',)"
        )
    bad = [p for p in out if not isinstance(p, str) or not p]
    if bad:
        raise ConfigError(
            f"{arg}: pattern {bad[0]!r} is not a non-empty string; pass names like 'head.*'"
        )
    return out


def split_params(
    model: nn.Module,
    patterns: Sequence[str] | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split parameters into inner-loop ("fast") and meta-only ("slow") dicts.

    Args:
        model: the model; its ``adapt`` patterns are the default.
        patterns: fnmatch patterns over parameter names (``*`` also matches dots).
        params: a dict with the model's parameter names (default: ``model.named_parameters()``;
            the tensors are returned as given, not copied).

    Returns:
        ``(fast, slow)``: disjoint dicts covering ``params``, in its order.

    Raises:
        ConfigError: a pattern matches no parameter (the message lists the names and a close
            match), or the patterns are empty / a bare string.

    Example:
        >>> fast, slow = split_params(nn.Linear(2, 1), ("bias",))
        >>> list(fast), list(slow)
        (['bias'], ['weight'])
        >>> split_params(nn.Linear(2, 1), ("head.*",))
        Traceback (most recent call last):
        ...
        metarec._errors.ConfigError: adapt pattern 'head.*' matches no parameter of Linear;
        parameters are ['weight', 'bias']; ...
    """
    pats = check_patterns(model_adapt_patterns(model) if patterns is None else patterns)
    named = dict(model.named_parameters()) if params is None else dict(params)
    names = list(named)
    for p in pats:
        if not any(fnmatchcase(n, p) for n in names):
            prefixes = sorted({n.rsplit(".", 1)[0] + ".*" for n in names if "." in n})
            raise ConfigError(
                f"adapt pattern {p!r} matches no parameter of {type(model).__name__}; "
                f"parameters are {names}{suggest(p, names + prefixes)}; fix the pattern "
                f"(fnmatch syntax, e.g. 'head.*')"
            )
    fast = {n: t for n, t in named.items() if any(fnmatchcase(n, p) for p in pats)}
    slow = {n: t for n, t in named.items() if n not in fast}
    return fast, slow


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Initialise layers from ``seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
