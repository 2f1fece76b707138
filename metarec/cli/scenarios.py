"""Where the commands find a scenario: a file path, or the name of one shipped in ``tasks/``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_SCENARIO", "scenario_path"]

_HERE = Path(__file__).resolve().parent.parent  # the package folder
DEFAULT_SCENARIO = "synthetic-cold-start"


def scenario_path(name_or_path: str) -> Path:
    """A scenario file, or the name of one shipped in ``tasks/`` (``synthetic-cold-start``)."""
    p = Path(name_or_path)
    if p.exists() or p.suffix == ".toml":
        return p
    for base in (Path.cwd() / "tasks", _HERE.parent / "tasks", _HERE / "scenarios"):
        cand = base / f"{name_or_path}.toml"
        if cand.exists():
            return cand
    return p
