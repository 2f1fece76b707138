"""The GPU check: one command, at most ~8 minutes on one GPU, whose rows say whether metarec runs
and how fast on CUDA. ``benchmarks/gpu_check.sh`` runs it.

Steps, each timed and recorded as a row of ``<out-dir>/gpu_check.jsonl`` (status ``passed``,
``failed``, ``skipped`` or ``hook``), with a summary in ``<out-dir>/gpu_check.md``:

1. ``pytest -m gpu`` (every ``gpu``-marked test; JUnit XML and log beside the rows);
2. engine throughput (:mod:`engine_throughput`, second-order MAML on the MeLU-size model) at
   meta-batches 32 and 256, in float32 and under bfloat16 autocast: tasks/s of each engine,
   learn2learn side by side when installed, the peak CUDA memory of each engine's meta-batch,
   and the fraction of the GPU's matmul peak (measured in the same run, in the same dtype);
3. catalogue-scoring throughput: ``benchmarks/eval_throughput.py`` when it exists (a HOOK until
   then: the row says so); it is called with ``--device``, ``--out`` and, for the dry run,
   ``--quick``.

``--device cpu`` is a dry run with tiny sizes (meta-batches 4 and 8, two inner steps, one timed
round; the ``gpu`` tests skip): it checks the script end to end in seconds, and its numbers are
not measurements. The default suite runs it (``tests/test_benchmarks_gpu_check.py``).

Run ``python benchmarks/gpu_check.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

EVAL_SCRIPT = Path(__file__).resolve().parent / "eval_throughput.py"
GPU_SIZES = (32, 256)  # meta-batches on CUDA
DRY_SIZES = (4, 8)  # the CPU dry run's stand-ins
DTYPES = ("float32", "bfloat16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--device",
        default="cuda",
        help="cuda (or cuda:i): the check; cpu: a dry run on tiny sizes (default cuda)",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=C.RESULTS / "gpu_check",
        help="rows and reports go here (default benchmarks/results/gpu_check/)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="steps that would start after this many seconds are skipped (default 450)",
    )
    p.add_argument(
        "--pytest-timeout-s",
        type=float,
        default=200.0,
        help="wall-clock limit of the pytest -m gpu step (default 200)",
    )
    p.add_argument(
        "--pytest-paths",
        nargs="*",
        default=None,
        help="test paths for pytest -m gpu (default: tests/; the dry run: tests/test_gpu.py)",
    )
    args = p.parse_args(argv)
    if not args.device.startswith(("cpu", "cuda")):
        p.error(f"--device {args.device!r}: pass cuda (the check) or cpu (a dry run)")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error(
                f"--device {args.device}: CUDA is not available (torch {torch.__version__}); run "
                "on a CUDA machine, or pass --device cpu for the dry run"
            )
    if args.budget_s <= 0:
        p.error(f"--budget-s {args.budget_s}: must be > 0 seconds; pass e.g. --budget-s 450")
    return args


def _pytest(args: argparse.Namespace, dry: bool) -> dict[str, Any]:
    """``pytest -m gpu`` in a subprocess; counts from its JUnit XML."""
    xml = args.out_dir / "pytest_gpu.xml"
    paths = args.pytest_paths or (["tests/test_gpu.py"] if dry else ["tests"])
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={xml}", *paths]
    try:
        res = subprocess.run(
            cmd, cwd=C.ROOT, capture_output=True, text=True, timeout=args.pytest_timeout_s
        )
    except subprocess.TimeoutExpired as e:
        (args.out_dir / "pytest_gpu.log").write_text(str(e.stdout or "") + str(e.stderr or ""))
        return {"status": "failed", "why": f"timed out after {args.pytest_timeout_s:.0f} s"}
    (args.out_dir / "pytest_gpu.log").write_text(res.stdout + res.stderr)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        if suite is not None:
            counts = {k: int(suite.get(k, 0)) for k in counts}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    # exit code 5: nothing collected; 0: all passed or skipped
    ok = res.returncode == 0 and counts["tests"] > 0
    return {
        "status": "passed" if ok else "failed",
        "returncode": res.returncode,
        "command": " ".join(cmd[1:]),
        **counts,
        "tail": res.stdout[-1500:] if not ok else "",
    }


def _engine(args: argparse.Namespace, dtype: str, tasks: int, dry: bool) -> dict[str, Any]:
    """One engine-throughput configuration, in process (``engine_throughput.main``)."""
    import engine_throughput

    out = args.out_dir / f"engine_{dtype}_T{tasks}.jsonl"
    out.unlink(missing_ok=True)
    argv = ["--device", args.device, "--dtype", dtype, "--tasks", str(tasks), "--out", str(out)]
    if dry:
        argv += ["--quick", "--data", "synthetic"]
    else:  # --no-memory: CUDA peak memory is measured in process, in the first timed round
        argv += ["--buckets", "1,2", "--no-memory"]
        argv += ["--warmup", "1", "--repeat", "3"] if tasks > 64 else ["--repeat", "5"]
    with contextlib.redirect_stdout(io.StringIO()):  # the report is written beside the rows
        rows = engine_throughput.main(argv)
    best = max(
        (r for r in rows if r["engine"].startswith("metarec")), key=lambda r: r["tasks_per_s"]
    )
    mem = best["peak_memory"].get("cuda_peak_delta_mib")
    return {
        "status": "passed",
        "dtype": dtype,
        "tasks": tasks,
        "rows": str(out.relative_to(C.ROOT)) if out.is_relative_to(C.ROOT) else str(out),
        "best_engine": f"{best['engine']}/buckets={best['buckets']}",
        "tasks_per_s": best["tasks_per_s"],
        "fraction_of_matmul_peak": best["fraction_of_limit"],
        "matmul_peak_gflops": best["matmul_peak_gflops"],
        "x_learn2learn": best["ratio_vs_learn2learn"],
        "x_loop": best["ratio_vs_loop"],
        "peak_memory_mib": mem,
        "learn2learn": best["learn2learn"],
        "data": best["data"],
    }


def _eval(args: argparse.Namespace, dry: bool, timeout: float) -> dict[str, Any]:
    """Catalogue-scoring throughput, when ``benchmarks/eval_throughput.py`` exists."""
    if not EVAL_SCRIPT.exists():
        return {
            "status": "hook",
            "why": "benchmarks/eval_throughput.py does not exist yet: catalogue scoring is not "
            "measured (this step calls it with --device, --out and, for the dry run, --quick)",
        }
    out = args.out_dir / "eval_throughput.jsonl"
    cmd = [sys.executable, str(EVAL_SCRIPT), "--device", args.device, "--out", str(out)]
    cmd += ["--quick"] if dry else []
    try:
        res = subprocess.run(cmd, cwd=C.ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "why": f"timed out after {timeout:.0f} s", "command": cmd}
    (args.out_dir / "eval_throughput.log").write_text(res.stdout + res.stderr)
    return {
        "status": "passed" if res.returncode == 0 else "failed",
        "returncode": res.returncode,
        "rows": str(out),
        "tail": res.stderr[-1500:] if res.returncode else "",
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    dry = args.device == "cpu"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if dry:
        import torch

        torch.set_num_threads(1)
    start = time.perf_counter()
    env = {**C.git_commit(), **C.device_info(args.device), "dry_run": dry, "time": C.stamp()}
    steps: list[tuple[str, Any]] = [("pytest -m gpu", lambda: _pytest(args, dry))]
    for dtype in DTYPES:
        for tasks in DRY_SIZES if dry else GPU_SIZES:
            steps.append(
                (f"engine {dtype} T={tasks}", lambda d=dtype, t=tasks: _engine(args, d, t, dry))
            )
    steps.append(
        (
            "catalogue scoring",
            lambda: _eval(args, dry, max(30.0, args.budget_s - (time.perf_counter() - start))),
        )
    )
    rows = []
    for name, run in steps:
        t0 = time.perf_counter()
        if t0 - start > args.budget_s:
            res = {"status": "skipped", "why": f"over the --budget-s {args.budget_s:.0f} s"}
        else:
            try:
                res = run()
            except (Exception, SystemExit) as e:  # one failing step does not stop the check
                res = {"status": "failed", "why": f"{type(e).__name__}: {e}"[:2000]}
        rows.append({"step": name, **res, "seconds": time.perf_counter() - t0, **env})
    C.write_jsonl(args.out_dir / "gpu_check.jsonl", rows)
    report = _render(rows, env, time.perf_counter() - start)
    (args.out_dir / "gpu_check.md").write_text(report)
    print(report)
    return rows


def _render(rows: list[dict[str, Any]], env: dict[str, Any], total: float) -> str:
    dev = env.get("gpu", env["cpu"])
    head = (
        f"GPU check ({env['time']}, commit {env['commit'][:12]}"
        f"{' + uncommitted changes' if env['dirty'] else ''}) on {env['device']} ({dev}), torch "
        f"{env['torch']}: {total:.0f} s"
    )
    if env["dry_run"]:
        head += " -- DRY RUN on CPU with tiny sizes: checks the script, its numbers are not measurements"
    steps = C.markdown_table(
        ["step", "status", "seconds", "detail"],
        [[r["step"], r["status"], f"{r['seconds']:.1f}", _detail(r)] for r in rows],
    )
    engine = [r for r in rows if r["step"].startswith("engine") and r["status"] == "passed"]
    table = C.markdown_table(
        [
            "dtype",
            "tasks",
            "best metarec engine",
            "tasks/s",
            "fraction of matmul peak",
            "matmul peak GFLOP/s",
            "x learn2learn",
            "peak memory MiB",
        ],
        [
            [
                r["dtype"],
                r["tasks"],
                r["best_engine"],
                f"{r['tasks_per_s']:.0f}",
                f"{100 * r['fraction_of_matmul_peak']:.2f}%",
                f"{r['matmul_peak_gflops']:.0f}",
                "-" if r["x_learn2learn"] is None else f"{r['x_learn2learn']:.1f}",
                "-" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.1f}",
            ]
            for r in engine
        ],
    )
    return "\n".join(
        [head, "", steps, "", "Engine throughput (second-order MAML, MeLU-size):", "", table, ""]
    )


def _detail(r: dict[str, Any]) -> str:
    if r["step"] == "pytest -m gpu" and "tests" in r:
        return f"{r['passed']} passed, {r['skipped']} skipped, {r['failures'] + r['errors']} failed"
    if r["status"] == "passed" and "tasks_per_s" in r:
        return f"{r['tasks_per_s']:.0f} tasks/s ({r['best_engine']}); rows {r['rows']}"
    return json.dumps(r.get("why", r.get("rows", "")))[:300]


if __name__ == "__main__":
    main()
