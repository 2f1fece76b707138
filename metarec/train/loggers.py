"""Logging callbacks of a training run: ``metrics.jsonl`` (:class:`JsonlLogger`), TensorBoard
and MLflow writers.

Every training row (``{"step", "loss", "tasks_per_s", "val": {...}}``) of the outer loop
(:func:`metarec.train.outer.outer_loop`) is passed to each logger's ``log(row)``; ``close()`` runs
when training ends. A logger is any object with those two methods (:class:`Logger`);
:func:`make_loggers` builds the named ones (``train.loggers`` in a scenario), for every method:
the MAML family's loop streams its rows to them, ``metarec train`` hands them every other
method's :class:`~metarec.train.log.TrainingLog` rows when it has fitted (:func:`replay`). The
writers import their libraries lazily, with an error that names the extra to install.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from metarec._errors import ConfigError, require_extra, suggest

__all__ = [
    "Logger",
    "JsonlLogger",
    "TensorBoardLogger",
    "MLflowLogger",
    "LOGGERS",
    "check_loggers",
    "make_loggers",
    "replay",
    "scalars",
]

LOGGERS = ("tensorboard", "mlflow")


class Logger(Protocol):
    def log(self, row: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric entries of a ``metrics.jsonl`` row, flattened: ``{"loss": .., "val/mae": ..}``
    (``step`` excluded)."""
    out: dict[str, float] = {}
    for k, v in row.items():
        if k == "step":
            continue
        if isinstance(v, Mapping):
            out.update(scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


class JsonlLogger:
    """Appends every row to a JSON-lines file (a run's ``metrics.jsonl``), flushed row by row."""

    def __init__(self, path: str | Path) -> None:
        self._file = Path(path).open("a")

    def log(self, row: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def replay(rows: Iterable[Mapping[str, Any]], loggers: Sequence[Logger]) -> None:
    """Hand ``rows`` (a finished :class:`~metarec.train.log.TrainingLog`'s) to ``loggers``, in
    order, then close them."""
    try:
        for row in rows:
            for lg in loggers:
                lg.log(row)
    finally:
        for lg in loggers:
            lg.close()


class TensorBoardLogger:
    """Scalars to ``log_dir`` with ``torch.utils.tensorboard`` (``pip install "metarec[tensorboard]"``)."""

    def __init__(self, log_dir: str | Path) -> None:
        tb = require_extra("torch.utils.tensorboard", "tensorboard", "TensorBoardLogger")
        self.writer = tb.SummaryWriter(str(log_dir))

    def log(self, row: Mapping[str, Any]) -> None:
        for k, v in scalars(row).items():
            self.writer.add_scalar(k, v, int(row["step"]))

    def close(self) -> None:
        self.writer.close()


class MLflowLogger:
    """Metrics to the active (or a new) MLflow run (``pip install "metarec[mlflow]"``)."""

    def __init__(self, run_name: str | None = None) -> None:
        mlflow = require_extra("mlflow", "mlflow", "MLflowLogger")
        self.mlflow = mlflow
        self._own = mlflow.active_run() is None
        if self._own:
            mlflow.start_run(run_name=run_name)

    def log(self, row: Mapping[str, Any]) -> None:
        self.mlflow.log_metrics(
            {k.replace("@", "_at_"): v for k, v in scalars(row).items()}, step=int(row["step"])
        )

    def close(self) -> None:
        if self._own:
            self.mlflow.end_run()


def check_loggers(names: Iterable[str]) -> None:
    """Check the names and the extras of ``train.loggers`` before anything is written.

    Raises:
        ConfigError: an unknown name (with the closest one).
        MissingExtra: a logger whose library is not installed (one line naming the extra).
    """
    for n in names:
        if n == "tensorboard":
            require_extra(
                "torch.utils.tensorboard", "tensorboard", "train.loggers = ['tensorboard']"
            )
        elif n == "mlflow":
            require_extra("mlflow", "mlflow", "train.loggers = ['mlflow']")
        elif n not in LOGGERS:
            raise ConfigError(
                f"train.loggers: unknown logger {n!r}{suggest(n, LOGGERS)}; choose from {list(LOGGERS)}"
            )


def make_loggers(names: Iterable[str], run_dir: str | Path) -> list[Logger]:
    """Loggers by name: ``"tensorboard"`` (writes ``RUN_DIR/tensorboard``), ``"mlflow"``.

    Raises:
        ConfigError: an unknown name (with the closest one).
    """
    out: list[Logger] = []
    for n in names:
        if n == "tensorboard":
            out.append(TensorBoardLogger(Path(run_dir) / "tensorboard"))
        elif n == "mlflow":
            out.append(MLflowLogger(Path(run_dir).name))
        else:
            raise ConfigError(
                f"train.loggers: unknown logger {n!r}{suggest(n, LOGGERS)}; choose from {list(LOGGERS)}"
            )
    return out
