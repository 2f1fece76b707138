"""Optional logging callbacks beside ``metrics.jsonl``: TensorBoard and MLflow writers.

Every training row (``{"step", "loss", "tasks_per_s", "val": {...}}``) that
:func:`metarec.train.loop.train` appends to ``metrics.jsonl`` is also passed to each logger's
``log(row)``; ``close()`` runs when training ends. A logger is any object with those two methods
(:class:`Logger`); :func:`make_loggers` builds the named ones (``train.loggers`` in a scenario).
The writers import their libraries lazily, with an error that names the extra to install.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from metarec._errors import ConfigError, require_extra, suggest

__all__ = [
    "Logger",
    "TensorBoardLogger",
    "MLflowLogger",
    "LOGGERS",
    "check_loggers",
    "make_loggers",
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
        else:
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
