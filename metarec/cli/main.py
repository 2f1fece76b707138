"""The ``metarec`` command line: a thin layer, each subcommand calls one public function.

``main(argv)`` never reads ``sys.argv`` itself when given a list, so tests call it in-process.
Errors on user input (:class:`~metarec._errors.MetarecError`) print one clear line to stderr
and exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from metarec._errors import MetarecError
from metarec.cli.commands import (
    cmd_adapt,
    cmd_bench,
    cmd_data_fetch,
    cmd_demo,
    cmd_federated,
    cmd_recommend,
    cmd_serve,
    cmd_tasks_inspect,
    cmd_train,
    print_filters,
)

__all__ = ["main", "build_parser"]


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
    demo.set_defaults(func=cmd_demo)

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
    tr.set_defaults(func=cmd_train)

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
    ad.set_defaults(func=cmd_adapt)

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
    rc.set_defaults(func=cmd_recommend)

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
    sv.set_defaults(func=cmd_serve)

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
    be.set_defaults(func=cmd_bench)

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
    fe.set_defaults(func=cmd_federated)

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
    insp.set_defaults(func=cmd_tasks_inspect)

    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    fetch = data.add_parser("fetch", help="download a public dataset (MovieLens) into ROOT")
    fetch.add_argument("name", help="movielens-100k or movielens-1m")
    fetch.add_argument("--root", required=True)
    fetch.set_defaults(func=cmd_data_fetch)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    printed = getattr(args, "func", None) is cmd_tasks_inspect  # inspect prints its own report
    try:
        with contextlib.nullcontext() if printed else print_filters():
            return int(args.func(args) or 0)
    except MetarecError as e:
        print(f"metarec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
