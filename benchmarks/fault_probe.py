"""Hostile-input and fault probe of the ``metarec`` command line, re-runnable.

Every case is a real CLI call (``python -m metarec ...`` in a subprocess, on small synthetic
CSV data in a temporary folder) and is classified as one of

* ``CLEAR ERROR``: exit status != 0, no traceback, the last stderr line is one
  ``metarec: error: ...`` line that names the argument, file or value (the case's keywords);
* ``CORRECT``: exit status 0 and the output checked (or the expected warning printed);
* ``TRACEBACK``: a Python traceback reached the user;
* ``SILENT WRONG``: exit status 0 but the output is wrong, empty or non-finite, or an error
  was expected;
* ``DATA LOSS``: a second writer corrupted a run;
* ``VAGUE ERROR`` (an error that is not one line or does not name the culprit),
  ``UNEXPECTED ERROR`` (a clear error where the call should have worked: a dead end),
  ``HANG`` (ran past its time limit) and ``SKIPPED`` (with the reason).

Writes ``benchmarks/results/fault_probe.md`` and ``fault_probe.jsonl`` (one row per case:
class, case, command, outcome, first line of the message). Usage::

    python benchmarks/fault_probe.py [--jobs 2] [--only SUBSTRING] [--out benchmarks/results]

The exit status is 1 when any case is TRACEBACK, SILENT WRONG, DATA LOSS, VAGUE ERROR,
UNEXPECTED ERROR or HANG.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
GOOD = ("CLEAR ERROR", "CORRECT", "SKIPPED")
BAD = ("TRACEBACK", "SILENT WRONG", "DATA LOSS", "VAGUE ERROR", "UNEXPECTED ERROR", "HANG")

SCENARIO = """name = "probe"

[data]
source = "csv"
path = "{path}"
{data_extra}
[protocol]
unit = "user"
split = "random"
fractions = [0.7, 0.1, 0.2]
n_support = 8
n_query = 8
min_interactions = 18
max_interactions = 200
seed = 0

[model]
name = "neumf"
embedding_dim = 8
hidden = [16]

[algorithm]
name = "maml"
inner_steps = 2
inner_lr = 0.05
meta_batch = 8

[train]
steps = {steps}
outer_lr = 0.003
val_every = 3
val_tasks = 16
checkpoint_every = 3
seed = 0
progress = false
"""

# fault injection for the disk-error cases: the n-th atomic replace fails with this errno
_FAULT = """
import errno, os, sys
n_ok, code = int(sys.argv.pop(1)), getattr(errno, sys.argv.pop(1))
real, count = os.replace, [0]
def failing(a, b, *k, **kw):
    count[0] += 1
    if count[0] > n_ok:
        raise OSError(code, os.strerror(code), str(b))
    return real(a, b, *k, **kw)
os.replace = failing
from metarec.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


# ------------------------------------------------------------------ data and calls
def write_csv(
    path: Path,
    *,
    n_users: int = 40,
    n_items: int = 60,
    per_user: int = 22,
    seed: int = 0,
    sep: str = ",",
    rename: dict[str, str] | None = None,
    extra_rows: str = "",
    numeric: bool = False,
) -> None:
    """Ratings 1..5 of ``n_users`` users (ids ``u0``..; plus users ``1``, ``01``, ``001``; with
    ``numeric``: ids ``100``.. only) with timestamps; each user rates ``per_user`` distinct items."""
    import numpy as np

    rng = np.random.default_rng(seed)
    users = (
        [str(100 + i) for i in range(n_users)]
        if numeric
        else [f"u{i}" for i in range(n_users)] + ["1", "01", "001"]
    )
    lines = [sep.join(["user", "item", "rating", "timestamp"])]
    t = 1_700_000_000
    for j, u in enumerate(users):
        bias = (j % 5) - 2
        for it in rng.choice(n_items, size=per_user, replace=False):
            r = int(np.clip(round(3 + 0.6 * bias + (it % 3 - 1) + rng.normal(0, 0.7)), 1, 5))
            uid = (rename or {}).get(u, u)
            lines.append(sep.join([uid, f"i{it}", str(r), str(t)]))
            t += 1
    path.write_text("\n".join(lines) + "\n" + extra_rows)


def write_scenario(
    folder: Path, *, path: str = "data.csv", steps: int = 6, data_extra: str = ""
) -> Path:
    p = folder / "scenario.toml"
    p.write_text(SCENARIO.format(path=path, steps=steps, data_extra=data_extra))
    return p


@dataclass
class Proc:
    cmd: list[str]
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err

    def shown(self) -> str:
        return " ".join(a if a and " " not in a else repr(a) for a in ["python", *self.cmd[1:]])


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "default",
    }


def call(
    args: list[str], cwd: Path, *, timeout: float = 240, prefix: list[str] | None = None
) -> Proc:
    cmd = [PY, *(prefix or ["-m", "metarec"]), *args]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
        return Proc(cmd, r.returncode, r.stdout, r.stderr, time.perf_counter() - t0)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Proc(cmd, 124, out, err, time.perf_counter() - t0)


def train_args(*sets: str, out: str = "run", extra: tuple[str, ...] = ()) -> list[str]:
    return ["train", "scenario.toml", "--out", out, *extra, *sum((["--set", s] for s in sets), [])]


# ------------------------------------------------------------------ classification
@dataclass
class Row:
    cls: str
    case: str
    command: str
    outcome: str
    message: str
    seconds: float = 0.0
    detail: str = ""


def _error_line(p: Proc) -> str:
    lines = [ln for ln in p.err.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _first(p: Proc) -> str:
    line = _error_line(p) if p.rc else (p.out.strip().splitlines() or [""])[0]
    return line[:300]


def judge_error(p: Proc, *words: str) -> tuple[str, str]:
    """(outcome, detail) of a call that should fail clearly, naming ``words``."""
    if "Traceback (most recent call last)" in p.text:
        return "TRACEBACK", _tb(p)
    if p.rc == 124:
        return "HANG", f"ran past {p.seconds:.0f} s"
    if p.rc == 0:
        return "SILENT WRONG", "exit status 0; a clear error was expected"
    line = _error_line(p)
    if not line.startswith("metarec: error:"):
        return "VAGUE ERROR", f"last stderr line is not one metarec error line: {line[:200]!r}"
    missing = [w for w in words if w.lower() not in line.lower()]
    if missing:
        return "VAGUE ERROR", f"the message does not name {missing}"
    return "CLEAR ERROR", ""


def judge_ok(p: Proc, check: Callable[[], str | None] | None = None) -> tuple[str, str]:
    """(outcome, detail) of a call that should work; ``check()`` returns what is wrong, or None."""
    if "Traceback (most recent call last)" in p.text:
        return "TRACEBACK", _tb(p)
    if p.rc == 124:
        return "HANG", f"ran past {p.seconds:.0f} s"
    if p.rc != 0:
        return "UNEXPECTED ERROR", _error_line(p)[:300]
    wrong = check() if check is not None else None
    return ("SILENT WRONG", wrong) if wrong else ("CORRECT", "")


def _tb(p: Proc) -> str:
    lines = [ln for ln in p.text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


# ------------------------------------------------------------------ the cases
@dataclass
class Case:
    cls: str
    name: str
    fn: Callable[[Path, Path], tuple[Proc, str, str]]  # (folder, base) -> (call, outcome, detail)
    needs_base: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


CASES: list[Case] = []


def case(cls: str, name: str, *, base: bool = False):
    def deco(fn):
        CASES.append(Case(cls, name, fn, base))
        return fn

    return deco


def fresh(folder: Path, **csv: Any) -> None:
    write_csv(folder / "data.csv", **csv)
    write_scenario(folder)


def from_base(folder: Path, base: Path) -> None:
    for name in ("data.csv", "scenario.toml"):
        shutil.copy(base / name, folder / name)
    shutil.copytree(base / "run", folder / "run")


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _log_steps(run: Path) -> list[int]:
    return [
        json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()
    ]


def _support(folder: Path, rows: list[tuple[str, str, float]], name: str = "support.csv") -> Path:
    p = folder / name
    p.write_text("user,item,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in rows))
    return p


def _items(base: Path, n: int) -> list[str]:
    return [str(x) for x in _json(base / "run" / "encoders.json")["item_ids"]["values"][:n]]


def _recommend_ok(p: Proc) -> str | None:
    try:
        obj = json.loads(p.out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"no JSON object on stdout: {p.out[:200]!r}"
    items = obj.get("items") or []
    if not items:
        return "empty recommendation list"
    if not all(
        isinstance(x.get("score"), (int, float)) and math.isfinite(x["score"]) for x in items
    ):
        return "non-finite scores"
    return None


# --- data loss ----------------------------------------------------------------
@case("data loss", "two trains on one --out at once")
def _two_trains(folder: Path, base: Path):
    fresh(folder)
    args = train_args("train.steps=60", "train.checkpoint_every=10", "train.val_every=30")
    first = subprocess.Popen(
        [PY, "-m", "metarec", *args],
        cwd=folder,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = folder / "run" / ".metarec.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = call(args, folder)
    out1, err1 = first.communicate(timeout=300)
    p1 = Proc(first.args, first.returncode, out1, err1, 0.0)
    steps = _log_steps(folder / "run") if (folder / "run" / "metrics.jsonl").exists() else []
    if first.returncode == 0 and second.rc == 0:
        return second, "DATA LOSS", "both writers exited 0"
    if steps != list(range(1, 61)):
        return (
            second,
            "DATA LOSS",
            f"metrics.jsonl steps are not 1..60 once each ({len(steps)} rows)",
        )
    if p1.rc != 0:
        return p1, "UNEXPECTED ERROR", _error_line(p1)
    return (second, *judge_error(second, "in use by", "pid"))


# --- silently wrong output ------------------------------------------------------
@case("silent wrong", "recommend --lr 1e30 with a support set", base=True)
def _lr_huge(folder: Path, base: Path):
    items = _items(base, 4)
    s = _support(folder, [("new", items[0], 5), ("new", items[1], 1), ("new", items[2], 4)])
    p = call(
        [
            "recommend",
            "--run",
            str(base / "run"),
            "--user",
            "new",
            "--support",
            str(s),
            "--lr",
            "1e30",
            "--json",
        ],
        folder,
    )
    return (p, *judge_error(p, "--lr", "diverge"))


@case("silent wrong", "recommend --lr 1e30 --on-diverge fallback", base=True)
def _lr_huge_fallback(folder: Path, base: Path):
    items = _items(base, 4)
    s = _support(folder, [("new", items[0], 5), ("new", items[1], 1), ("new", items[2], 4)])
    p = call(
        [
            "recommend",
            "--run",
            str(base / "run"),
            "--user",
            "new",
            "--support",
            str(s),
            "--lr",
            "1e30",
            "--on-diverge",
            "fallback",
            "--json",
        ],
        folder,
    )
    return (p, *judge_ok(p, lambda: _recommend_ok(p)))


def _rewrite_best(run: Path, fn: Callable[[dict], None]) -> None:
    code = (
        "import sys\nfrom metarec.runs.checkpoint import load_tensors, save_tensors\n"
        "ck = load_tensors(sys.argv[1])\n" + fn.__doc__ + "\nsave_tensors(sys.argv[1], ck)\n"
    )
    subprocess.run([PY, "-c", code, str(run / "checkpoints" / "best.pt")], env=env(), check=True)


def _nan_weights(ck: dict) -> None:
    """k = sorted(ck["params"])[0]; ck["params"][k].fill_(float("nan"))"""


@case("silent wrong", "NaN in a checkpoint (checksum updated)", base=True)
def _nan_ck(folder: Path, base: Path):
    from_base(folder, base)
    _rewrite_best(folder / "run", _nan_weights)
    p = call(["recommend", "--run", "run", "--user", "u1", "--json"], folder)
    return (p, *judge_error(p, "finite"))


def _edit_config(run: Path, section: str, key: str, value: Any) -> None:
    cfg = _json(run / "config.json")
    cfg[section][key] = value
    (run / "config.json").write_text(json.dumps(cfg))


@case("silent wrong", "eval_lr=1e30 in a run's config.json", base=True)
def _eval_lr(folder: Path, base: Path):
    from_base(folder, base)
    _edit_config(folder / "run", "algorithm", "eval_lr", 1e30)
    items = _items(base, 3)
    s = _support(folder, [("new", items[0], 5), ("new", items[1], 1)])
    p = call(["recommend", "--run", "run", "--user", "new", "--support", str(s), "--json"], folder)
    return (p, *judge_error(p, "lr=1e+30", "--lr"))


@case("silent wrong", "ids 1 / 01 / 001 stay three users", base=True)
def _ids(folder: Path, base: Path):
    users = [str(u) for u in _json(base / "run" / "encoders.json")["user_ids"]["values"]]
    p = Proc(["python", "-m", "metarec", *train_args()], 0, "", "", 0.0)
    bad = (
        None
        if {"1", "01", "001"} <= set(users)
        else f"encoders hold {sorted(set(users) & {'1', '01', '001'})}"
    )
    return (p, *judge_ok(p, lambda: bad))


def _resume_changed(folder: Path, base: Path, change: str):
    from_base(folder, base)
    if change == "renamed":
        write_csv(folder / "data.csv", rename={"u0": "renamed0", "u1": "renamed1"})
    else:
        with (folder / "data.csv").open("a") as f:
            f.write("u0,i999,4,1800000000\nu2,i998,3,1800000001\n")
    p = call(train_args("train.steps=9", extra=("--resume",)), folder)
    return (p, *judge_error(p, "--resume", "differ", "renamed" if change == "renamed" else "added"))


@case("silent wrong", "--resume after the ids were renamed", base=True)
def _resume_renamed(folder: Path, base: Path):
    return _resume_changed(folder, base, "renamed")


@case("silent wrong", "--resume after rows were added", base=True)
def _resume_added(folder: Path, base: Path):
    return _resume_changed(folder, base, "added")


def _inspect_ts(folder: Path, value: str):
    write_csv(folder / "data.csv", extra_rows=f"u0,i59,3,{value}\n")
    write_scenario(folder, data_extra='columns = { timestamp = "timestamp" }\n')
    p = call(["tasks", "inspect", "scenario.toml"], folder)
    return (p, *judge_error(p, "timestamp", "row"))


@case("silent wrong", "timestamp 1.7", base=False)
def _ts_frac(folder: Path, base: Path):
    return _inspect_ts(folder, "1.7")


@case("silent wrong", "timestamp 1e30", base=False)
def _ts_huge(folder: Path, base: Path):
    return _inspect_ts(folder, "1e30")


@case("silent wrong", "columns user=item (one column, two roles)")
def _two_roles(folder: Path, base: Path):
    fresh(folder)
    p = call(["tasks", "inspect", "scenario.toml", "--set", "data.columns.item=user"], folder)
    return (p, *judge_error(p, "two roles"))


@case("silent wrong", "metrics.names typo")
def _metric_typo(folder: Path, base: Path):
    fresh(folder)
    p = call(
        ["tasks", "inspect", "scenario.toml", "--set", 'metrics.names=["mae", "ndgc@10"]'], folder
    )
    return (p, *judge_error(p, "ndgc@10", "ndcg@10"))


@case("silent wrong", "metrics.names honoured in train output")
def _metric_names(folder: Path, base: Path):
    fresh(folder)
    p = call(train_args('metrics.names=["mae", "ndcg@5"]'), folder)

    def check():
        vals = [
            r["val"]
            for r in map(json.loads, (folder / "run" / "metrics.jsonl").read_text().splitlines())
            if "val" in r
        ]
        keys = {k for v in vals for k in v if k not in ("n_tasks", "adapt_ms_per_task")}
        return None if keys == {"mae", "ndcg@5"} else f"metrics.jsonl reports {sorted(keys)}"

    return (p, *judge_ok(p, check))


@case("silent wrong", "a support set rating one item 3 times warns", base=True)
def _dup_support(folder: Path, base: Path):
    items = _items(base, 3)
    s = _support(
        folder,
        [("new", items[0], 5), ("new", items[0], 4), ("new", items[0], 5), ("new", items[1], 2)],
    )
    p = call(
        ["recommend", "--run", str(base / "run"), "--user", "new", "--support", str(s), "--json"],
        folder,
    )
    return (
        p,
        *judge_ok(
            p,
            lambda: (
                None
                if "3 times" in p.err or "3 rows" in p.err or " 3 " in p.err
                else f"no warning naming the count on stderr: {p.err[:200]!r}"
            ),
        ),
    )


@case("silent wrong", "algorithm.inner_steps=1000000")
def _inner_huge(folder: Path, base: Path):
    fresh(folder)
    p = call(train_args("algorithm.inner_steps=1000000"), folder, timeout=120)
    return (p, *judge_error(p, "inner_steps"))


@case("silent wrong", "recommend --steps 100000000", base=True)
def _steps_huge(folder: Path, base: Path):
    items = _items(base, 3)
    s = _support(folder, [("new", items[0], 5), ("new", items[1], 1)])
    p = call(
        [
            "recommend",
            "--run",
            str(base / "run"),
            "--user",
            "new",
            "--support",
            str(s),
            "--steps",
            "100000000",
            "--json",
        ],
        folder,
        timeout=120,
    )
    return (p, *judge_error(p, "--steps"))


@case("silent wrong", "eval_steps=100000000 in a run's config.json", base=True)
def _eval_steps(folder: Path, base: Path):
    from_base(folder, base)
    _edit_config(folder / "run", "algorithm", "eval_steps", 100000000)
    items = _items(base, 3)
    s = _support(folder, [("new", items[0], 5), ("new", items[1], 1)])
    p = call(
        ["recommend", "--run", "run", "--user", "new", "--support", str(s), "--json"],
        folder,
        timeout=120,
    )
    return (p, *judge_error(p, "steps"))


@case("silent wrong", "a flipped byte in best.pt", base=True)
def _flip(folder: Path, base: Path):
    from_base(folder, base)
    f = folder / "run" / "checkpoints" / "best.pt"
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x01
    f.write_bytes(bytes(b))
    p = call(["recommend", "--run", "run", "--user", "u1", "--json"], folder)
    return (p, *judge_error(p, "best.pt"))


@case("silent wrong", "recommend for a known user is finite and non-empty", base=True)
def _known(folder: Path, base: Path):
    p = call(
        ["recommend", "--run", str(base / "run"), "--user", "u3", "--k", "5", "--json"], folder
    )
    return (p, *judge_ok(p, lambda: _recommend_ok(p)))


# --- dead ends ------------------------------------------------------------------
@case("dead end", "kill -9 before the first checkpoint, then --resume")
def _kill_early(folder: Path, base: Path):
    fresh(folder)
    args = train_args("train.steps=400", "train.checkpoint_every=400", "train.val_every=400")
    proc = subprocess.Popen(
        [PY, "-m", "metarec", *args],
        cwd=folder,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = folder / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while (
        (not log.exists() or log.stat().st_size == 0)
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    p = call(
        train_args(
            "train.steps=6",
            "train.checkpoint_every=400",
            "train.val_every=400",
            extra=("--resume",),
        ),
        folder,
    )
    return (
        p,
        *judge_ok(
            p,
            lambda: (
                None
                if _log_steps(folder / "run") == list(range(1, 7))
                else f"metrics.jsonl steps {_log_steps(folder / 'run')}"
            ),
        ),
    )


@case("dead end", "train.steps=0")
def _steps0(folder: Path, base: Path):
    fresh(folder)
    p = call(train_args("train.steps=0"), folder)
    return (p, *judge_error(p, "train.steps"))


@case("dead end", "divergence at the first validation, then --overwrite")
def _diverge(folder: Path, base: Path):
    fresh(folder)
    first = call(train_args("algorithm.inner_lr=1e30"), folder)
    if "Traceback (most recent call last)" in first.text:
        return (first, "TRACEBACK", _tb(first))
    p = call(train_args(extra=("--overwrite",)), folder)
    return (
        p,
        *judge_ok(
            p,
            lambda: (
                None if (folder / "run" / "checkpoints" / "last.pt").is_file() else "no last.pt"
            ),
        ),
    )


@case("dead end", "diverged run: --resume is possible or clearly refused")
def _diverge_resume(folder: Path, base: Path):
    fresh(folder)
    first = call(train_args("algorithm.inner_lr=1e30", "train.steps=3"), folder)
    if "Traceback (most recent call last)" in first.text:
        return (first, "TRACEBACK", _tb(first))
    p = call(train_args("algorithm.inner_lr=1e30", "train.steps=6", extra=("--resume",)), folder)
    if p.rc == 0:
        return (
            p,
            *judge_ok(
                p,
                lambda: (
                    None if _log_steps(folder / "run")[-1] == 6 else "log does not reach step 6"
                ),
            ),
        )
    return (p, *judge_error(p, "diverge", "inner_lr"))


@case("dead end", "orphan .tmp files are removed on --resume", base=True)
def _orphans(folder: Path, base: Path):
    from_base(folder, base)
    orphan = folder / "run" / "checkpoints" / ".last.pt.abc123.tmp"
    orphan.write_bytes(b"partial")
    p = call(train_args("train.steps=9", extra=("--resume",)), folder)
    return (p, *judge_ok(p, lambda: "orphan still there" if orphan.exists() else None))


@case("dead end", "train twice on one --out suggests --overwrite, which works")
def _overwrite(folder: Path, base: Path):
    fresh(folder)
    call(train_args("train.steps=3"), folder)
    p = call(train_args("train.steps=3"), folder)
    out, detail = judge_error(p, "--overwrite")
    if out != "CLEAR ERROR":
        return p, out, detail
    q = call(train_args("train.steps=3", extra=("--overwrite",)), folder)
    return (q, *judge_ok(q))


# --- file boundary ----------------------------------------------------------------
def _inspect_file(folder: Path, name: str, content: bytes, *words: str, data_extra: str = ""):
    (folder / name).write_bytes(content)
    write_scenario(folder, path=name, data_extra=data_extra)
    p = call(["tasks", "inspect", "scenario.toml"], folder)
    return (p, *judge_error(p, name, *words))


@case("file boundary", "corrupt .csv.gz")
def _gz(folder: Path, base: Path):
    good = gzip.compress(b"user,item,rating\nu1,i1,4\n" * 50)
    return _inspect_file(folder, "data.csv.gz", good[: len(good) // 2] + b"\x00garbage")


@case("file boundary", "not gzip at all, named .csv.gz")
def _gz_plain(folder: Path, base: Path):
    return _inspect_file(folder, "data.csv.gz", b"user,item,rating\nu1,i1,4\n")


@case("file boundary", "corrupt Parquet")
def _parquet(folder: Path, base: Path):
    return _inspect_file(folder, "data.parquet", b"PAR1" + os.urandom(300) + b"PAR1")


@case("file boundary", "truncated Parquet")
def _parquet_trunc(folder: Path, base: Path):
    import pandas as pd

    pd.DataFrame(
        {"user": ["a"] * 40, "item": [f"i{i}" for i in range(40)], "rating": [3.0] * 40}
    ).to_parquet(folder / "full.parquet")
    data = (folder / "full.parquet").read_bytes()
    return _inspect_file(folder, "data.parquet", data[: len(data) // 2])


@case("file boundary", "ids above int64 with data.ids=numeric")
def _int64(folder: Path, base: Path):
    write_csv(
        folder / "data.csv", numeric=True, extra_rows="99999999999999999999999,i1,4,1800000000\n"
    )
    write_scenario(folder, data_extra='ids = "numeric"\n')
    p = call(["tasks", "inspect", "scenario.toml"], folder)
    return (p, *judge_error(p, "99999999999999999999999"))


@case("file boundary", "ids above int64 as strings (default) load")
def _int64_str(folder: Path, base: Path):
    write_csv(
        folder / "data.csv",
        extra_rows="".join(f"99999999999999999999999,i{i},4,1800000000\n" for i in range(20)),
    )
    write_scenario(folder)
    p = call(["tasks", "inspect", "scenario.toml", "--json"], folder)
    return (p, *judge_ok(p))


@case("file boundary", "truncated best.pt (checksum file removed)", base=True)
def _trunc_ck(folder: Path, base: Path):
    from_base(folder, base)
    f = folder / "run" / "checkpoints" / "best.pt"
    f.write_bytes(f.read_bytes()[:200])
    for s in folder.glob("run/checkpoints/best.pt.sha256"):
        s.unlink()
    p = call(["recommend", "--run", "run", "--user", "u1", "--json"], folder)
    return (p, *judge_error(p, "best.pt"))


@case("file boundary", "truncated last.pt on --resume", base=True)
def _trunc_last(folder: Path, base: Path):
    from_base(folder, base)
    f = folder / "run" / "checkpoints" / "last.pt"
    f.write_bytes(f.read_bytes()[:300])
    p = call(train_args("train.steps=9", extra=("--resume",)), folder)
    return (p, *judge_error(p, "last.pt"))


@case("file boundary", "out-of-range feature codes in features.pt", base=True)
def _codes(folder: Path, base: Path):
    from_base(folder, base)
    code = (
        "import sys, torch\nfrom metarec.runs.checkpoint import load_tensors, save_tensors\n"
        "f = load_tensors(sys.argv[1])\n"
        "def bump(x):\n"
        "    if isinstance(x, dict):\n        return {k: bump(v) for k, v in x.items()}\n"
        "    if isinstance(x, torch.Tensor) and not x.is_floating_point() and x.numel():\n"
        "        return x + 10**6\n"
        "    return x\n"
        "save_tensors(sys.argv[1], bump(f))\n"
    )
    path = folder / "run" / "features.pt"
    if not path.exists():
        return Proc([], 0, "", "", 0.0), "SKIPPED", "this run has no features.pt (no side features)"
    subprocess.run([PY, "-c", code, str(path)], env=env(), check=True)
    p = call(["recommend", "--run", "run", "--user", "u1", "--json"], folder)
    if p.rc == 0:
        return (p, *judge_ok(p, lambda: _recommend_ok(p)))  # nothing to bump: still right
    return (p, *judge_error(p, "features"))


@case("file boundary", "config.json that is not an object", base=True)
def _json_list(folder: Path, base: Path):
    from_base(folder, base)
    (folder / "run" / "config.json").write_text("[1, 2, 3]")
    p = call(["recommend", "--run", "run", "--user", "u1", "--json"], folder)
    return (p, *judge_error(p, "config.json"))


@case("file boundary", "manifest.json that is not JSON", base=True)
def _manifest_bad(folder: Path, base: Path):
    from_base(folder, base)
    (folder / "run" / "manifest.json").write_text("{not json")
    p = call(["recommend", "--run", "run", "--user", "u1", "--json"], folder)
    return (p, *judge_error(p, "manifest.json"))


@case("file boundary", "scenario TOML with a syntax error")
def _toml_bad(folder: Path, base: Path):
    (folder / "scenario.toml").write_text("[data\nsource = 'csv'\n")
    p = call(["tasks", "inspect", "scenario.toml"], folder)
    return (p, *judge_error(p, "scenario.toml"))


@case("file boundary", "--out is a file")
def _out_file(folder: Path, base: Path):
    fresh(folder)
    (folder / "run").write_text("x")
    p = call(train_args(), folder)
    return (p, *judge_error(p, "--out", "is a file"))


@case("file boundary", "data fetch --root is a file")
def _root_file(folder: Path, base: Path):
    (folder / "root").write_text("x")
    p = call(["data", "fetch", "movielens-100k", "--root", "root"], folder, timeout=60)
    return (p, *judge_error(p, "root"))


@case("file boundary", "bench --out is a file")
def _bench_out(folder: Path, base: Path):
    fresh(folder)
    (folder / "b").write_text("x")
    p = call(
        ["bench", "scenario.toml", "--out", "b", "--algorithms", "global", "--seeds", "1"], folder
    )
    return (p, *judge_error(p, "--out"))


@case("file boundary", "train.seed=-1")
def _seed(folder: Path, base: Path):
    fresh(folder)
    p = call(train_args("train.seed=-1"), folder)
    return (p, *judge_error(p, "seed"))


@case("file boundary", "train.device=tpu")
def _device(folder: Path, base: Path):
    fresh(folder)
    p = call(train_args("train.device=tpu"), folder)
    return (p, *judge_error(p, "device", "tpu"))


@case("file boundary", "partial last line of metrics.jsonl on --resume", base=True)
def _partial_log(folder: Path, base: Path):
    from_base(folder, base)
    with (folder / "run" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "lo')
    p = call(train_args("train.steps=9", extra=("--resume",)), folder)
    return (
        p,
        *judge_ok(
            p,
            lambda: (
                None
                if _log_steps(folder / "run") == list(range(1, 10))
                else f"steps {_log_steps(folder / 'run')}"
            ),
        ),
    )


def _disk_fault(folder: Path, code: str):
    fresh(folder)
    p = call(["3", code, *train_args("train.steps=9")], folder, prefix=["-c", _FAULT])
    out, detail = judge_error(p, "training stopped", "--resume")
    if out != "CLEAR ERROR":
        return p, out, detail
    q = call(train_args("train.steps=9", extra=("--resume",)), folder)
    return (
        (
            q,
            *judge_ok(
                q,
                lambda: (
                    None
                    if _log_steps(folder / "run") == list(range(1, 10))
                    else f"steps {_log_steps(folder / 'run')}"
                ),
            ),
        )
        if q.rc == 0
        else (q, *judge_ok(q))
    )


@case("file boundary", "PermissionError during training, then --resume")
def _perm(folder: Path, base: Path):
    return _disk_fault(folder, "EACCES")


@case("file boundary", "ENOSPC during training, then --resume")
def _enospc(folder: Path, base: Path):
    return _disk_fault(folder, "ENOSPC")


@case("file boundary", "read-only run folder (chmod) during --resume", base=True)
def _readonly(folder: Path, base: Path):
    if os.geteuid() == 0:
        return (
            Proc([], 0, "", "", 0.0),
            "SKIPPED",
            "running as root: chmod does not stop root's writes (the EACCES case injects the error instead)",
        )
    from_base(folder, base)
    os.chmod(folder / "run" / "checkpoints", 0o555)
    try:
        p = call(train_args("train.steps=9", extra=("--resume",)), folder)
    finally:
        os.chmod(folder / "run" / "checkpoints", 0o755)
    return (p, *judge_error(p, "--resume"))


@case("file boundary", "a code-executing pickle as best.pt", base=True)
def _pickle(folder: Path, base: Path):
    from_base(folder, base)
    code = (
        "import os, pickle, sys\n"
        "class E:\n    def __reduce__(self):\n        return (os.system, ('touch PWNED',))\n"
        "with open(sys.argv[1], 'wb') as f:\n    f.write(pickle.dumps(E()))\n"
    )
    f = folder / "run" / "checkpoints" / "best.pt"
    subprocess.run([PY, "-c", code, str(f)], env=env(), check=True)
    for s in folder.glob("run/checkpoints/best.pt.sha256"):
        s.unlink()
    p = call(["recommend", "--run", "run", "--user", "u1", "--json"], folder)
    if (folder / "PWNED").exists():
        return p, "SILENT WRONG", "the pickle ran code"
    return (p, *judge_error(p, "best.pt"))


@case("file boundary", "rating NaN in the CSV")
def _nan_rating(folder: Path, base: Path):
    write_csv(folder / "data.csv", extra_rows="u0,i59,nan,1800000000\n")
    write_scenario(folder)
    p = call(["tasks", "inspect", "scenario.toml"], folder)
    return (p, *judge_error(p, "rating"))


@case("file boundary", "header-only CSV")
def _empty_csv(folder: Path, base: Path):
    return _inspect_file(folder, "data.csv", b"user,item,rating\n")


@case("file boundary", "missing data file")
def _missing(folder: Path, base: Path):
    write_scenario(folder, path="nowhere.csv")
    p = call(["tasks", "inspect", "scenario.toml"], folder)
    return (p, *judge_error(p, "nowhere.csv"))


@case("file boundary", "recommend --run on a folder with no run")
def _no_run(folder: Path, base: Path):
    (folder / "empty").mkdir()
    p = call(["recommend", "--run", "empty", "--user", "u1"], folder)
    return (p, *judge_error(p, "empty"))


@case("file boundary", "support CSV without a rating column", base=True)
def _support_cols(folder: Path, base: Path):
    (folder / "s.csv").write_text("user,item\nnew,i1\n")
    p = call(
        ["recommend", "--run", str(base / "run"), "--user", "new", "--support", "s.csv"], folder
    )
    return (p, *judge_error(p, "s.csv", "rating"))


@case("file boundary", "recommend --k 0", base=True)
def _k0(folder: Path, base: Path):
    p = call(["recommend", "--run", str(base / "run"), "--user", "u1", "--k", "0"], folder)
    return (p, *judge_error(p, "k"))


@case("file boundary", "unknown --set key")
def _unknown_key(folder: Path, base: Path):
    fresh(folder)
    p = call(train_args("train.stpes=3"), folder)
    return (p, *judge_error(p, "stpes", "steps"))


@case("file boundary", "--set value of the wrong type")
def _wrong_type(folder: Path, base: Path):
    fresh(folder)
    p = call(train_args("train.steps=abc"), folder)
    return (p, *judge_error(p, "train.steps", "abc"))


# --- fixes the CLI can apply ------------------------------------------------------
@case("fix reachable", "duplicate rows: the suggested duplicates option works")
def _dups(folder: Path, base: Path):
    write_csv(folder / "data.csv", extra_rows="u0,i0,4,1800000000\nu0,i0,2,1800000001\n")
    # u0 may not have rated i0: make the pair repeat for sure
    write_scenario(folder)
    p = call(["tasks", "inspect", "scenario.toml"], folder)
    out, detail = judge_error(p, "duplicates")
    if out != "CLEAR ERROR":
        return p, out, detail
    if "--set data.duplicates" not in p.err and "duplicates =" not in p.err:
        return p, "VAGUE ERROR", "the message does not show a --set or scenario form of the fix"
    q = call(["tasks", "inspect", "scenario.toml", "--set", "data.duplicates=mean"], folder)
    return (q, *judge_ok(q))


@case("fix reachable", "unknown support item: --unknown-items fallback works", base=True)
def _unknown_items(folder: Path, base: Path):
    items = _items(base, 2)
    s = _support(folder, [("new", items[0], 5), ("new", "no-such-item", 4)])
    args = ["recommend", "--run", str(base / "run"), "--user", "new", "--support", str(s), "--json"]
    p = call(args, folder)
    out, detail = judge_error(p, "--unknown-items")
    if out != "CLEAR ERROR":
        return p, out, detail
    q = call([*args, "--unknown-items", "fallback"], folder)
    return (q, *judge_ok(q, lambda: _recommend_ok(q)))


@case("fix reachable", "adapt --out twice suggests --overwrite, which works", base=True)
def _adapt_overwrite(folder: Path, base: Path):
    items = _items(base, 3)
    s = _support(folder, [("new", items[0], 5), ("new", items[1], 1)])
    args = ["adapt", "--run", str(base / "run"), "--support", str(s), "--out", "adapted"]
    call(args, folder)
    p = call(args, folder)
    out, detail = judge_error(p, "--overwrite")
    if out != "CLEAR ERROR":
        return p, out, detail
    q = call([*args, "--overwrite"], folder)
    return (q, *judge_ok(q))


def _sep_case(folder: Path, sep: str):
    write_csv(folder / "data.csv", sep=sep)
    write_scenario(folder)
    p = call(["tasks", "inspect", "scenario.toml", "--json"], folder)
    if p.rc == 0:
        return (p, *judge_ok(p))  # sniffed correctly
    return (p, *judge_error(p, "separator"))


@case("fix reachable", "';'-separated file")
def _semicolon(folder: Path, base: Path):
    return _sep_case(folder, ";")


@case("fix reachable", "tab-separated file named .csv")
def _tab(folder: Path, base: Path):
    return _sep_case(folder, "\t")


@case("fix reachable", "epoch timestamps stored as strings (Parquet)")
def _ts_string(folder: Path, base: Path):
    import pandas as pd

    write_csv(folder / "data.csv")
    df = pd.read_csv(folder / "data.csv", dtype=str)
    df.to_parquet(folder / "data.parquet")
    write_scenario(folder, path="data.parquet")
    p = call(["tasks", "inspect", "scenario.toml", "--json"], folder)
    return (p, *judge_ok(p))


@case("fix reachable", "scenario file that does not exist")
def _no_scenario(folder: Path, base: Path):
    p = call(["train", "nosuch.toml", "--out", "run"], folder)
    return (p, *judge_error(p, "nosuch.toml"))


# ------------------------------------------------------------------ driver
def build_base(root: Path) -> Path:
    base = root / "base"
    base.mkdir()
    fresh(base)
    p = call(train_args(), base)
    if p.rc != 0:
        raise SystemExit(f"fault_probe: the base run failed:\n{p.err}")
    return base


def run_case(c: Case, root: Path, base: Path | None, i: int) -> Row:
    folder = root / f"case{i:02d}"
    folder.mkdir()
    t0 = time.perf_counter()
    try:
        p, outcome, detail = c.fn(folder, base if base is not None else root)
    except Exception as e:  # noqa: BLE001 - a probe that itself failed is reported, not hidden
        return Row(
            c.cls,
            c.name,
            "",
            "PROBE FAILED",
            f"{type(e).__name__}: {e}"[:300],
            time.perf_counter() - t0,
        )
    msg = _first(p) if p.cmd else ""
    return Row(
        c.cls,
        c.name,
        p.shown() if p.cmd else "",
        outcome,
        msg,
        round(time.perf_counter() - t0, 1),
        detail,
    )


def write(
    rows: list[Row],
    out: Path,
    seconds: float,
    name: str = "fault_probe",
    title: str = "Fault probe",
) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    jl = out / f"{name}.jsonl"
    jl.write_text(
        "".join(
            json.dumps(
                {
                    "class": r.cls,
                    "case": r.case,
                    "command": r.command,
                    "outcome": r.outcome,
                    "message": r.message,
                    "detail": r.detail,
                    "seconds": r.seconds,
                }
            )
            + "\n"
            for r in rows
        )
    )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    md = [
        f"# {title}",
        "",
        f"`python benchmarks/{name}.py` at commit {commit or 'unknown'}: {len(rows)} cases in "
        f"{seconds:.0f} s. Every case is a real `python -m metarec ...` call (or a real server) on small "
        "synthetic CSV data.",
        "",
        "| outcome | cases |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in sorted(counts.items())],
        "",
        "| class | case | outcome | message (first line) | detail |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        esc = [
            x.replace("|", "\\|").replace("\n", " ")
            for x in (r.cls, r.case, r.outcome, r.message, r.detail)
        ]
        md.append("| " + " | ".join(esc[:3]) + f" | `{esc[3]}` | {esc[4]} |")
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    return jl, out / f"{name}.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="cases run side by side (default 2)")
    ap.add_argument(
        "--only", help="comma-separated: run only the cases whose name contains one of these"
    )
    ap.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results"), help="folder of the report"
    )
    args = ap.parse_args(argv)
    want = [w.strip().lower() for w in (args.only or "").split(",") if w.strip()]
    cases = [c for c in CASES if not want or any(w in c.name.lower() for w in want)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="metarec-probe-") as tmp:
        root = Path(tmp)
        base = build_base(root) if any(c.needs_base for c in cases) else None
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            rows = list(pool.map(lambda ic: run_case(ic[1], root, base, ic[0]), enumerate(cases)))
    seconds = time.perf_counter() - t0
    jl, md = write(rows, Path(args.out), seconds)
    bad = [r for r in rows if r.outcome not in GOOD]
    for r in rows:
        print(f"{r.outcome:<17} {r.cls:<14} {r.case}" + (f"  -- {r.detail}" if r.detail else ""))
    print(
        f"{len(rows)} cases in {seconds:.0f} s; {len(bad)} not CLEAR ERROR / CORRECT; wrote {md} and {jl}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
