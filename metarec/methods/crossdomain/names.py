"""The cross-domain methods' names: the base methods and their ``"+adapt"`` variants."""

from __future__ import annotations

from metarec._errors import ConfigError, suggest

__all__ = ["METHODS", "parse_method"]

METHODS = (
    "no-transfer",
    "emcdr",
    "ptupcdr",
    "finetune-transfer",
    "joint",
    "da-mmd",
    "da-coral",
    "da-kl",
    "da-swd",
    "dann",
    "lightgcn",
    "bitgcf",
)
"""Base method names; each also runs as ``"<name>+adapt"``."""


def parse_method(method: str) -> tuple[str, bool]:
    """``"emcdr+adapt"`` -> ``("emcdr", True)``; unknown names raise with a suggestion."""
    base, plus, suffix = str(method).partition("+")
    if base not in METHODS or (plus and suffix != "adapt"):
        names = [*METHODS, *(f"{m}+adapt" for m in METHODS)]
        raise ConfigError(
            f"method={method!r}: unknown cross-domain method; choose one of {list(METHODS)}, each optionally "
            f"with '+adapt' (few-shot adaptation on the support){suggest(str(method), names)}"
        )
    return base, bool(plus)
