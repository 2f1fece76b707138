"""A benchmark folder that survives interruption: its identity, its progress, and what ``--resume``
keeps.

Every output of :func:`metarec.bench.run_bench` is written run by run (one run: one ``(seed,
algorithm)``), in this order, so that a kill at any point loses at most the run in progress:

1. ``per_task/<algorithm>-s<seed>.jsonl.gz``: the run's per-task values (one file per run,
   written atomically: a gzip stream cannot be appended to safely after a kill);
2. ``curves.jsonl``: the run's curves, appended and flushed;
3. ``configs.json``: rewritten atomically with the run's resolved config;
4. ``results.jsonl``: the run's rows, appended, flushed and synced;
5. ``progress.jsonl``: one line ``{"run_id", "seed", "algorithm", "rows"}`` saying the run is
   complete.

``bench_identity.json`` (written before the first run) records what the benchmark is: the
scenario's hash and resolved values (after ``--set``), the algorithms, seeds, shots, the quick flag
and the tuning budget. :func:`open_bench_folder` decides how a call starts:

* a folder without a benchmark: fresh;
* ``overwrite``: the benchmark's own files (:data:`BENCH_FILES`, :data:`BENCH_DIRS`) are deleted
  and it starts afresh;
* ``resume``: the identity must match (else a :class:`~metarec._errors.ConfigError` naming the
  differing key and the fix); partial last lines of ``results.jsonl`` / ``curves.jsonl`` /
  ``progress.jsonl`` are dropped; a run counts as complete when ``progress.jsonl`` lists it and
  ``results.jsonl`` holds its rows (all of them: one per test state and shots value). A folder
  written by an older metarec (only ``results.jsonl``, per-task values in one
  ``per_task.jsonl.gz`` written at the end, no identity) is accepted when its rows agree with
  the command: a run counts as complete when it has all its rows; per-task values are salvaged
  from the gzip stream as far as it can be read;
* otherwise a folder that holds a benchmark is refused.

At the end ``per_task.jsonl.gz`` (what the report reads) is assembled from the per-run files and
``results.jsonl`` is rewritten in seed x algorithm order, so a resumed benchmark's folder is laid
out as an uninterrupted one's.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metarec._errors import ConfigError
from metarec._io.checksums import SUFFIX
from metarec.config import config_hash, scenario_from_dict, to_dict
from metarec.runs.checkpoint import atomic_write_bytes, atomic_write_json
from metarec.train.session import RUN_FILES, remove_orphan_tmp

__all__ = [
    "IDENTITY_FILE",
    "PROGRESS_FILE",
    "PER_TASK_DIR",
    "BENCH_FILES",
    "BENCH_DIRS",
    "BenchFolder",
    "bench_identity",
    "open_bench_folder",
    "clear_run_dir",
    "per_task_path",
    "repair_jsonl",
    "read_jsonl",
]

IDENTITY_FILE = "bench_identity.json"
PROGRESS_FILE = "progress.jsonl"
PER_TASK_DIR = "per_task"
PER_TASK_FILE = "per_task.jsonl.gz"
BENCH_FILES = (
    "results.jsonl",
    "curves.jsonl",
    "configs.json",
    "bench.json",
    "report.md",
    "transfer-summary.md",
    PER_TASK_FILE,
    IDENTITY_FILE,
    PROGRESS_FILE,
    "tuning.jsonl",
)
"""The files a benchmark writes in its folder; ``--overwrite`` deletes only these and :data:`BENCH_DIRS`."""
BENCH_DIRS = (PER_TASK_DIR, "plots", "runs", "tuning")

RunKey = tuple[int, str]  # (seed, algorithm)


def bench_identity(
    scenario: Any,
    *,
    algorithms: Sequence[str],
    seeds: int,
    shots: Sequence[int],
    quick: bool,
    tune: int | None = None,
) -> dict[str, Any]:
    """What a benchmark is, as stored in ``bench_identity.json`` (``scenario``: after ``--set``)."""
    return {
        "scenario_hash": config_hash(scenario),
        "algorithms": list(algorithms),
        "seeds": int(seeds),
        "shots": list(shots),
        "quick": bool(quick),
        "tune": tune,
        "scenario": to_dict(scenario),
    }


@dataclass
class BenchFolder:
    """What :func:`open_bench_folder` found in a benchmark folder.

    Attributes:
        out: the folder.
        resumed: it held a benchmark that this call continues.
        legacy: that benchmark predates ``progress.jsonl`` (completeness is judged from its rows).
        rows: the rows of ``results.jsonl`` per run, in file order.
        done: row counts of the runs ``progress.jsonl`` lists as complete.
        configs: ``configs.json`` (config hash -> resolved config).
        removed: files deleted on entry (relative to ``out``).
        replaced: ``overwrite`` deleted an earlier benchmark.
    """

    out: Path
    resumed: bool = False
    legacy: bool = False
    rows: dict[RunKey, list[dict[str, Any]]] = field(default_factory=dict)
    done: dict[RunKey, int] = field(default_factory=dict)
    configs: dict[str, Any] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    replaced: bool = False

    def complete(self, key: RunKey, expected: int) -> bool:
        """Whether run ``key`` (``expected`` rows: states x shots) is finished and can be skipped."""
        n = len(self.rows.get(key, ()))
        if n != expected:
            return False
        return self.legacy or self.done.get(key) == n

    def forget(self, key: RunKey) -> None:
        """Delete every trace of an unfinished run ``key`` before it is run again: its rows,
        curves, progress line and per-task file."""
        self.done.pop(key, None)
        if self.rows.pop(key, None) is not None:
            _rewrite_without(self.out / "results.jsonl", key)
        _rewrite_without(self.out / "curves.jsonl", key)
        _rewrite_without(self.out / PROGRESS_FILE, key)
        p = per_task_path(self.out, *key)
        if p.exists():
            p.unlink()


def per_task_path(out: Path, seed: int, algorithm: str) -> Path:
    return out / PER_TASK_DIR / f"{algorithm}-s{seed}.jsonl.gz"


def open_bench_folder(
    out: Path, identity: dict[str, Any], *, resume: bool, overwrite: bool
) -> BenchFolder:
    """Decide how a benchmark call starts in ``out`` (see the module docstring); writes the
    identity file. Call it only while holding ``out``'s lock."""
    if resume and overwrite:
        raise ConfigError(
            "--resume and --overwrite: choose one: --resume continues the benchmark in --out, "
            "--overwrite deletes it and starts afresh"
        )
    held = (out / "results.jsonl").exists()  # (an identity alone: a start that failed early)
    state = BenchFolder(out)
    if held and overwrite:
        state.removed += _remove_bench(out)
        state.replaced = True
    elif held and not resume:
        raise ConfigError(
            f"out={str(out)!r}: already holds a benchmark (results.jsonl); pass --resume "
            "(resume=True) to continue it, --overwrite (overwrite=True) to replace it, or choose "
            "an empty folder"
        )
    elif held:
        state = _load(out, identity)
    elif resume:
        print(
            f"metarec bench: --resume: {str(out)!r} holds no benchmark yet; starting afresh",
            file=sys.stderr,
        )
    out.mkdir(parents=True, exist_ok=True)
    state.removed += remove_orphan_tmp(out, ("", PER_TASK_DIR))
    atomic_write_json(out / IDENTITY_FILE, identity)
    return state


def _load(out: Path, identity: dict[str, Any]) -> BenchFolder:
    stored_path = out / IDENTITY_FILE
    legacy = not stored_path.exists()
    rows = read_jsonl(out / "results.jsonl", repair=True)
    if legacy:
        _check_legacy(out, rows, identity)
    else:
        stored = json.loads(stored_path.read_text())
        _check_identity(stored, identity, stored_path)
    read_jsonl(out / "curves.jsonl", repair=True)
    state = BenchFolder(out, resumed=True, legacy=legacy)
    for r in rows:
        state.rows.setdefault((int(r["seed"]), str(r["algorithm"])), []).append(r)
    for p in read_jsonl(out / PROGRESS_FILE, repair=True):
        state.done[(int(p["seed"]), str(p["algorithm"]))] = int(p["rows"])
    cfg = out / "configs.json"
    state.configs = json.loads(cfg.read_text()) if cfg.exists() else {}
    if legacy:
        _salvage_per_task(out)
    return state


def _check_identity(stored: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    fix = (
        "rerun with the same settings to continue it, pass --overwrite to replace it, or choose "
        "another --out"
    )
    for key in ("algorithms", "seeds", "shots", "quick", "tune"):
        if stored.get(key) != current.get(key):
            flag = {"quick": "--quick", "tune": "--tune"}.get(key, f"--{key}")
            raise ConfigError(
                f"--resume: {str(path)!r}: the benchmark there has {key}={stored.get(key)!r}, this "
                f"command {key}={current.get(key)!r} ({flag}); {fix}"
            )
    if stored.get("scenario_hash") != current["scenario_hash"]:
        diffs = _diff(stored.get("scenario", {}), current["scenario"])
        what = "; ".join(f"{k}={a!r} there, {b!r} here" for k, a, b in diffs[:3])
        if diffs:  # else only settings added since, at their defaults: the same benchmark
            hint = f" (--set {diffs[0][0]}={json.dumps(diffs[0][1])} continues it)"
            raise ConfigError(f"--resume: {str(path)!r}: the scenario differs: {what}{hint}; {fix}")


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two resolved scenarios. A key only ``b`` has
    (a setting added to metarec since ``a`` was written) counts only when it is not at its default."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in list(dict.fromkeys([*a, *b])):
            name = f"{prefix}{k}"
            if k not in a:
                if b[k] != _default_at(name):
                    out.append((name, None, b[k]))
            elif k not in b:
                out.append((name, a[k], None))
            else:
                out += _diff(a[k], b[k], name + ".")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def _default_at(dotted: str) -> Any:
    node: Any = to_dict(scenario_from_dict({"name": "default"}))
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return object()  # no default known: differs
        node = node[part]
    return node


def _check_legacy(out: Path, rows: list[dict[str, Any]], identity: dict[str, Any]) -> None:
    """A folder without an identity file: its rows (and its bench.json, when it got that far)
    must agree with the command."""
    fix = "rerun with the settings of that benchmark, pass --overwrite to replace it, or choose another --out"
    where = f"--resume: {str(out / 'results.jsonl')!r}"
    name = identity["scenario"]["name"]
    algos, shots = identity["algorithms"], [*identity["shots"], "default"]
    for r in rows:
        if r.get("scenario") != name:
            raise ConfigError(
                f"{where}: holds rows of scenario {r.get('scenario')!r}, this command runs "
                f"{name!r}; {fix}"
            )
        if r.get("algorithm") not in algos:
            raise ConfigError(
                f"{where}: holds rows of algorithm {r.get('algorithm')!r}, not in this command's "
                f"algorithms {algos} (--algorithms); {fix}"
            )
        if not 0 <= int(r.get("seed", -1)) < identity["seeds"]:
            raise ConfigError(
                f"{where}: holds rows of seed {r.get('seed')!r}, beyond this command's "
                f"seeds=0..{identity['seeds'] - 1} "
                f"(--seeds); {fix}"
            )
        if r.get("shots") not in shots:
            raise ConfigError(
                f"{where}: holds rows of shots={r.get('shots')!r}, not in this command's shots "
                f"{shots} (--shots); {fix}"
            )
    meta_path = out / "bench.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        have = {
            "quick": meta.get("quick"),
            "algorithms": meta.get("algorithms"),
            "seeds": len(meta.get("seeds", [])),
            "shots": [s for s in meta.get("shots", []) if s != "default"],
        }
        for key, value in have.items():
            if value != identity[key]:
                raise ConfigError(
                    f"--resume: {str(meta_path)!r}: the benchmark there has {key}={value!r}, this "
                    f"command {key}={identity[key]!r}; {fix}"
                )


def _salvage_per_task(out: Path) -> None:
    """Split an older benchmark's ``per_task.jsonl.gz`` into per-run files (as far as the stream
    can be read: a benchmark killed while writing it leaves a truncated stream)."""
    src = out / PER_TASK_FILE
    if not src.exists():
        return
    by_run: dict[RunKey, list[str]] = {}
    try:
        with gzip.open(src, "rt") as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                try:
                    r = json.loads(line)
                except ValueError:
                    break
                by_run.setdefault((int(r["seed"]), str(r["algorithm"])), []).append(line)
    except (EOFError, OSError, zlib.error):
        pass  # truncated: keep the lines read so far
    for (seed, algo), lines in by_run.items():
        p = per_task_path(out, seed, algo)
        if not p.exists():
            p.parent.mkdir(exist_ok=True)
            atomic_write_bytes(p, gzip.compress("".join(lines).encode(), mtime=0))


def assemble_per_task(out: Path, order: Iterable[RunKey]) -> Path:
    """Write ``per_task.jsonl.gz`` (what the report reads) from the per-run files, in ``order``."""
    parts = []
    for seed, algo in order:
        p = per_task_path(out, seed, algo)
        if p.exists():
            parts.append(gzip.decompress(p.read_bytes()))
    path = out / PER_TASK_FILE
    atomic_write_bytes(path, gzip.compress(b"".join(parts), mtime=0))
    return path


def write_run_per_task(
    out: Path, seed: int, algorithm: str, lines: Sequence[dict[str, Any]]
) -> None:
    p = per_task_path(out, seed, algorithm)
    p.parent.mkdir(exist_ok=True)
    text = "".join(json.dumps(x) + "\n" for x in lines)
    atomic_write_bytes(p, gzip.compress(text.encode(), mtime=0))


def append_jsonl(path: Path, rows: Sequence[dict[str, Any]], *, sync: bool = False) -> None:
    """Append ``rows`` to ``path`` in one write, flushed (and synced to disk with ``sync``)."""
    with path.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        if sync:
            os.fsync(f.fileno())


def repair_jsonl(path: Path) -> bool:
    """Drop a partial last line (a write cut by a kill) of a JSONL file; whether one was dropped."""
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    keep = data[: data.rfind(b"\n") + 1]
    atomic_write_bytes(path, keep)
    return True


def read_jsonl(path: Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (``[]`` when missing), a partial last line dropped first."""
    if not path.is_file():
        return []
    if repair and repair_jsonl(path):
        print(
            f"metarec bench: --resume: dropped a partial last line of {str(path)!r}",
            file=sys.stderr,
        )
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            raise ConfigError(
                f"--resume: {str(path)!r}: line {i + 1} is not JSON (the file is damaged); delete "
                "that line, or pass --overwrite to start the benchmark afresh"
            ) from None
    return out


def _rewrite_without(path: Path, key: RunKey) -> None:
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if ln.strip() and _key(json.loads(ln)) != key]
    if len(keep) != len(lines):
        atomic_write_bytes(path, "".join(keep).encode())


def _key(row: dict[str, Any]) -> RunKey:
    return (int(row.get("seed", -1)), str(row.get("algorithm")))


def rewrite_results(out: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``results.jsonl`` with exactly ``rows`` (atomically)."""
    atomic_write_bytes(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())


def clear_run_dir(run_dir: Path) -> list[str]:
    """Delete a training run's own files (:data:`metarec.train.session.RUN_FILES`) in ``run_dir``."""
    gone = []
    for rel in RUN_FILES:
        for p in (run_dir / rel, run_dir / (rel + SUFFIX)):
            if p.is_file():
                p.unlink()
                gone.append(str(p))
    return gone


def _remove_bench(out: Path) -> list[str]:
    gone = []
    for name in BENCH_FILES:
        p = out / name
        if p.is_file():
            p.unlink()
            gone.append(name)
    for name in BENCH_DIRS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
            gone.append(name + "/")
    return gone
