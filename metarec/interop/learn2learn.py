"""learn2learn interop: metarec tasks and the fast/slow parameter split with
``learn2learn.algorithms.MAML``.

learn2learn is optional and imported only inside :func:`l2l_maml` / :func:`import_l2l_maml`.
On Python 3.11+ ``pip install learn2learn`` fails (its C extensions and its ``qpth``
requirement do not build); ``benchmarks/install_learn2learn.sh`` (``make learn2learn``) installs
the pure-Python part the interop uses in seconds, and :func:`import_l2l_maml` imports
``learn2learn.algorithms`` without the package's ``__init__`` (which needs gym, torchvision and
the compiled extensions). The metarec side is plain torch:

* :func:`fast_parameters`: the model's inner-loop parameters (its adapt patterns); freeze the
  others (``requires_grad=False``) so ``MAML.adapt`` updates the fast ones only, as metarec's
  inner loop does;
* :func:`maml_step`: one task's support loss and query loss for a learner returned by
  ``maml.clone()``, from an :class:`~metarec.episodes.batch.EpisodeBatch` row.

Example (with learn2learn installed)::

    maml = l2l_maml(model, lr=0.05)                       # learn2learn.algorithms.MAML
    for t in range(batch.n_tasks):
        learner = maml.clone()
        support_loss, query_loss = maml_step(learner, batch, t, steps=3)
        query_loss.backward()
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.algorithms.losses import LOSSES
from metarec.episodes.batch import EpisodeBatch
from metarec.models.base import model_adapt_patterns, split_params

__all__ = ["fast_parameters", "import_l2l_maml", "l2l_maml", "maml_step"]

_HOW = (
    "install it with benchmarks/install_learn2learn.sh (make learn2learn: the pure-Python part, "
    "seconds; pip install learn2learn does not build on Python 3.11+)"
)


def fast_parameters(model: nn.Module, *, freeze_slow: bool = True) -> dict[str, nn.Parameter]:
    """The model's inner-loop parameters ``{name: parameter}`` (its adapt patterns; every
    parameter of a plain ``nn.Module``); with ``freeze_slow`` the others get ``requires_grad=False``."""
    fast, slow = split_params(model, model_adapt_patterns(model))
    if freeze_slow:
        for p in slow.values():
            p.requires_grad_(False)
    return fast  # type: ignore[return-value]


def import_l2l_maml() -> Any:
    """The class ``learn2learn.algorithms.MAML``, imported without ``learn2learn/__init__.py``.

    A full ``import learn2learn`` runs its package ``__init__``, which imports
    ``learn2learn.vision`` (torchvision), ``learn2learn.gym`` (gym) and ``learn2learn.data``
    (compiled extensions); none is needed by MAML, and on Python 3.11+ they do not install. When
    the full import fails, a bare package module named ``learn2learn`` (``__path__`` = the
    installed folder) is placed in ``sys.modules`` so that ``learn2learn.algorithms`` (torch,
    ``learn2learn.utils`` and ``learn2learn.nn`` only) imports on its own. When the full import
    works, it is used as is.

    Raises:
        ImportError: learn2learn is not installed, or its ``algorithms`` part does not import
            (the message says how to install it).
    """
    done = sys.modules.get("learn2learn.algorithms.maml")
    if done is not None:
        return done.MAML
    spec = importlib.util.find_spec("learn2learn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"l2l_maml needs the 'learn2learn' package, which is not installed; {_HOW}"
        )
    try:
        import learn2learn  # noqa: F401  (the whole package, when its optional parts are there)
    except Exception:  # ImportError of gym / torchvision / the extensions, or their own errors
        for name in [m for m in sys.modules if m == "learn2learn" or m.startswith("learn2learn.")]:
            del sys.modules[name]  # the half-imported package
        stub = types.ModuleType("learn2learn")
        stub.__path__ = list(spec.submodule_search_locations)  # a package whose __init__ never runs
        sys.modules["learn2learn"] = stub
    try:
        return importlib.import_module("learn2learn.algorithms.maml").MAML
    except ImportError as e:
        raise ImportError(
            f"l2l_maml: learn2learn.algorithms does not import ({e}); {_HOW}"
        ) from None


def l2l_maml(
    model: nn.Module, lr: float, *, first_order: bool = False, freeze_slow: bool = True
) -> Any:
    """``learn2learn.algorithms.MAML(model, lr, first_order)`` with the slow weights frozen.

    Raises:
        ImportError: learn2learn is not installed (the message says how to install it).
    """
    maml = import_l2l_maml()
    fast_parameters(model, freeze_slow=freeze_slow)
    # allow_nograd: the frozen slow weights get no inner-loop gradient (learn2learn would refuse them)
    return maml(model, lr=lr, first_order=first_order, allow_unused=True, allow_nograd=True)


def maml_step(
    learner: Any, batch: EpisodeBatch, task: int, *, steps: int = 1, loss: str = "mse"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` calls of ``learner.adapt(support_loss)`` on task ``task`` of ``batch``, then
    the query loss: ``(last support loss, query loss)``. ``learner`` is anything with
    ``adapt(loss)`` and ``__call__(users, items)`` (a ``MAML.clone()``)."""
    if not 0 <= task < batch.n_tasks:
        raise ConfigError(
            f"task={task!r}: the batch has {batch.n_tasks} tasks; pass 0 <= task < {batch.n_tasks}"
        )
    fn = LOSSES[loss]
    s, q = batch.support.select(slice(task, task + 1)), batch.query.select(slice(task, task + 1))
    sup = fn(learner(s.users, s.items), s.targets, s.mask).sum()
    for _ in range(steps):
        learner.adapt(sup)
        sup = fn(learner(s.users, s.items), s.targets, s.mask).sum()
    return sup, fn(learner(q.users, q.items), q.targets, q.mask).sum()
