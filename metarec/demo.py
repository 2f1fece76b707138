"""The main job, ``metarec demo``: the embedded synthetic scenario end to end."""

from __future__ import annotations

import json

from metarec.config import load_scenario
from metarec.scenario import inspect_scenario

__all__ = ["run_demo"]


def run_demo(*, quick: bool = False, out: str | None = None) -> dict:
    """Build the embedded scenario's tasks and report them (the meta-training part is added by
    the engine)."""
    from metarec.cli import DEFAULT_SCENARIO, _scenario_path

    sc = load_scenario(_scenario_path(DEFAULT_SCENARIO))
    report = inspect_scenario(sc)
    print(json.dumps({k: report[k] for k in ("scenario", "splits", "leakage_checks")}, indent=1))
    return report
