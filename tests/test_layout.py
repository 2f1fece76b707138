"""The house plan (``STYLE.md``): stage folders, imports that only run down, no import circles.

Every import between ``metarec`` modules is read from the source (top-level, inside functions
and under ``TYPE_CHECKING`` alike); a stage may import itself and the stages below it only.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "metarec"

# bottom first: a stage imports only the stages before it in this list
STAGES = [
    "_errors",
    "_io",
    "config",
    "data",
    "episodes",
    "models",
    "algorithms",
    "interop",
    "metrics",
    "runs",
    "train",
    "methods",
    "federated",
    "recommend",
    "serve",
    "bench",
    "cli",
]
LOOSE_ALLOWED = {"__init__.py", "__main__.py", "_errors.py", "py.typed"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        rel = f.relative_to(PACKAGE.parent).with_suffix("")
        out[".".join(rel.parts).removesuffix(".__init__")] = f
    return out


def _imports(f: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``metarec`` import in ``f`` (``from metarec import x`` gives
    ``metarec.x``)."""
    out = []
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "metarec":
                out += [(node.lineno, "metarec." + a.name) for a in node.names]
            elif node.module.startswith("metarec."):
                out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("metarec.")]
    return out


def _stage(module: str) -> str:
    return module.split(".")[1]


def test_no_loose_modules_and_every_folder_is_a_stage():
    loose = sorted(p.name for p in PACKAGE.iterdir() if p.is_file() and p.name not in LOOSE_ALLOWED)
    assert loose == [], f"loose modules in metarec/ (move each into its stage folder): {loose}"
    folders = sorted(
        p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    )
    assert set(folders) <= set(STAGES), f"folders that are not stages: {set(folders) - set(STAGES)}"


def test_imports_only_run_down_the_stages():
    rank = {name: i for i, name in enumerate(STAGES)}
    bad = []
    for module, f in _modules().items():
        if module.count(".") == 0 or _stage(module) == "__main__":
            continue
        src = _stage(module)
        for line, target in _imports(f):
            dst = _stage(target)
            if dst != src and rank[dst] > rank[src]:
                bad.append(f"{f.relative_to(PACKAGE.parent)}:{line}: {src} imports {dst}")
    assert bad == [], "imports that run back up the stages:\n" + "\n".join(bad)


def test_no_import_circles_between_modules():
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for module, f in modules.items():
        for _, target in _imports(f):
            t = resolve(target)
            # a package importing its own submodules (re-exports) is not a circle
            if t and t != module and t != "metarec" and not t.startswith(module + "."):
                graph[module].add(t)
    # Tarjan's strongly connected components
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in list(modules):
        if v not in index:
            visit(v)
    assert circles == [], f"import circles: {circles}"


def test_old_import_paths_still_work_and_warn_once():
    import importlib
    import warnings

    import metarec

    for name in ("metarec.learners", "metarec.learners.r2d2"):
        sys.modules.pop(name, None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        old = importlib.import_module("metarec.learners.r2d2")
    new = importlib.import_module("metarec.methods.learners.r2d2")
    assert old is new and new.__spec__.name == "metarec.methods.learners.r2d2"
    assert any("moved to metarec.methods.learners" in str(w.message) for w in seen)
    assert metarec._moved_target("metarec.adapt") == "metarec.recommend.load"
