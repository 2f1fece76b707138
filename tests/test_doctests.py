"""The docstring examples run: every ``>>>`` example of the package's modules is executed by
:mod:`doctest` (from the repository root, so scenario paths such as
``tasks/synthetic-cold-start.toml`` resolve), as ``make test`` runs the rest of the suite.
Examples that need a dataset or a long run say ``# doctest: +SKIP``."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import metarec

ROOT = Path(__file__).resolve().parent.parent


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(metarec.__path__, prefix="metarec."):
        spec = importlib.util.find_spec(info.name)
        origin = getattr(spec, "origin", None)
        if origin and origin.endswith(".py") and ">>>" in Path(origin).read_text():
            names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_modules_with_examples_are_found() -> None:
    assert {"metarec.methods.base", "metarec.recommend.load", "metarec.bench.run"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} example(s) of {name} failed"
