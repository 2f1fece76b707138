"""Disk size of metarec's core dependencies and of each installed extra, from the installed
packages' own file lists (``importlib.metadata``); ``make setup`` prints it.

An extra's size counts the packages it brings beyond the core (torch, numpy, pandas, tqdm and
what they need); a package two extras share is counted in both and marked.

Run: .venv/bin/python benchmarks/install_sizes.py
"""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _dist(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def _requires(dist: metadata.Distribution, extras: frozenset[str]) -> list[Requirement]:
    out = []
    for text in dist.requires or []:
        req = Requirement(text)
        env_ok = req.marker is None or any(
            req.marker.evaluate({"extra": e}) for e in (extras or {""})
        )
        if env_ok:
            out.append(req)
    return out


def closure(name: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Installed distributions ``name[extras]`` needs, itself included (missing ones skipped)."""
    seen: set[str] = set()
    todo = [(name, extras)]
    while todo:
        n, ex = todo.pop()
        key = _name(n)
        dist = _dist(n)
        if dist is None or (key in seen and not ex):
            continue
        seen.add(key)
        for req in _requires(dist, ex):
            todo.append((req.name, frozenset(req.extras)))
    return seen


def size_mb(names: set[str]) -> float:
    total = 0
    for n in names:
        dist = _dist(n)
        for f in (dist.files or []) if dist else []:
            try:
                total += dist.locate_file(f).stat().st_size  # type: ignore[union-attr]
            except OSError:
                pass
    return total / 2**20


def main() -> None:
    me = _dist("metarec")
    if me is None:
        raise SystemExit("metarec is not installed in this environment; run make setup first")
    core = closure("metarec") - {"metarec"}
    extras = sorted(me.metadata.get_all("Provides-Extra") or [])
    own: dict[str, set[str]] = {}
    for extra in extras:
        reqs = [r for r in _requires(me, frozenset({extra})) if r.marker is not None]
        names: set[str] = set()
        for r in reqs:
            if _dist(r.name) is not None:
                names |= closure(r.name, frozenset(r.extras))
        own[extra] = names - core
    print(f"install size (MiB on disk) of {me.metadata['Name']} {me.version}:")
    print(
        f"  {'core':<12}{size_mb(core):>9.0f}  ({len(core)} packages: torch, numpy, pandas, tqdm, ...)"
    )
    for extra in extras:
        names = own[extra]
        if not names:
            print(f"  {extra:<12}{'-':>9}  (not installed)")
            continue
        shared = {n for n in names if any(n in own[e] for e in extras if e != extra)}
        note = f", {len(shared)} shared with other extras" if shared else ""
        print(
            f"  {extra:<12}{size_mb(names):>9.0f}  ({len(names)} package{'s' if len(names) > 1 else ''}{note})"
        )
    everything = core | set().union(*own.values())
    print(
        f"  {'all':<12}{size_mb(everything):>9.0f}  (what is installed of the above, each package once)"
    )


if __name__ == "__main__":
    main()
