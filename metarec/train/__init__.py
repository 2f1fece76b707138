"""Meta-training: the outer loop (:mod:`metarec.train.loop`), what a run is built from
(:mod:`metarec.train.setup`), its files (:mod:`metarec.train.files`), the hold on the run
directory (:mod:`metarec.train.session`), data-parallel training
(:mod:`metarec.train.distributed`) and the optional loggers (:mod:`metarec.train.loggers`)."""

import sys as _sys
import types as _types
from typing import Any as _Any


class _CallableStage(_types.ModuleType):
    """``metarec.train`` is both this stage's package and, called, the MAML family's outer loop
    (:func:`metarec.train.loop.train`), so ``mr.train(...)`` means one thing whatever was
    imported first."""

    def __call__(self, *args: _Any, **kwargs: _Any) -> _Any:
        from metarec.train.loop import train

        return train(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableStage
