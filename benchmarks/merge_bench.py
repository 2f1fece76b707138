"""Merge benchmark folders of one scenario (same seeds and shots) into one, then write its report.

A long suite is often run in parts: the closed-form methods in one folder, a slow learner in
another, a method re-run after a fix in a third. Each part is a complete ``metarec bench``
folder. This merges their ``results.jsonl`` and ``per_task.jsonl.gz`` rows (and ``configs.json``)
into ``OUT``, the rows of a later folder replacing an earlier folder's rows of the same algorithm
(so a re-run supersedes), checks that the parts agree on the scenario's protocol, seeds and
shots (else it refuses), writes ``bench.json`` with the union of the algorithms, and the report
(:func:`metarec.bench.report.write_report`). ``results.jsonl`` is written gzipped as well when
asked (``--gzip``), as committed for the largest suites.

    python benchmarks/merge_bench.py OUT PART [PART ...] [--gzip]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metarec.bench.report import write_report  # noqa: E402

_SAME = ("scenario", "protocol", "seeds", "shots", "quick")


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def merge(out: Path, parts: list[Path], *, gz: bool = False) -> Path:
    """Merge ``parts`` into ``out`` (see the module docstring); returns the report's path."""
    metas = [json.loads((p / "bench.json").read_text()) for p in parts]
    for p, m in zip(parts[1:], metas[1:], strict=True):
        for key in _SAME:
            if m.get(key) != metas[0].get(key):
                raise SystemExit(
                    f"{p}: bench.json {key!r} differs from {parts[0]}'s; only folders of one "
                    "scenario, protocol, seeds and shots can be merged"
                )
    owner: dict[str, int] = {}  # algorithm -> the last part that ran it
    for i, m in enumerate(metas):
        for a in m["algorithms"]:
            owner[a] = i
    algos = list(owner)
    results, per_task, configs = [], [], {}
    for i, p in enumerate(parts):
        results += [r for r in _rows(p / "results.jsonl") if owner.get(r["algorithm"]) == i]
        with gzip.open(p / "per_task.jsonl.gz", "rt") as f:
            per_task += [r for r in map(json.loads, f) if owner.get(r["algorithm"]) == i]
        if (p / "configs.json").exists():
            configs.update(json.loads((p / "configs.json").read_text()))
    order = {a: j for j, a in enumerate(algos)}
    results.sort(key=lambda r: (r["seed"], order[r["algorithm"]]))
    out.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in results)
    (out / "results.jsonl").write_text(text)
    if gz:
        (out / "results.jsonl.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
    with gzip.open(out / "per_task.jsonl.gz", "wt") as f:
        for r in per_task:
            f.write(json.dumps(r) + "\n")
    (out / "configs.json").write_text(json.dumps(configs, indent=1))
    meta = {**metas[0], "algorithms": algos}
    meta["commit"] = "; ".join(
        f"{m['commit']} ({', '.join(a for a in algos if owner[a] == i)})"
        for i, m in enumerate(metas)
        if any(owner[a] == i for a in algos)
    )
    meta["seconds"] = round(sum(float(m.get("seconds") or 0.0) for m in metas), 1)
    meta["merged_from"] = [
        {"folder": p.name, "algorithms": [a for a in algos if owner[a] == i]}
        for i, p in enumerate(parts)
    ]
    (out / "bench.json").write_text(json.dumps(meta, indent=1))
    return write_report(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("parts", type=Path, nargs="+")
    p.add_argument("--gzip", action="store_true", help="also write results.jsonl.gz")
    args = p.parse_args(argv)
    print(merge(args.out, args.parts, gz=args.gzip))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
