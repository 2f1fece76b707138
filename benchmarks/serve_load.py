"""Load benchmark of ``metarec serve``: requests/s and p50 / p99 latency at 1, 8 and 64 clients.

Each request is a cold user (an id the run has never seen) with ``--shots`` support ratings,
adapted with ``--steps`` inner steps, asking for a top-``--k`` over the whole catalogue
(``POST /recommend``). Client and server run on 127.0.0.1: the server is ``python -m metarec
serve`` in its own process, the clients are coroutines of this process, each on its own
keep-alive connection, sending its next request when the previous answer arrived (closed loop).
Every cell is bounded in time (``--seconds``) and count (``--max-requests``), after
``--warmup-s`` untimed seconds; every answer is checked (HTTP 200, ``k`` items).

Compared side by side, on the same run and the same request bodies:

* **batched**: ``metarec serve`` as shipped (``--max-batch``, default 64, ``--max-wait-ms`` 2);
* **unbatched**: the same server with ``--max-batch 1`` (one adaptation per request);
* **process per request**: ``metarec recommend --run RUN --user U --support S.csv --json`` as a
  subprocess, ``--process-requests`` times, one at a time (requests/s = 1 / mean latency).

The run: ``--run RUN_DIR``, else one trained here for a few steps (latency does not depend on
how well a model is trained): ``--model melu`` trains ``tasks/ml1m-melu.toml`` (MovieLens-1M,
3,883 items; needs ``$METAREC_DATA``), ``--model two_tower`` the synthetic scenario with the
two-tower model (12,000 items). Appends one row per (model, server, clients) to
``results/serve_load.jsonl`` and writes ``results/serve_load.md`` from every row of that file.

    METAREC_DATA=/work/shared/datasets python benchmarks/serve_load.py --model melu
    python benchmarks/serve_load.py --model two_tower
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from metarec.recommend.load import load_run  # noqa: E402

TARGETS = {"melu": 500.0, "two_tower": 2000.0}  # requests/s at 64 clients on 2 CPU cores
TARGET_P99_MS = 250.0
JSONL = C.RESULTS / "serve_load.jsonl"


# ---------------------------------------------------------------------- the run
def train_run(model: str, out: Path, steps: int) -> str:
    from metarec.config import load_scenario
    from metarec.train.loop import train

    budget = [
        f"train.steps={steps}",
        f"train.val_every={steps}",
        "train.val_tasks=16",
        f"train.checkpoint_every={steps}",
        "train.progress=false",
    ]
    if model == "melu":
        if C.data_root() is None or not (C.data_root() / "movielens-1m").is_dir():
            raise SystemExit(
                "--model melu: set METAREC_DATA to the folder holding movielens-1m/ (or pass --run)"
            )
        sc = load_scenario(
            C.ROOT / "tasks" / "ml1m-melu.toml", budget, data_root=str(C.data_root())
        )
        name = "ml1m-melu"
    else:
        over = [
            "model.name='two_tower'",
            "model.embedding_dim=32",
            "model.hidden=[64, 32]",
            "algorithm.inner_steps=5",
            "algorithm.inner_lr=0.05",
        ]
        sc = load_scenario(C.ROOT / "tasks" / "synthetic-cold-start.toml", [*over, *budget])
        name = "synthetic-cold-start, two_tower"
    train(sc, out, evaluate_test=False)
    return f"{name} ({steps} training steps)"


def bodies(
    run: Path, n: int, shots: int, k: int, seed: int
) -> tuple[list[bytes], list[dict[str, Any]], dict[str, Any]]:
    """``n`` request bodies of distinct cold users, ``shots`` distinct catalogue items each."""
    meta = load_run(run)
    rng = np.random.default_rng(seed)
    items = np.asarray(meta.item_ids.values, dtype=object)
    pick = np.argsort(rng.random((n, len(items))), axis=1)[:, :shots]  # (n, shots)
    if meta.feedback == "implicit":
        ratings = rng.integers(0, 2, size=pick.shape)
    else:
        lo, hi = meta.rating_scale or (1.0, 5.0)
        ratings = rng.integers(int(lo), int(hi) + 1, size=pick.shape)
    objs = [
        {
            "user": f"load-cold-{seed}-{u}",
            "k": k,
            "support": [
                {
                    "item": items[i].item() if hasattr(items[i], "item") else items[i],
                    "rating": int(r),
                }
                for i, r in zip(pick[u], ratings[u], strict=True)
            ],
        }
        for u in range(n)
    ]
    info = {
        "model": meta.manifest["model"]["name"],
        "items": len(meta.item_ids) - 1,
        "feedback": meta.feedback,
        "algorithm": meta.algo.name,
        "kwargs": meta.manifest["model"].get("kwargs"),
    }
    return [json.dumps(o).encode() for o in objs], objs, info


# ---------------------------------------------------------------------- the server
class Server:
    """``python -m metarec serve`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(
        self,
        run: Path,
        max_batch: int,
        max_wait_ms: float,
        steps: int,
        threads: int,
        workers: int = 1,
    ) -> None:
        env = {**os.environ, "PYTHONPATH": str(C.ROOT), "OMP_NUM_THREADS": str(threads)}
        self.cmd = [
            sys.executable,
            "-m",
            "metarec",
            "serve",
            "--run",
            str(run),
            "--port",
            "0",
            "--max-batch",
            str(max_batch),
            "--max-wait-ms",
            str(max_wait_ms),
            "--steps",
            str(steps),
            "--threads",
            str(threads),
            "--workers",
            str(workers),
        ]
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if "listening on" not in line:
            self.stop()
            raise SystemExit(
                "the server did not start: "
                f"{line}{self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        url = line.split("listening on http://")[1].split()[0]
        host, port = url.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.banner = line.strip()

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server and its worker processes have used so far
        (Linux; 0 elsewhere)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat.parent.name == str(self.proc.pid) or fields[1] == str(
                self.proc.pid
            ):  # itself or a child
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def health(self) -> dict[str, Any]:
        import http.client

        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("GET", "/health")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


# ---------------------------------------------------------------------- the clients
async def _client(
    host: str,
    port: int,
    reqs: list[bytes],
    start: int,
    k: int,
    until: float,
    limit: list[int],
    lat: list[float],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = start
    try:
        while time.perf_counter() < until and limit[0] > 0:
            limit[0] -= 1
            body = reqs[n % len(reqs)]
            n += 1
            head = (
                b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            t0 = time.perf_counter()
            writer.write(head + body)
            status_head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in status_head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            data = await reader.readexactly(length)
            dt = time.perf_counter() - t0
            status = int(status_head.split(b" ", 2)[1])
            if status != 200:
                errors.append(f"{status}: {data[:200]!r}")
                continue
            if len(json.loads(data)["items"]) != k:
                errors.append(f"answer without {k} items: {data[:200]!r}")
                continue
            lat.append(dt)
    finally:
        writer.close()


async def _load(
    host: str,
    port: int,
    reqs: list[bytes],
    clients: int,
    k: int,
    seconds: float,
    max_requests: int,
    warmup_s: float,
) -> dict[str, Any]:
    errors: list[str] = []
    warm: list[float] = []
    if warmup_s > 0:
        await asyncio.gather(
            *(
                _client(
                    host,
                    port,
                    reqs,
                    c * 997,
                    k,
                    time.perf_counter() + warmup_s,
                    [10**9],
                    warm,
                    errors,
                )
                for c in range(clients)
            )
        )
    lat: list[float] = []
    limit = [max_requests]
    t0 = time.perf_counter()
    await asyncio.gather(
        *(
            _client(host, port, reqs, c * 7919 + 1, k, t0 + seconds, limit, lat, errors)
            for c in range(clients)
        )
    )
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1e3
    return {
        "clients": clients,
        "requests": len(lat),
        "wall_s": round(wall, 3),
        "req_per_s": round(len(lat) / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "max_ms": round(float(ms.max()), 2) if len(ms) else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "all_requests": len(lat) + len(warm),  # warm-up included: the CPU counters cover both
    }


def load(
    host: str, port: int, reqs: list[bytes], clients: int, k: int, args: argparse.Namespace
) -> dict[str, Any]:
    try:
        import uvloop  # the client's event loop costs less CPU with it (it shares the cores with the server)

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(
        _load(host, port, reqs, clients, k, args.seconds, args.max_requests, args.warmup_s)
    )


def process_per_request(
    run: Path, objs: list[dict[str, Any]], n: int, steps: int, k: int, tmp: Path
) -> dict[str, Any]:
    """``metarec recommend ... --json`` as one subprocess per request, one at a time."""
    env = {**os.environ, "PYTHONPATH": str(C.ROOT), "OMP_NUM_THREADS": "1"}
    lat, errors = [], 0
    for o in objs[:n]:
        csv = tmp / f"{o['user']}.csv"
        csv.write_text(
            "user,item,rating\n"
            + "".join(f"{o['user']},{r['item']},{r['rating']}\n" for r in o["support"])
        )
        t0 = time.perf_counter()
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "metarec",
                "recommend",
                "--run",
                str(run),
                "--user",
                o["user"],
                "--support",
                str(csv),
                "--json",
                "--k",
                str(k),
                "--steps",
                str(steps),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        lat.append(time.perf_counter() - t0)
        if p.returncode != 0 or len(json.loads(p.stdout)["items"]) != k:
            errors += 1
    ms = np.asarray(lat) * 1e3
    return {
        "clients": 1,
        "requests": n,
        "wall_s": round(float(sum(lat)), 3),
        "req_per_s": round(n / float(sum(lat)), 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "errors": errors,
        "first_error": None,
    }


# ---------------------------------------------------------------------- report
def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# metarec serve: load benchmark",
        "",
        "Each request: a cold user with 5 support ratings, 5 adaptation steps, top-10 over the "
        "whole catalogue (`POST /recommend`). Client and server on 127.0.0.1 of the same machine "
        "(they share its cores); closed-loop clients, one keep-alive connection each. Requests/s "
        "of the process-per-request baseline is 1 / its mean latency (one request at a time).",
        "",
    ]
    by_session: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_session.setdefault(r["session"], []).append(r)
    for rs in by_session.values():
        r0 = rs[0]
        m = r0["machine"]
        lines += [
            f"## {r0['workload']['model']} on {r0['workload']['run']} "
            f"({r0['workload']['items']:,} items), {r0['when']}",
            "",
            f"{m['cpu']}, {m['cpu_affinity']} usable core(s); server: {r0.get('workers', 1)} "
            f"process(es), {r0['server_threads']} torch thread(s) each; load average at the start "
            f"{r0['loadavg']} ({r0['note']}).",
            "",
        ]
        table = []
        for r in rs:
            target = (
                TARGETS.get(r["workload"]["model"])
                if r["server"] == "batched" and r["clients"] == 64
                else None
            )
            met = (
                ""
                if target is None
                else (
                    "yes"
                    if r["req_per_s"] >= target and (r["p99_ms"] or 1e9) < TARGET_P99_MS
                    else "**no**"
                )
            )
            table.append(
                [
                    r["server"],
                    r["clients"],
                    f"{r['req_per_s']:,.{1 if r['req_per_s'] >= 10 else 3}f}",
                    r["p50_ms"],
                    r["p99_ms"],
                    r["requests"],
                    r["errors"],
                    r.get("mean_batch", ""),
                    r.get("server_cpu_ms_per_req", ""),
                    r.get("client_cpu_ms_per_req", ""),
                    "" if target is None else f">= {target:,.0f} req/s, p99 < {TARGET_P99_MS:g} ms",
                    met,
                ]
            )
        lines += [
            C.markdown_table(
                [
                    "server",
                    "clients",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "requests",
                    "errors",
                    "mean batch",
                    "server CPU ms/req",
                    "client CPU ms/req",
                    "target",
                    "met",
                ],
                table,
            ),
            "",
        ]
        speed = {(r["server"], r["clients"]): r["req_per_s"] for r in rs}
        if ("batched", 64) in speed and ("unbatched", 64) in speed and speed[("unbatched", 64)]:
            ratio = speed[("batched", 64)] / speed[("unbatched", 64)]
            proc = speed.get(("process per request", 1))
            lines += [
                f"At 64 clients the batched server answers **{ratio:.1f}x** the requests/s of the "
                "unbatched one"
                + (
                    f" and **{speed[('batched', 64)] / proc:,.0f}x** one process per request"
                    if proc
                    else ""
                )
                + " (measured in the same session).",
                "",
            ]
        lines += [
            f"Command: `{r0['command']}` (commit {r0['commit']['commit'][:10]}"
            f"{', dirty tree' if r0['commit']['dirty'] else ''}).",
            "",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--run", type=Path, help="a run directory (default: train one here, see --model)"
    )
    p.add_argument(
        "--model", choices=("melu", "two_tower"), default="melu", help="what to train without --run"
    )
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument(
        "--clients", type=C.int_list, default=[1, 8, 64], help="comma-separated client counts"
    )
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per cell")
    p.add_argument("--warmup-s", type=float, default=1.5, help="untimed seconds before each cell")
    p.add_argument("--max-requests", type=int, default=40_000, help="most timed requests per cell")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1, help="the server's torch threads (per worker)")
    p.add_argument(
        "--workers", type=int, default=1, help="server processes (metarec serve --workers)"
    )
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--bodies", type=int, default=4096, help="distinct cold users to cycle through")
    p.add_argument(
        "--process-requests",
        type=int,
        default=3,
        help="requests of the process-per-request baseline (0: skip)",
    )
    p.add_argument("--no-unbatched", action="store_true", help="skip the unbatched server")
    p.add_argument(
        "--note",
        default="the machine's cores are shared with other jobs",
        help="what else ran on the machine (goes into the report)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=JSONL)
    p.add_argument(
        "--report", type=Path, default=None, help="markdown report (default: beside --out, .md)"
    )
    p.add_argument(
        "--report-only", action="store_true", help="only rewrite the report from --out's rows"
    )
    return p.parse_args(argv)


def write_report(args: argparse.Namespace) -> Path:
    every = [json.loads(x) for x in args.out.read_text().splitlines() if x.strip()]
    report = args.report or args.out.with_suffix(".md")
    report.write_text(markdown(every))
    return report


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.report_only:
        print(f"report: {write_report(args)}")
        return []
    with tempfile.TemporaryDirectory(prefix="metarec-serve-load-") as tmp:
        if args.run is not None:
            run, what = args.run, f"given run {args.run}"
        else:
            run = Path(tmp) / "run"
            what = train_run(args.model, run, args.train_steps)
        reqs, objs, info = bodies(run, args.bodies, args.shots, args.k, args.seed)
        info["run"] = what
        base = {
            "benchmark": "serve_load",
            "session": C.stamp(),
            "when": C.stamp(),
            "commit": C.git_commit(),
            "command": C.command_line(),
            "machine": C.device_info("cpu"),
            "workload": info,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "config_hash": C.config_hash(
                {k: v for k, v in vars(args).items() if k not in ("out", "report", "note")}
            ),
            "server_threads": args.threads,
            "workers": args.workers,
            "note": args.note,
            "loadavg": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        }
        rows: list[dict[str, Any]] = []
        servers = [("batched", args.max_batch)] + ([] if args.no_unbatched else [("unbatched", 1)])
        for label, mb in servers:
            srv = Server(run, mb, args.max_wait_ms, args.steps, args.threads, args.workers)
            try:
                for c in args.clients:
                    cpu0, own0, h0 = srv.cpu_s(), time.process_time(), srv.health()
                    res = load(srv.host, srv.port, reqs, c, args.k, args)
                    h1 = srv.health()
                    n_all = res.pop("all_requests")
                    res["mean_batch"] = (
                        round(
                            (h1["answered"] - h0["answered"])
                            / max(1, h1["batches"] - h0["batches"]),
                            2,
                        )
                        if args.workers == 1
                        else None
                    )  # with workers: one worker's counters only
                    res["server_cpu_ms_per_req"] = round(
                        1e3 * (srv.cpu_s() - cpu0) / max(1, n_all), 3
                    )
                    res["client_cpu_ms_per_req"] = round(
                        1e3 * (time.process_time() - own0) / max(1, n_all), 3
                    )
                    row = {
                        **base,
                        "server": label,
                        "max_batch": mb,
                        "max_wait_ms": args.max_wait_ms,
                        **res,
                        "banner": srv.banner,
                    }
                    rows.append(row)
                    print(
                        f"{info['model']:<10} {label:<10} {c:>3} clients: "
                        f"{res['req_per_s']:>9,.1f} req/s  p50 {res['p50_ms']} ms  p99 "
                        f"{res['p99_ms']} ms  ({res['requests']} requests, {res['errors']} errors, "
                        f"mean batch {res['mean_batch']}, server CPU "
                        f"{res['server_cpu_ms_per_req']} ms/req)",
                        flush=True,
                    )
            finally:
                srv.stop()
        if args.process_requests:
            res = process_per_request(
                run, objs, args.process_requests, args.steps, args.k, Path(tmp)
            )
            rows.append(
                {
                    **base,
                    "server": "process per request",
                    "max_batch": None,
                    "max_wait_ms": None,
                    **res,
                }
            )
            print(
                f"{info['model']:<10} process per request: {res['req_per_s']:.2f} req/s  p50 "
                f"{res['p50_ms']} ms",
                flush=True,
            )
    C.write_jsonl(args.out, rows)
    print(f"results: {args.out}\nreport: {write_report(args)}")
    return rows


if __name__ == "__main__":
    main()
