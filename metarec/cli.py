"""The ``metarec`` command line: a thin layer, each subcommand calls one public function.

``main(argv)`` never reads ``sys.argv`` itself when given a list, so tests call it in-process.
Errors on user input (:class:`~metarec._errors.MetarecError`) print one clear line to stderr
and exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from metarec._errors import MetarecError

__all__ = ["main", "build_parser"]

_HERE = Path(__file__).resolve().parent
DEFAULT_SCENARIO = "synthetic-cold-start"


def _scenario_path(name_or_path: str) -> Path:
    """A scenario file, or the name of one shipped in ``tasks/`` (``synthetic-cold-start``)."""
    p = Path(name_or_path)
    if p.exists() or p.suffix == ".toml":
        return p
    for base in (Path.cwd() / "tasks", _HERE.parent / "tasks", _HERE / "scenarios"):
        cand = base / f"{name_or_path}.toml"
        if cand.exists():
            return cand
    return p


def _data_root(args: argparse.Namespace) -> str | None:
    return getattr(args, "data_root", None) or os.environ.get("METAREC_DATA")


def _cmd_tasks_inspect(args: argparse.Namespace) -> int:
    from metarec.config import load_scenario
    from metarec.scenario import inspect_scenario

    sc = load_scenario(_scenario_path(args.scenario), args.set or (), data_root=_data_root(args))
    report = inspect_scenario(sc, seed=args.seed)
    if args.json:
        print(json.dumps(report))
        return 0 if all(v == "passed" for v in report["leakage_checks"].values()) else 1
    print(f"scenario {report['scenario']}: {report['data']['interactions']:,} interactions, "
          f"{report['data']['users']:,} users, {report['data']['items']:,} items, {report['data']['domains']} domain(s)")
    print(f"{'split':<16}{'tasks':>8}  {'support min/mean/max':>22}  {'query min/mean/max':>20}")
    for name, s in report["splits"].items():
        sp, q = s["support"], s["query"]
        print(f"{name:<16}{s['tasks']:>8}  {sp['min']:>6}/{sp['mean']:>6}/{sp['max']:>6}    {q['min']:>5}/{q['mean']:>6}/{q['max']:>5}")
    print("leakage checks:")
    for k, v in report["leakage_checks"].items():
        print(f"  {k:<26}{v:<8}({report['leakage_details'][k]})")
    print(f"built in {report['seconds']['total']:.2f} s")
    return 0 if all(v == "passed" for v in report["leakage_checks"].values()) else 1


def _cmd_train(args: argparse.Namespace) -> int:
    from metarec.config import load_scenario
    from metarec.train import train

    sc = load_scenario(_scenario_path(args.scenario), args.set or (), data_root=_data_root(args))
    res = train(sc, args.out, resume=args.resume)
    print(f"trained {res.steps} steps in {res.seconds:.1f} s ({res.tasks_per_s:.0f} tasks/s); best validation at step "
          f"{res.best_step}: " + ", ".join(f"{k}={v:.4f}" for k, v in res.best_val.items() if isinstance(v, float)))
    test = Path(args.out) / "test_metrics.json"
    if test.exists():
        for state, ev in json.loads(test.read_text())["states"].items():
            print(f"  test {state:<16} " + ", ".join(f"{k}={v:.4f}" for k, v in ev.items() if isinstance(v, float) and k != "adapt_ms_per_task")
                  + f"  ({ev['n_tasks']} tasks)")
    print(f"run directory: {args.out}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from metarec.data.fetch import fetch

    path = fetch(args.name, args.root)
    print(f"ready: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metarec", description="Few-shot domain adaptation for recommenders by meta-learning.")
    sub = p.add_subparsers(dest="command", required=True)

    def scen(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario value, e.g. --set protocol.n_support=5")
        sp.add_argument("--data-root", help="folder of the real datasets (default: $METAREC_DATA)")

    demo = sub.add_parser("demo", help="run the main job on the embedded synthetic scenario")
    demo.add_argument("--quick", action="store_true", help="a smaller run (for tests)")
    demo.add_argument("--out", default=None, help="keep the run folders here")
    demo.set_defaults(func=_cmd_demo)

    tr = sub.add_parser("train", help="meta-train a scenario into a run directory")
    tr.add_argument("scenario")
    tr.add_argument("--out", required=True, help="run directory")
    tr.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    scen(tr)
    tr.set_defaults(func=_cmd_train)

    tasks = sub.add_parser("tasks", help="scenario tasks").add_subparsers(dest="tasks_command", required=True)
    insp = tasks.add_parser("inspect", help="build a scenario's tasks and report sizes and leakage checks")
    insp.add_argument("scenario")
    insp.add_argument("--json", action="store_true")
    insp.add_argument("--seed", type=int, default=0)
    scen(insp)
    insp.set_defaults(func=_cmd_tasks_inspect)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    fetch = data.add_parser("fetch", help="download a public dataset (MovieLens) into ROOT")
    fetch.add_argument("name", help="movielens-100k or movielens-1m")
    fetch.add_argument("--root", required=True)
    fetch.set_defaults(func=_cmd_data_fetch)
    return p


def _cmd_demo(args: argparse.Namespace) -> int:
    from metarec.demo import run_demo

    run_demo(quick=args.quick, out=args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return int(args.func(args) or 0)
    except MetarecError as e:
        print(f"metarec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
