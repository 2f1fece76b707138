"""The ``[warmup]`` section of a scenario: the item warm-up protocol's settings
(:class:`WarmupConfig`; the protocol itself is :mod:`metarec.episodes.warmup`)."""

from __future__ import annotations

from dataclasses import dataclass

from metarec._errors import ConfigError

__all__ = ["WarmupConfig"]


@dataclass(frozen=True)
class WarmupConfig:
    """The item warm-up protocol (section ``[warmup]`` of a scenario).

    Fields:
        k: interactions per warm-up phase.
        min_test: least test interactions of a new item.
        max_test: most test interactions of a new item (the earliest are kept).
        threshold: a rating ``>= threshold`` is a click (label 1).
        new_fraction: fraction of eligible items that are new.
        val_fraction: fraction of new items used for meta-val (the rest is meta-test).
        seed: seed of the item split.
    """

    k: int = 20
    min_test: int = 20
    max_test: int = 200
    threshold: float = 4.0
    new_fraction: float = 0.3
    val_fraction: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.min_test < 1 or self.max_test < self.min_test:
            raise ConfigError(
                f"k={self.k}, min_test={self.min_test}, max_test={self.max_test}: need k >= 1, min_test >= 1 and "
                "max_test >= min_test; e.g. k=20, min_test=20, max_test=200"
            )
        for name in ("new_fraction", "val_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(
                    f"{name}={getattr(self, name)}: must lie strictly between 0 and 1; e.g. 0.3"
                )
