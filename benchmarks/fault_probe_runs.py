"""Fault probe, second part: runs that must not be mixed up, data that must not change silently,
federated dead ends and missing extras (issue 22), as real ``python -m metarec ...`` calls.

The same classes as ``benchmarks/fault_probe.py`` (whose helpers it uses): CLEAR ERROR,
CORRECT, TRACEBACK, SILENT WRONG, DATA LOSS, VAGUE ERROR, UNEXPECTED ERROR, HANG, SKIPPED. A
case whose command refused but destroyed or wrote through to a file it should not have touched
is DATA LOSS; a refused command that left a half-written run folder is SILENT WRONG.

Writes ``benchmarks/results/fault_probe_runs.md`` and ``.jsonl``. Usage::

    python benchmarks/fault_probe_runs.py [--jobs 2] [--only SUBSTRING] [--out DIR] [--repo DIR]

``--repo DIR`` probes another source tree (``PYTHONPATH=DIR``), e.g. an export of an older
commit, for before/after totals. The exit status is 1 when any case is not CLEAR ERROR /
CORRECT / SKIPPED.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fault_probe as fp  # noqa: E402
from fault_probe import (  # noqa: E402
    GOOD,
    PY,
    Case,
    Proc,
    call,
    env,
    fresh,
    from_base,
    judge_error,
    judge_ok,
    train_args,
    write_csv,
    write_scenario,
)

CASES: list[Case] = []


def case(cls: str, name: str, *, base: bool = False):
    def deco(fn):
        CASES.append(Case(cls, name, fn, base))
        return fn

    return deco


_NO_MODULE = """
import sys
for m in sys.argv.pop(1).split(","):
    sys.modules[m] = None  # as if the extra were not installed
from metarec.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _missing(modules: str, args: list[str], folder: Path) -> Proc:
    return call([modules, *args], folder, prefix=["-c", _NO_MODULE])


def _same(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def _items(run: Path, n: int) -> list[str]:
    return [
        str(x) for x in json.loads((run / "encoders.json").read_text())["item_ids"]["values"][:n]
    ]


def _other_run(folder: Path, base: Path, name: str, *sets: str) -> Path:
    """A second run beside the base one (same data file unless ``sets`` change it)."""
    shutil.copy(base / "data.csv", folder / "data.csv")
    shutil.copy(base / "scenario.toml", folder / "scenario.toml")
    p = call(train_args(*sets, out=name), folder)
    if p.rc != 0:
        raise RuntimeError(f"the second run failed: {p.err[-300:]}")
    return folder / name


def _swap(run: Path, other: Path, which: str) -> None:
    for suffix in ("", ".sha256"):
        shutil.copy(
            other / "checkpoints" / f"{which}.pt{suffix}",
            run / "checkpoints" / f"{which}.pt{suffix}",
        )


# --- checkpoints bound to their run ----------------------------------------------------------
@case("run integrity", "best.pt (+ checksum) copied from a run of another method", base=True)
def _best_other_method(folder: Path, base: Path):
    from_base(folder, base)
    other = _other_run(folder, base, "other", "algorithm.name=fomaml")
    _swap(folder / "run", other, "best")
    p = call(["recommend", "--run", "run", "--user", "u1", "--json"], folder)
    return (p, *judge_error(p, "best.pt", "another method"))


@case("run integrity", "best.pt (+ checksum) copied from a run on other data", base=True)
def _best_other_data(folder: Path, base: Path):
    from_base(folder, base)
    (folder / "o").mkdir()
    write_csv(folder / "o" / "data.csv", seed=5)
    write_scenario(folder / "o")
    p0 = call(train_args(), folder / "o")
    if p0.rc != 0:
        return p0, "PROBE FAILED", p0.err[-200:]
    _swap(folder / "run", folder / "o" / "run", "best")
    p = call(["recommend", "--run", "run", "--user", "u1", "--json"], folder)
    return (p, *judge_error(p, "best.pt", "other data"))


@case("run integrity", "train --resume with another run's last.pt", base=True)
def _resume_other_last(folder: Path, base: Path):
    from_base(folder, base)
    other = _other_run(folder, base, "other", "train.seed=3")
    _swap(folder / "run", other, "last")
    before = (folder / "run" / "metrics.jsonl").read_bytes()
    p = call(train_args("train.steps=9", extra=("--resume",)), folder)
    if p.rc == 0:
        return p, "SILENT WRONG", "resumed from another run's weights and reported its best score"
    if (folder / "run" / "metrics.jsonl").read_bytes() != before:
        return p, "DATA LOSS", "the refused resume changed metrics.jsonl"
    return (p, *judge_error(p, "last.pt", "belongs"))


def _fake_best(folder: Path, base: Path, content: bytes | None, link: str | None):
    from_base(folder, base)
    best = folder / "run" / "checkpoints" / "best.pt"
    best.unlink()
    if link is not None:
        best.symlink_to(link)
    else:
        best.write_bytes(content or b"")
    code = (
        "import sys\nfrom metarec._io.checksums import sha256_file, _write_record\nfrom pathlib import Path\n"
        "p = Path(sys.argv[1]); _write_record(p, [sha256_file(p)])\n"
    )
    if link is None or os.path.isfile(link):
        subprocess.run([PY, "-c", code, str(best)], env=env(), check=True)
    p = call(["recommend", "--run", "run", "--user", "u1", "--json"], folder, timeout=60)
    return p


@case("run integrity", "best.pt is a text file, its checksum recorded", base=True)
def _best_text(folder: Path, base: Path):
    p = _fake_best(folder, base, b"root:x:0:0:root:/root:/bin/bash\n" * 20, None)
    return (p, *judge_error(p, "best.pt", "not a plain tensor file"))


@case("run integrity", "best.pt is a link to a system file, its checksum recorded", base=True)
def _best_link(folder: Path, base: Path):
    target = "/etc/passwd" if os.path.isfile("/etc/passwd") else "/etc/hostname"
    p = _fake_best(folder, base, None, target)
    return (p, *judge_error(p, "best.pt", "not a plain tensor file"))


@case("run integrity", "best.pt is a link to /dev/zero", base=True)
def _best_zero(folder: Path, base: Path):
    p = _fake_best(folder, base, None, "/dev/zero")
    return (p, *judge_error(p, "best.pt", "character device"))


# --- writes that follow links or replace foreign files -----------------------------------------
@case("run integrity", "train --overwrite with checkpoints/ linked to another folder", base=True)
def _linked_checkpoints(folder: Path, base: Path):
    from_base(folder, base)
    target = folder / "elsewhere"
    shutil.move(str(folder / "run" / "checkpoints"), target)
    (folder / "run" / "checkpoints").symlink_to(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    p = call(train_args(extra=("--overwrite",)), folder)
    after = {q.name: q.read_bytes() for q in target.iterdir()}
    if after != before:
        return p, "DATA LOSS", "the files of the linked folder changed"
    return (p, *judge_error(p, "checkpoints", "symbolic link"))


def _foreign(folder: Path) -> Path:
    mine = folder / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"the user\'s": "own settings"}\n')
    return mine


@case(
    "run integrity",
    "adapt --out DIR --overwrite on a folder with the user's config.json",
    base=True,
)
def _adapt_foreign(folder: Path, base: Path):
    mine = _foreign(folder)
    items = _items(base / "run", 2)
    (folder / "s.csv").write_text(f"user,item,rating\nnew,{items[0]},5\nnew,{items[1]},1\n")
    p = call(
        ["adapt", "--run", str(base / "run"), "--support", "s.csv", "--out", "mine", "--overwrite"],
        folder,
    )
    if (mine / "config.json").read_text() != '{"the user\'s": "own settings"}\n':
        return p, "DATA LOSS", "the user's config.json was replaced"
    return (p, *judge_error(p, "mine", "no metarec run wrote"))


@case("run integrity", "adapt --out RUN --overwrite on a trained run", base=True)
def _adapt_over_run(folder: Path, base: Path):
    from_base(folder, base)
    before = (folder / "run" / "checkpoints" / "best.pt").read_bytes()
    items = _items(base / "run", 2)
    (folder / "s.csv").write_text(f"user,item,rating\nnew,{items[0]},5\n")
    p = call(
        ["adapt", "--run", str(base / "run"), "--support", "s.csv", "--out", "run", "--overwrite"],
        folder,
    )
    if (folder / "run" / "checkpoints" / "best.pt").read_bytes() != before:
        return p, "DATA LOSS", "the trained run's best.pt was replaced"
    return (p, *judge_error(p, "run", "training run", "adapted directory"))


@case("run integrity", "train --overwrite on a folder with the user's config.json")
def _train_foreign(folder: Path, base: Path):
    fresh(folder)
    mine = _foreign(folder)
    p = call(train_args(out="mine", extra=("--overwrite",)), folder)
    if (mine / "config.json").read_text() != '{"the user\'s": "own settings"}\n':
        return p, "DATA LOSS", "the user's config.json was replaced"
    return (p, *judge_error(p, "mine", "no metarec run wrote"))


# --- no silent data change -------------------------------------------------------------------
@case("data", "a header-only domain file among data.files")
def _empty_domain(folder: Path, base: Path):
    write_csv(folder / "a.csv")
    (folder / "b.csv").write_text("user,item,rating,timestamp\n")
    extra = '[[data.files]]\npath = "a.csv"\ndomain = "a"\n[[data.files]]\npath = "b.csv"\ndomain = "b"\n'
    text = fp.SCENARIO.format(path="x", data_extra="", steps=6).replace('path = "x"\n', "")
    head, rest = text.split("[protocol]", 1)
    (folder / "scenario.toml").write_text(head + extra + "\n[protocol]" + rest)
    p = call(["tasks", "inspect", "scenario.toml"], folder)
    return (p, *judge_error(p, "b.csv", "no interaction rows"))


@case("data", "ids ' u3' and 'u3': one user in training data and in the support reader")
def _spaced_ids(folder: Path, base: Path):
    write_csv(folder / "data.csv")
    text = (folder / "data.csv").read_text().splitlines()
    out = [text[0]] + [
        (" " + ln if ln.startswith("u3,") and n % 2 else ln) for n, ln in enumerate(text[1:])
    ]
    (folder / "data.csv").write_text("\n".join(out) + "\n")
    write_scenario(folder)
    p = call(train_args(), folder)

    def check() -> str | None:
        users = json.loads((folder / "run" / "encoders.json").read_text())["user_ids"]["values"]
        if " u3" in users:
            return "' u3' is a user of its own"
        q = call(["recommend", "--run", "run", "--user", " u3", "--json"], folder)
        if q.rc != 0:
            return f"recommend --user ' u3' failed: {q.err[-200:]}"
        return None if json.loads(q.out)["user"] == "u3" else "' u3' is not the known user u3"

    return (p, *judge_ok(p, check))


@case("data", "algorithm.loss=bce on 1..5 ratings")
def _bce(folder: Path, base: Path):
    fresh(folder)
    p = call(train_args("algorithm.loss=bce"), folder)
    return (p, *judge_error(p, "algorithm.loss", "bce", "explicit"))


@case("data", "relative data path, run from another folder")
def _relative(folder: Path, base: Path):
    (folder / "exp").mkdir()
    write_csv(folder / "exp" / "data.csv")
    write_scenario(folder / "exp")
    p = call(["tasks", "inspect", "exp/scenario.toml", "--json"], folder)
    return (p, *judge_ok(p, lambda: None if '"interactions"' in p.out else "no report"))


@case("data", "missing data file: the error shows the resolved path")
def _resolved(folder: Path, base: Path):
    (folder / "exp").mkdir()
    write_scenario(folder / "exp", path="nowhere.csv")
    p = call(["tasks", "inspect", "exp/scenario.toml"], folder)
    return (p, *judge_error(p, str(folder / "exp" / "nowhere.csv"), "scenario file's folder"))


@case("data", "data.path is a FIFO")
def _fifo(folder: Path, base: Path):
    os.mkfifo(folder / "data.csv")
    write_scenario(folder)
    p = call(["tasks", "inspect", "scenario.toml"], folder, timeout=60)
    return (p, *judge_error(p, "data.csv", "FIFO"))


@case("data", "data.path is /dev/zero")
def _zero(folder: Path, base: Path):
    write_scenario(folder, path="/dev/zero", data_extra='format = "csv"\n')
    p = call(["tasks", "inspect", "scenario.toml"], folder, timeout=60)
    return (p, *judge_error(p, "/dev/zero", "character device"))


# --- federated -------------------------------------------------------------------------------
_FED = """
[federated]
rounds = {rounds}
local_steps = 1
backend = "{backend}"
round_timeout = 120.0
port = {port}
"""


def _fed_folder(folder: Path, *, rounds: int = 2, backend: str = "local", port: int = 9400) -> None:
    """Synthetic ratings of three domains (one client each)."""
    import numpy as np

    rng = np.random.default_rng(0)
    lines = ["user,item,rating,domain"]
    for d in range(3):
        for u in range(25):
            for it in rng.choice(40, size=20, replace=False):
                lines.append(f"d{d}u{u},d{d}i{it},{int(rng.integers(1, 6))},d{d}")
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    text = fp.SCENARIO.format(
        path="data.csv", data_extra='columns = { domain = "domain" }\n', steps=4
    )
    (folder / "scenario.toml").write_text(
        text + _FED.format(rounds=rounds, backend=backend, port=port)
    )


def _fed(folder: Path, *extra: str, timeout: float = 300) -> Proc:
    return call(["federated", "scenario.toml", "--out", "fed", *extra], folder, timeout=timeout)


def _rounds(folder: Path) -> list[int]:
    p = folder / "fed" / "rounds.jsonl"
    return [json.loads(x)["round"] for x in p.read_text().splitlines()] if p.exists() else []


def _kill_before_first_round(folder: Path) -> None:
    _fed_folder(folder, rounds=200)
    proc = subprocess.Popen(
        [PY, "-m", "metarec", "federated", "scenario.toml", "--out", "fed"],
        cwd=folder,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while (
        not (folder / "fed" / "rounds.jsonl").exists()
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _fed_folder(
        folder, rounds=2
    )  # the rerun asks for 2 rounds (the config differs from no checkpoint)


@case("federated", "kill -9 before the first round, then --resume")
def _fed_kill_resume(folder: Path, base: Path):
    _kill_before_first_round(folder)
    if (folder / "fed" / "checkpoints" / "last.pt").exists():
        return (
            Proc([], 0, "", "", 0.0),
            "SKIPPED",
            "the kill came after the first round's checkpoint",
        )
    p = _fed(folder, "--resume")
    return (
        p,
        *judge_ok(p, lambda: None if _rounds(folder) == [1, 2] else f"rounds {_rounds(folder)}"),
    )


@case("federated", "kill -9 before the first round, then a plain rerun, then --overwrite")
def _fed_kill_rerun(folder: Path, base: Path):
    _kill_before_first_round(folder)
    p = _fed(folder)
    out, detail = judge_error(p, "--resume", "--overwrite")
    if out != "CLEAR ERROR":
        return p, out, detail
    q = _fed(folder, "--overwrite")
    return (
        q,
        *judge_ok(q, lambda: None if _rounds(folder) == [1, 2] else f"rounds {_rounds(folder)}"),
    )


@case("federated", "full disk before the first round checkpoint, then --resume")
def _fed_disk(folder: Path, base: Path):
    _fed_folder(folder)
    p = call(
        ["2", "ENOSPC", "federated", "scenario.toml", "--out", "fed"],
        folder,
        prefix=["-c", fp._FAULT],
    )
    out, detail = judge_error(p, "disk is full", "--resume")
    if out != "CLEAR ERROR":
        return p, out, detail
    q = _fed(folder, "--resume")
    return (
        q,
        *judge_ok(q, lambda: None if _rounds(folder) == [1, 2] else f"rounds {_rounds(folder)}"),
    )


@case("federated", "--backend loopback with a relative data path")
def _fed_loopback(folder: Path, base: Path):
    port = 9400 + (os.getpid() % 50) * 8
    _fed_folder(folder, rounds=1, backend="loopback", port=port)
    (folder / "exp").mkdir()
    for n in ("data.csv", "scenario.toml"):
        shutil.move(str(folder / n), folder / "exp" / n)
    p = call(["federated", "exp/scenario.toml", "--out", "fed"], folder, timeout=400)
    return (
        p,
        *judge_ok(p, lambda: None if _rounds(folder) == [1] else f"rounds {_rounds(folder)}"),
    )


# --- missing extras --------------------------------------------------------------------------
def _extra_case(folder: Path, modules: str, args: list[str], out: str, *words: str):
    p = _missing(modules, args, folder)
    o, detail = judge_error(p, *words)
    if o == "CLEAR ERROR" and (folder / out).exists():
        return p, "SILENT WRONG", f"the refused command left {out}/ behind"
    return p, o, detail


@case("extras", "train.loggers=['tensorboard'] without tensorboard")
def _no_tensorboard(folder: Path, base: Path):
    fresh(folder)
    return _extra_case(
        folder,
        "torch.utils.tensorboard",
        train_args('train.loggers=["tensorboard"]'),
        "run",
        "tensorboard",
        "pip install",
    )


@case("extras", "federated --backend loopback without flwr")
def _no_flwr(folder: Path, base: Path):
    _fed_folder(folder, backend="loopback")
    return _extra_case(
        folder,
        "flwr",
        ["federated", "scenario.toml", "--out", "fed"],
        "fed",
        "federated",
        "pip install",
    )


@case("extras", "serve without uvicorn", base=True)
def _no_uvicorn(folder: Path, base: Path):
    return _extra_case(
        folder,
        "uvicorn",
        ["serve", "--run", str(base / "run"), "--port", "0"],
        "x",
        "serve",
        "pip install",
    )


# ------------------------------------------------------------------ driver
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="cases run side by side (default 2)")
    ap.add_argument(
        "--only", help="comma-separated: run only the cases whose name contains one of these"
    )
    ap.add_argument(
        "--out", default=str(fp.ROOT / "benchmarks" / "results"), help="folder of the report"
    )
    ap.add_argument("--repo", help="probe this source tree instead (PYTHONPATH)")
    args = ap.parse_args(argv)
    if args.repo:
        fp.ROOT = Path(args.repo).resolve()
    want = [w.strip().lower() for w in (args.only or "").split(",") if w.strip()]
    cases = [c for c in CASES if not want or any(w in c.name.lower() for w in want)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="metarec-probe-runs-") as tmp:
        root = Path(tmp)
        base = fp.build_base(root) if any(c.needs_base for c in cases) else None
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            rows = list(
                pool.map(lambda ic: fp.run_case(ic[1], root, base, ic[0]), enumerate(cases))
            )
    seconds = time.perf_counter() - t0
    jl, md = fp.write(
        rows,
        Path(args.out),
        seconds,
        "fault_probe_runs",
        "Fault probe: runs, data, federated, extras",
    )
    bad = [r for r in rows if r.outcome not in GOOD]
    for r in rows:
        print(f"{r.outcome:<17} {r.cls:<14} {r.case}" + (f"  -- {r.detail}" if r.detail else ""))
    print(
        f"{len(rows)} cases in {seconds:.0f} s; {len(bad)} not CLEAR ERROR / CORRECT; wrote {md} and {jl}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
