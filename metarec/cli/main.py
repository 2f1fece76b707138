"""The ``metarec`` command line: a thin layer, each subcommand calls one public function.

``main(argv)`` never reads ``sys.argv`` itself when given a list, so tests call it in-process.
Errors on user input (:class:`~metarec._errors.MetarecError`) print one clear line to stderr
and exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from metarec._errors import MetarecError
from metarec.cli.scenarios import scenario_path

__all__ = ["main", "build_parser"]


def _data_root(args: argparse.Namespace) -> str | None:
    return getattr(args, "data_root", None) or os.environ.get("METAREC_DATA")


def _cmd_tasks_inspect(args: argparse.Namespace) -> int:
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
def _print_filters() -> Iterator[None]:
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


def _cmd_train(args: argparse.Namespace) -> int:
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


def _cmd_adapt(args: argparse.Namespace) -> int:
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


def _cmd_recommend(args: argparse.Namespace) -> int:
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


def _cmd_serve(args: argparse.Namespace) -> int:
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


def _cmd_bench(args: argparse.Namespace) -> int:
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


def _cmd_federated(args: argparse.Namespace) -> int:
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


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from metarec.data.fetch import fetch

    path = fetch(args.name, args.root)
    print(f"ready: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metarec", description="Few-shot domain adaptation for recommenders by meta-learning."
    )
    import metarec

    p.add_argument("--version", action="version", version=f"metarec {metarec.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def scen(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override a scenario value, e.g. --set protocol.n_support=5",
        )
        sp.add_argument("--data-root", help="folder of the real datasets (default: $METAREC_DATA)")

    def serving(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--on-diverge",
            choices=("error", "fallback"),
            default="error",
            help="a user whose adaptation diverges: fail (default) or serve the meta-learned initialisation",
        )
        sp.add_argument(
            "--unknown-items",
            choices=("error", "fallback"),
            default="error",
            help="support items the run does not know: fail (default) or score them as the unknown item",
        )

    demo = sub.add_parser("demo", help="run the main job on the embedded synthetic scenario")
    demo.add_argument("--quick", action="store_true", help="a smaller run (for tests)")
    demo.add_argument("--out", default=None, help="keep the run folders here")
    demo.set_defaults(func=_cmd_demo)

    tr = sub.add_parser(
        "train", help="train a scenario's method (algorithm.name) into a run directory"
    )
    tr.add_argument("scenario")
    tr.add_argument("--out", required=True, help="run directory")
    tr.add_argument(
        "--resume",
        action="store_true",
        help="continue from RUN_DIR/checkpoints/last.pt (none yet: from step 0)",
    )
    tr.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run in RUN_DIR (its own files only) and train afresh",
    )
    scen(tr)
    tr.set_defaults(func=_cmd_train)

    ad = sub.add_parser(
        "adapt",
        help="fast-adapt a trained run to cold users' support ratings; writes an adapted directory",
    )
    ad.add_argument("--run", required=True, help="run directory written by 'metarec train'")
    ad.add_argument(
        "--support", required=True, help="CSV with header user,item,rating (one task per user)"
    )
    ad.add_argument("--out", required=True, help="adapted directory to write")
    ad.add_argument(
        "--domain",
        help="read the support's plain item ids as this domain's (cross-domain runs namespace "
        "item ids: 395 -> cloth:395)",
    )
    ad.add_argument("--steps", type=int, help="inner steps (default: the run's evaluation steps)")
    ad.add_argument("--lr", type=float, help="inner learning rate (default: the run's)")
    ad.add_argument(
        "--overwrite", action="store_true", help="replace an adapted directory already in --out"
    )
    serving(ad)
    ad.set_defaults(func=_cmd_adapt)

    rc = sub.add_parser(
        "recommend", help="top-k items for a user from a run or an adapted directory"
    )
    rc.add_argument("--run", required=True, help="run directory or adapted directory")
    rc.add_argument("--user", required=True, help="user id (cold users welcome)")
    rc.add_argument("--k", type=int, default=10, help="how many items (default 10)")
    rc.add_argument("--support", help="CSV user,item,rating: adapt on the fly on this user's rows")
    rc.add_argument("--steps", type=int, help="inner steps with --support (default: the run's)")
    rc.add_argument(
        "--lr", type=float, help="inner learning rate with --support (default: the run's)"
    )
    rc.add_argument(
        "--domain",
        help="rank only this domain's items (a domain id of the run); the support's plain item ids "
        "are read as this domain's (395 -> cloth:395)",
    )
    rc.add_argument(
        "--json", action="store_true", help="print one JSON object {user, items: [{item, score}]}"
    )
    serving(rc)
    rc.set_defaults(func=_cmd_recommend)

    sv = sub.add_parser(
        "serve",
        help="HTTP JSON service: POST /recommend, /predict; GET /health, /ready, /metrics, "
        "/openapi.json, /docs (micro-batched)",
    )
    sv.add_argument("--run", required=True, help="run directory written by 'metarec train'")
    sv.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    sv.add_argument(
        "--port", type=int, default=8000, help="port (default 8000; 0: a free port, printed)"
    )
    sv.add_argument(
        "--max-batch",
        type=int,
        default=64,
        help="most requests adapted together (default 64; 1: no batching)",
    )
    sv.add_argument(
        "--max-wait-ms",
        type=float,
        default=2.0,
        help="longest a request waits for its batch to fill (default 2)",
    )
    sv.add_argument("--steps", type=int, help="inner steps (default: the run's evaluation steps)")
    sv.add_argument("--lr", type=float, help="inner learning rate (default: the run's)")
    sv.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    sv.add_argument(
        "--workers", type=int, default=1, help="server processes sharing the port (default 1)"
    )
    sv.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="largest request body (default 1 MiB; over: 413)",
    )
    sv.add_argument(
        "--max-support",
        type=int,
        default=1000,
        help="most support rows per request (default 1000; over: 413)",
    )
    sv.add_argument(
        "--max-items",
        type=int,
        default=10_000,
        help="most items per /predict request (default 10000; over: 413)",
    )
    sv.add_argument(
        "--max-json-depth",
        type=int,
        default=16,
        help="deepest nesting of a JSON body (default 16; a valid body needs 3; over: 400)",
    )
    sv.add_argument(
        "--max-header-bytes",
        type=int,
        default=16 * 1024,
        help="largest request line + headers (default 16 KiB; over: 431)",
    )
    sv.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds for a request head to arrive (default 10; idle or slow connections are closed)",
    )
    sv.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds for a request body to arrive after its head (default 30; over: 408)",
    )
    sv.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        help="seconds an idle keep-alive connection stays open (default 5)",
    )
    sv.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="most open connections per worker (default 1000; beyond: 503 at once)",
    )
    sv.add_argument(
        "--token-file",
        help="file holding a bearer token that /recommend, /predict and /metrics require "
        "(default: $METAREC_SERVE_TOKEN if set, else no authentication)",
    )
    sv.add_argument(
        "--no-kernel",
        action="store_true",
        help="always use the library's adapt_many/recommend path",
    )
    sv.add_argument(
        "--on-diverge",
        choices=("error", "fallback"),
        default="error",
        help="a user whose adaptation diverges: answer 500 with the error (default) or serve the "
        "meta-learned initialisation with a 'warning' field",
    )
    sv.set_defaults(func=_cmd_serve)

    be = sub.add_parser(
        "bench",
        help="benchmark algorithms x seeds x shots on a scenario; writes results.jsonl and report.md",
    )
    be.add_argument("scenario")
    be.add_argument(
        "--out", required=True, help="output folder (results.jsonl, report.md, plots/, runs/)"
    )
    be.add_argument(
        "--algorithms",
        help="comma-separated, e.g. maml,reptile,global,finetune,popularity,melu-ref",
    )
    be.add_argument("--seeds", type=int, help="number of seeds 0..N-1 (default: bench.seeds)")
    be.add_argument(
        "--shots", help="comma-separated support sizes, e.g. 1,3,5,10,20 (default: bench.shots)"
    )
    be.add_argument(
        "--quick",
        action="store_true",
        help="the reduced suite (bench.quick_steps outer steps, 2 seeds, shots 5,10)",
    )
    be.add_argument(
        "--plots",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write plots (default: if matplotlib is installed)",
    )
    be.add_argument("--runs-dir", help="where the training run directories go (default: OUT/runs)")
    be.add_argument(
        "--resume",
        action="store_true",
        help="continue the benchmark in OUT: finished (seed, algorithm) runs are kept, the rest run",
    )
    be.add_argument(
        "--overwrite", action="store_true", help="delete the benchmark in OUT and start afresh"
    )
    be.add_argument(
        "--tune",
        type=int,
        metavar="N",
        help="per algorithm, N trials of its settings on seed 0, chosen on meta-val only",
    )
    be.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="(seed, algorithm) runs at a time, each in a worker process with one thread "
        "(default 1: one after another); the same rows, resumable alike",
    )
    scen(be)
    be.set_defaults(func=_cmd_bench)

    fe = sub.add_parser(
        "federated", help="federated meta-learning: one client per domain (or cohort) on Flower"
    )
    fe.add_argument("scenario")
    fe.add_argument("--out", required=True, help="run directory")
    fe.add_argument(
        "--backend",
        choices=("simulation", "local", "loopback"),
        default=None,
        help="default: the scenario's federated.backend (simulation)",
    )
    fe.add_argument(
        "--resume",
        action="store_true",
        help="continue from RUN/checkpoints/last.pt (none yet: from round 0)",
    )
    fe.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the federated run in RUN (its own files only) and start afresh",
    )
    scen(fe)
    fe.set_defaults(func=_cmd_federated)

    tasks = sub.add_parser("tasks", help="scenario tasks").add_subparsers(
        dest="tasks_command", required=True
    )
    insp = tasks.add_parser(
        "inspect", help="build a scenario's tasks and report sizes and leakage checks"
    )
    insp.add_argument("scenario")
    insp.add_argument("--json", action="store_true")
    insp.add_argument("--seed", type=int, default=0)
    scen(insp)
    insp.set_defaults(func=_cmd_tasks_inspect)

    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    fetch = data.add_parser("fetch", help="download a public dataset (MovieLens) into ROOT")
    fetch.add_argument("name", help="movielens-100k or movielens-1m")
    fetch.add_argument("--root", required=True)
    fetch.set_defaults(func=_cmd_data_fetch)
    return p


def _cmd_demo(args: argparse.Namespace) -> int:
    from metarec.cli.demo import run_demo

    run_demo(quick=args.quick, out=args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    printed = getattr(args, "func", None) is _cmd_tasks_inspect  # inspect prints its own report
    try:
        with contextlib.nullcontext() if printed else _print_filters():
            return int(args.func(args) or 0)
    except MetarecError as e:
        print(f"metarec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
