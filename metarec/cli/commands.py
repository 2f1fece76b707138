"""The ``metarec`` subcommands: each reads its parsed arguments and calls one public function.

:mod:`metarec.cli.main` builds the parser and routes each subcommand here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metarec._errors import MetarecError
from metarec.cli.scenarios import scenario_path

__all__ = [
    "cmd_adapt",
    "cmd_bench",
    "cmd_data_fetch",
    "cmd_demo",
    "cmd_federated",
    "cmd_recommend",
    "cmd_serve",
    "cmd_tasks_inspect",
    "cmd_train",
    "print_filters",
]


def _data_root(args: argparse.Namespace) -> str | None:
    return getattr(args, "data_root", None) or os.environ.get("METAREC_DATA")


def cmd_tasks_inspect(args: argparse.Namespace) -> int:
    from metarec.config import load_scenario
    from metarec.episodes.build import inspect_scenario

    sc = load_scenario(scenario_path(args.scenario), args.set or (), data_root=_data_root(args))
    report = inspect_scenario(sc, seed=args.seed)
    if args.json:
        print(json.dumps(report))
        return 0 if all(v == "passed" for v in report["leakage_checks"].values()) else 1
    print(
        f"scenario {report['scenario']}: {report['data']['interactions']:,} interactions, "
        f"{report['data']['users']:,} users, {report['data']['items']:,} items, "
        f"{report['data']['domains']} domain(s)"
    )
    print("filters (what no pool holds, and the key that controls it):")
    for line in _filter_lines(report["filters"]):
        print(f"  {line}")
    print(f"{'split':<16}{'tasks':>8}  {'support min/mean/max':>22}  {'query min/mean/max':>20}")
    for name, s in report["splits"].items():
        sp, q = s["support"], s["query"]
        rank = (
            f"    catalogue {s['catalogue']:>6}, relevant "
            f"{s['relevant']['min']}/{s['relevant']['mean']}/{s['relevant']['max']}"
            if "catalogue" in s
            else ""
        )
        print(
            f"{name:<16}{s['tasks']:>8}  {sp['min']:>6}/{sp['mean']:>6}/{sp['max']:>6}    "
            f"{q['min']:>5}/{q['mean']:>6}/{q['max']:>5}" + rank
        )
    print("leakage checks:")
    for k, v in report["leakage_checks"].items():
        print(f"  {k:<26}{v:<8}({report['leakage_details'][k]})")
    print(f"built in {report['seconds']['total']:.2f} s")
    return 0 if all(v == "passed" for v in report["leakage_checks"].values()) else 1


def _filter_lines(filters: dict) -> list[str]:
    from metarec.data.drops import Drop
    from metarec.episodes.filters import FilterReport

    drops = [Drop(**d) for d in filters["drops"]]
    report = FilterReport(
        tuple(filters["rows"]), tuple(filters["users"]), tuple(filters["items"]), drops
    )  # type: ignore[arg-type]
    return report.lines()


class _Once(logging.Filter):
    """Passes each message once (a benchmark builds the same splits for every cell)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


@contextlib.contextmanager
def print_filters() -> Iterator[None]:
    """Print what the data and the protocol leave out (logger ``metarec.filters``) on stdout,
    before the command's own output (stderr stays for errors)."""
    log = logging.getLogger("metarec.filters")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("metarec: filter: %(message)s"))
    handler.addFilter(_Once())
    old = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old)


def cmd_train(args: argparse.Namespace) -> int:
    from metarec.config import load_scenario
    from metarec.methods import train_method

    sc = load_scenario(scenario_path(args.scenario), args.set or (), data_root=_data_root(args))
    res = train_method(sc, args.out, resume=args.resume, overwrite=args.overwrite)
    unit = res.training_log.unit if res.training_log is not None else "step"
    speed = f" ({res.tasks_per_s:.0f} tasks/s)" if res.tasks_per_s else ""
    print(
        f"trained {res.steps} {unit}s in {res.seconds:.1f} s{speed}; best validation at {unit} "
        f"{res.best_step}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in res.best_val.items() if isinstance(v, float))
    )
    if res.skipped_steps:
        print(f"  {res.skipped_steps} {unit}(s) skipped: the loss or meta-gradient was not finite")
    test = Path(args.out) / "test_metrics.json"
    if test.exists():
        for state, ev in json.loads(test.read_text())["states"].items():
            print(
                f"  test {state:<16} "
                + ", ".join(
                    f"{k}={v:.4f}"
                    for k, v in ev.items()
                    if isinstance(v, float) and k != "adapt_ms_per_task"
                )
                + f"  ({ev['n_tasks']} tasks)"
            )
    print(f"run directory: {args.out}")
    return 0


def _support_in_domain(support: Any, run: str, domain: str | None, path: str) -> Any:
    """The support frame with plain item ids read as ``domain``'s (``395`` -> ``cloth:395``) when
    the run's item ids are namespaced by domain; a plain id the run knows only in namespaced form
    is an error that shows that form and the ``--domain`` that reads it."""
    import numpy as np

    from metarec._errors import DataError
    from metarec.data.encoding import IdEncoder
    from metarec.data.files import read_json_object

    enc_file = Path(run) / "encoders.json"
    if not enc_file.is_file():
        return support  # an adapted directory or a damaged run: the loader says what is wrong
    items = IdEncoder.from_json(read_json_object(enc_file, "encoders")["item_ids"])
    by_plain: dict[str, list[str]] = {}
    for v in items.values:
        head, sep, tail = str(v).partition(":")
        if sep:
            by_plain.setdefault(tail, []).append(str(v))
    if not by_plain:
        return support  # ids are not namespaced
    raw = support["item"].astype(str)
    known = np.asarray([r in items for r in raw.tolist()], dtype=bool)
    if domain is not None:
        full = domain + ":" + raw
        fix = ~known & np.asarray([f in items for f in full.tolist()], dtype=bool)
        support = support.assign(item=np.where(fix, full, raw))
        known |= fix
    for r in raw[~known].tolist():
        forms = by_plain.get(r)
        if forms:
            doms = sorted(f.partition(":")[0] for f in forms)
            hint = (
                f"--domain {domain} reads plain ids as {domain!r}'s, and {domain!r} has no item "
                f"{r!r}; "
                if domain is not None
                else ""
            )
            raise DataError(
                f"--support {path}: item {r!r} is not in the run's catalogue, whose item ids are "
                f"namespaced by domain ({', '.join(repr(f) for f in forms)}); {hint}pass --domain "
                f"{doms[0]} to read plain ids as {doms[0]!r}'s, or write the namespaced id "
                f"({forms[0]!r}) in the file"
            )
    return support


def cmd_adapt(args: argparse.Namespace) -> int:
    import time

    from metarec.recommend.load import load_run, read_support

    t0 = time.perf_counter()
    rec = load_run(args.run).adapt_many(
        _support_in_domain(read_support(args.support), args.run, args.domain, args.support),
        steps=args.steps,
        lr=args.lr,
        on_diverge=args.on_diverge,
        unknown_items=args.unknown_items,
    )
    out = rec.save(args.out, overwrite=args.overwrite)
    how = (
        f"{rec.steps} step(s)" if rec.steps is not None else f"adapted by method {rec.meta.name!r}"
    )
    print(
        f"adapted {rec.n_tasks} user(s) ({how}) in {time.perf_counter() - t0:.2f} s; "
        f"adapted directory: {out}"
    )
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from metarec.recommend.load import open_recommender, read_support
    from metarec.runs.guard import check_recommendations

    support = (
        _support_in_domain(read_support(args.support), args.run, args.domain, args.support)
        if args.support
        else None
    )
    rec = open_recommender(
        args.run,
        support=support,
        user=args.user,
        steps=args.steps,
        lr=args.lr,
        on_diverge=args.on_diverge,
        unknown_items=args.unknown_items,
    )
    idx = int(rec.user_ids.encode([args.user])[0])
    user = (
        rec.user_ids.values[idx - 1] if idx else args.user
    )  # the catalogue's id when it knows the user
    top = rec.recommend(args.user, k=args.k, domain=args.domain)
    check_recommendations(
        top, args.user
    )  # hook (metarec.runs.guard): never an empty list with status 0
    if args.json:
        # ids are strings, whatever type the run was trained with (as metarec serve answers)
        items = [{"item": str(i), "score": s} for i, s in top]
        print(json.dumps({"user": str(user), "items": items}))
        return 0
    how = (
        (
            f"adapted, {rec.steps} step(s)"
            if rec.steps is not None
            else f"adapted by method {rec.meta.name!r}"
        )
        if rec.is_adapted(args.user)
        else "meta-learned initialisation"
    )
    print(f"top {len(top)} for user {user!r} ({'known' if idx else 'cold'} user; {how})")
    print(f"{'rank':>4}  {'item':<16}{'score':>8}")
    for r, (i, s) in enumerate(top, 1):
        print(f"{r:>4}  {str(i):<16}{s:>8.4f}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from metarec.serve import HttpLimits, Limits, ServeConfig, read_token, serve

    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_support=args.max_support,
        max_items=args.max_items,
        max_json_depth=args.max_json_depth,
    )
    http = HttpLimits(
        max_header_bytes=args.max_header_bytes,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive=args.keep_alive,
        max_connections=args.max_connections,
    )
    config = ServeConfig(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        steps=args.steps,
        lr=args.lr,
        batched_kernel=not args.no_kernel,
        limits=limits,
        on_diverge=args.on_diverge,
        token=read_token(args.token_file),
    )
    serve(
        args.run,
        host=args.host,
        port=args.port,
        config=config,
        threads=args.threads,
        workers=args.workers,
        http=http,
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from metarec.bench import run_bench
    from metarec.config import load_scenario

    sc = load_scenario(scenario_path(args.scenario), args.set or (), data_root=_data_root(args))
    algos = (
        [a.strip() for a in args.algorithms.split(",") if a.strip()] if args.algorithms else None
    )
    try:
        shots = [int(x) for x in args.shots.split(",") if x.strip()] if args.shots else None
    except ValueError:
        raise MetarecError(
            f"--shots {args.shots!r}: expected comma-separated integers, e.g. --shots 1,5,10"
        ) from None
    res = run_bench(
        sc,
        algorithms=algos,
        seeds=args.seeds,
        shots=shots,
        quick=args.quick,
        out=args.out,
        plots=args.plots,
        runs_dir=args.runs_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        tune=args.tune,
        jobs=args.jobs,
    )
    print(f"results: {res.results}\nreport: {res.report}")
    return 0


def cmd_federated(args: argparse.Namespace) -> int:
    from metarec.config import load_scenario
    from metarec.federated import run_federated

    sc = load_scenario(scenario_path(args.scenario), args.set or (), data_root=_data_root(args))
    res = run_federated(
        sc, args.out, backend=args.backend, resume=args.resume, overwrite=args.overwrite
    )
    s = res.summary
    print(
        f"federated {s['algorithm']} ({s['backend']}): {s['rounds']} round(s) in "
        f"{s['seconds']:.1f} s, {s['bytes_sent_by_clients_per_round']:,.0f} bytes sent by clients "
        f"per round, {len(s['failures'])} client failure(s)"
    )
    for c in s["clients"]:
        cold = c.get("cold", {})
        scores = ", ".join(
            f"{k}={v:.4f}"
            for k, v in cold.items()
            if isinstance(v, float) and k not in ("n_tasks", "adapt_ms_per_task")
        )
        print(f"  {c.get('name', c['index'])!s:<18} " + (scores or str(c.get("error", cold))))
    print(f"run directory: {args.out}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from metarec.data.fetch import fetch

    path = fetch(args.name, args.root)
    print(f"ready: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from metarec.cli.demo import run_demo

    run_demo(quick=args.quick, out=args.out)
    return 0
