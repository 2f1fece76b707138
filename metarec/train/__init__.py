"""Meta-training: the outer loop (:mod:`metarec.train.loop`), what a run is built from
(:mod:`metarec.train.setup`), its files (:mod:`metarec.train.files`), the hold on the run
directory (:mod:`metarec.train.session`), data-parallel training
(:mod:`metarec.train.distributed`) and the optional loggers (:mod:`metarec.train.loggers`).

Called, the package is the outer loop of the MAML family, :func:`metarec.train.loop.train`
(``mr.train(scenario, out)``; ``mr.train_method`` trains any method).

Example:
    >>> import tempfile, metarec as mr
    >>> sc = mr.load_scenario("tasks/synthetic-cold-start.toml", [  # a tiny MAML run
    ...     "data.synthetic.n_domains=3", "data.synthetic.n_users=60", "data.synthetic.n_items=80",
    ...     "model.embedding_dim=4", "model.hidden=[8]", "algorithm.inner_steps=1", "algorithm.meta_batch=4",
    ...     "train.steps=2", "train.val_every=2", "train.val_tasks=8", "train.progress=false"])
    >>> res = mr.train(sc, tempfile.mkdtemp() + "/run", evaluate_test=False)
    >>> res.steps, res.best_step, mr.load_run(res.run_dir).name
    (2, 2, 'maml')
"""

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
