"""The docstring examples run: every ``>>>`` example of the package's modules is executed by
:mod:`doctest` (from the repository root, so scenario paths such as
``tasks/synthetic-cold-start.toml`` resolve), as ``make test`` runs the rest of the suite.
Examples that need a dataset or a long run say ``# doctest: +SKIP``; every name of
``metarec.__all__`` has at least one example that runs."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import tempfile
from pathlib import Path

import pytest

import metarec

ROOT = Path(__file__).resolve().parent.parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(metarec.__path__, prefix="metarec."):
        spec = importlib.util.find_spec(info.name)
        origin = getattr(spec, "origin", None)
        if origin and origin.endswith(".py") and ">>>" in Path(origin).read_text():
            names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def _defining_module(name: str) -> str:
    """The module whose doctests hold the example of ``metarec.<name>`` (where it is defined;
    ``metarec.train`` is the callable stage package, documented in its ``__init__``)."""
    obj = getattr(metarec, name)
    return obj.__name__ if inspect.ismodule(obj) else obj.__module__


def _running_examples(obj: object) -> list[doctest.Example]:
    examples = doctest.DocTestParser().get_examples(inspect.getdoc(obj) or "")
    return [e for e in examples if not e.options.get(doctest.SKIP)]


def test_the_modules_with_examples_are_found() -> None:
    assert {"metarec.methods.base", "metarec.recommend.load", "metarec.bench.run"} <= set(MODULES)


@pytest.mark.parametrize("name", metarec.__all__)
def test_every_public_name_has_an_example_that_runs(name) -> None:
    """A public name's docstring shows at least one ``>>>`` example that is not skipped, and
    its defining module is among those whose examples this file runs."""
    obj = getattr(metarec, name)
    assert _running_examples(obj), (
        f"metarec.{name}: its docstring has no runnable '>>>' example; add an 'Example:' section "
        f"to it in {_defining_module(name)}"
    )
    assert _defining_module(name) in MODULES


def test_a_failing_example_fails_the_run(monkeypatch) -> None:
    """The check below is not vacuous: an example whose output is wrong counts as failed."""
    monkeypatch.chdir(ROOT)
    test = doctest.DocTestParser().get_doctest(
        ">>> import metarec as mr\n>>> mr.SamplerConfig(n_support=3).n_support\n4\n",
        {},
        "broken",
        None,
        0,
    )
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 1


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the examples' tempfile.mkdtemp()
    module = importlib.import_module(name)
    found = sum(len(t.examples) for t in doctest.DocTestFinder().find(module))
    assert found > 0, f"{name}: has '>>>' lines but doctest collects none of them"
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} example(s) of {name} failed"
