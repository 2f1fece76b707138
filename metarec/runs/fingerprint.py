"""A fingerprint of a run's training data, so a run never continues or serves on other data.

``write_fingerprint(run_dir, table)`` stores ``fingerprint.json`` in the run directory: the
table's size (rows, users, items, domains), its feedback kind and SHA-256 hashes of its
interaction arrays (encoded users, items, ratings, domains, timestamps, split parts, in row order), of each
id encoder's values and of the side features. :func:`check_same_data` (behind ``--resume``)
compares a freshly loaded table with it and raises :class:`~metarec._errors.DataError` saying
what changed: the row count, ids added / removed / renamed (read from the run's
``encoders.json``), or values changed at the same size. :func:`check_run_encoders` (behind
``load_run``, so ``recommend`` and ``adapt``) checks that the run's ``encoders.json`` still holds
the ids its weights were trained with.

A run directory without ``fingerprint.json`` (written by an older metarec) is not checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from metarec._errors import CheckpointError, DataError, py
from metarec.data.encoding import IdEncoder
from metarec.data.features import FeatureTable
from metarec.data.table import InteractionTable
from metarec.runs.checkpoint import atomic_write_json

__all__ = [
    "FINGERPRINT_FILE",
    "fingerprint",
    "write_fingerprint",
    "read_fingerprint",
    "check_same_data",
    "check_run_encoders",
    "describe_changes",
    "copy_fingerprint",
]

FINGERPRINT_FILE = "fingerprint.json"
_VERSION = 1
_SIDES = ("user", "item", "domain")


def fingerprint(table: InteractionTable) -> dict[str, Any]:
    """Sizes and content hashes of ``table`` (JSON-ready)."""
    h = hashlib.sha256()
    for a in (
        table.users,
        table.items,
        table.ratings,
        table.domains,
        table.timestamps,
        getattr(table, "parts", None),
    ):
        h.update(b"none" if a is None else np.ascontiguousarray(a).tobytes())
        h.update(b"|")
    return {
        "version": _VERSION,
        "rows": len(table.users),
        "users": len(table.user_ids) - 1,
        "items": len(table.item_ids) - 1,
        "domains": len(table.domain_ids) - 1,
        "feedback": table.feedback,
        "rating_scale": list(table.rating_scale) if table.rating_scale else None,
        "sha256": {
            "interactions": h.hexdigest(),
            **{f"{s}_ids": _ids_hash(getattr(table, f"{s}_ids")) for s in _SIDES},
            "user_features": _features_hash(table.user_features),
            "item_features": _features_hash(table.item_features),
        },
    }


def write_fingerprint(run_dir: str | os.PathLike[str], table: InteractionTable) -> None:
    """Store ``table``'s fingerprint as ``run_dir/fingerprint.json``."""
    atomic_write_json(Path(run_dir) / FINGERPRINT_FILE, fingerprint(table))


def copy_fingerprint(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy run ``src``'s fingerprint into ``dst`` (an adapted directory with the same encoders), if it has one."""
    fp = read_fingerprint(src)
    if fp is not None:
        atomic_write_json(Path(dst) / FINGERPRINT_FILE, fp)


def read_fingerprint(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's stored fingerprint, or ``None`` when it has none.

    Raises:
        CheckpointError: ``fingerprint.json`` exists but is damaged.
    """
    p = Path(run_dir) / FINGERPRINT_FILE
    if not p.is_file():
        return None
    try:
        fp = json.loads(p.read_text())
        if not isinstance(fp, dict) or not isinstance(fp.get("sha256"), dict):
            raise ValueError("not a fingerprint record")
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{str(p)!r}: damaged ({e}); restore it from a copy, or re-create the run "
            "('metarec train SCENARIO --out RUN --overwrite')"
        ) from None
    return fp


def check_same_data(
    run_dir: str | os.PathLike[str], table: InteractionTable, *, what: str = "--resume"
) -> None:
    """Refuse ``table`` when it is not the data the run in ``run_dir`` was trained on.

    Raises:
        DataError: the data changed; the message lists what changed and how to go on.
    """
    saved = read_fingerprint(run_dir)
    if saved is None:
        return
    changes = describe_changes(saved, fingerprint(table), run_dir, table)
    if changes:
        raise DataError(
            f"{what}: the training data differ from those the run in {str(run_dir)!r} was trained on: "
            + "; ".join(changes)
            + "; resume with the data the run was trained on, or start a new run on the new data "
            "(another --out, or --overwrite to replace this run)"
        )


def check_run_encoders(run_dir: str | os.PathLike[str], table: InteractionTable) -> None:
    """Check that the run's saved encoders (``table``, from :func:`metarec.runs.checkpoint.load_table_meta`)
    hold the ids the run was trained with.

    Raises:
        CheckpointError: ``encoders.json`` was changed since training (names what changed).
    """
    saved = read_fingerprint(run_dir)
    if saved is None:
        return
    now = fingerprint(table)
    bad = [
        f"{s} ids" for s in _SIDES if saved["sha256"].get(f"{s}_ids") != now["sha256"][f"{s}_ids"]
    ]
    if bad:
        sizes = ", ".join(
            f"{s}s {saved.get(s + 's')} -> {now[s + 's']}"
            for s in _SIDES
            if saved.get(s + "s") != now[s + "s"]
        )
        raise CheckpointError(
            f"{str(Path(run_dir) / 'encoders.json')!r}: the {' and '.join(bad)} differ from those the run's weights "
            f"were trained with ({FINGERPRINT_FILE}){': ' + sizes if sizes else ''}; the file was replaced or edited, "
            "so ids would map to the wrong embeddings; restore it from a copy, or re-train on the new data"
        )


def describe_changes(
    saved: dict[str, Any],
    now: dict[str, Any],
    run_dir: str | os.PathLike[str] | None = None,
    table: InteractionTable | None = None,
) -> list[str]:
    """What differs between two fingerprints, as short phrases (empty: the same data)."""
    out: list[str] = []
    if saved.get("feedback") != now["feedback"]:
        out.append(f"feedback {saved.get('feedback')!r} -> {now['feedback']!r}")
    if saved.get("rows") != now["rows"]:
        out.append(f"{_n(saved.get('rows'))} -> {_n(now['rows'])} interactions")
    old_enc = _saved_encoders(run_dir) if run_dir is not None else {}
    for s in _SIDES:
        key = f"{s}_ids"
        if saved["sha256"].get(key) == now["sha256"][key]:
            continue
        enc_old, enc_new = old_enc.get(key), getattr(table, key) if table is not None else None
        if enc_old is not None and enc_new is not None:
            out.append(_id_changes(s, enc_old, enc_new))
        else:
            out.append(f"{s} ids changed ({_n(saved.get(s + 's'))} -> {_n(now[s + 's'])})")
    for side in ("user", "item"):
        key = f"{side}_features"
        if saved["sha256"].get(key) != now["sha256"][key]:
            out.append(f"{side} side features changed")
    if not out and saved["sha256"].get("interactions") != now["sha256"]["interactions"]:
        out.append(
            "same row count and ids, but ratings, domains, timestamps, split parts or the row order changed"
        )
    if saved.get("rating_scale") != now["rating_scale"]:
        out.append(f"rating_scale {saved.get('rating_scale')} -> {now['rating_scale']}")
    return out


# ---------------------------------------------------------------------- helpers
def _ids_hash(enc: IdEncoder) -> str:
    return hashlib.sha256(json.dumps(enc.to_json()["values"]).encode()).hexdigest()


def _features_hash(ft: FeatureTable | None) -> str | None:
    if ft is None:
        return None
    h = hashlib.sha256(json.dumps(ft.to_json(), sort_keys=True, default=str).encode())
    for k in sorted(ft.categorical):
        h.update(np.ascontiguousarray(ft.categorical[k]).tobytes())
    h.update(np.ascontiguousarray(ft.numeric).tobytes())
    h.update(np.ascontiguousarray(ft.present).tobytes())
    return h.hexdigest()


def _saved_encoders(run_dir: str | os.PathLike[str]) -> dict[str, IdEncoder]:
    try:
        enc = json.loads((Path(run_dir) / "encoders.json").read_text())
        return {f"{s}_ids": IdEncoder.from_json(enc[f"{s}_ids"]) for s in _SIDES}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _id_changes(side: str, old: IdEncoder, new: IdEncoder) -> str:
    a, b = old.to_json()["values"], new.to_json()["values"]
    sa, sb = {json.dumps(v) for v in a}, {json.dumps(v) for v in b}
    added = [v for v in b if json.dumps(v) not in sa]
    removed = [v for v in a if json.dumps(v) not in sb]
    if not added and not removed:
        return f"{side} ids in another order ({len(a):,} ids)"
    parts = []
    if added and removed and len(added) == len(removed):
        return f"{len(added):,} {side} id(s) renamed ({_show(removed)} -> {_show(added)})"
    if added:
        parts.append(f"{len(added):,} {side} id(s) added ({_show(added)})")
    if removed:
        parts.append(f"{len(removed):,} {side} id(s) removed ({_show(removed)})")
    return ", ".join(parts)


def _show(values: list[Any], n: int = 3) -> str:
    return ", ".join(repr(py(v)) for v in values[:n]) + (", ..." if len(values) > n else "")


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)
