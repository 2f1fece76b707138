"""Run directories and checkpoints: safe to load, atomic to write, versioned.

A run directory holds::

    manifest.json      format name and version, model name and config, algorithm config
    config.json        the resolved scenario
    encoders.json      user / item / domain id maps and feature vocabularies
    features.pt        side-feature arrays (tensors only)
    text.pt            text-feature embeddings (runs with text features; no encoder needed to load)
    checkpoints/last.pt, checkpoints/best.pt
    metrics.jsonl      one row per logged step

Tensors are written with ``torch.save`` and read back **only** with ``weights_only=True``, so
loading never executes code from a file: a pickle that tries to is refused with a
:class:`~metarec._errors.CheckpointError`. Every write goes to a temporary file in the same
folder and is moved into place with ``os.replace`` (atomic on POSIX), so an interrupted write
never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec._errors import CheckpointError, ConfigError, suggest
from metarec._io.checksums import atomic_write, verify, write_checked
from metarec._io.paths import need_file
from metarec.data.encoding import IdEncoder
from metarec.data.features import FeatureTable
from metarec.data.files import check_codes, read_json_object
from metarec.data.table import InteractionTable
from metarec.data.text import check_saved_text
from metarec.runs.identity import check_identity

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "atomic_write_bytes",
    "atomic_write_json",
    "save_tensors",
    "load_tensors",
    "save_table_meta",
    "load_table_meta",
    "load_item_domains",
    "item_domains",
    "read_manifest",
    "load_best",
    "WHICH",
    "TEXT_FILE",
]

TEXT_FILE = "text.pt"
"""The text-feature embeddings of a run (``{"<side>/<feature>": (n_entities, D)}``)."""

WHICH = ("best", "last")
"""The checkpoints of a run directory: ``checkpoints/best.pt`` (validation-selected), ``last.pt``."""
FORMAT = "metarec-run"
FORMAT_VERSION = 2
"""2: checkpoints hold the model's buffers beside its parameters (1: parameters only)."""
_DAMAGED = "the run directory is damaged; restore the file from a copy, or re-create the run with 'metarec train'"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``)."""
    atomic_write(Path(path), data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=_json_default) + "\n").encode())


def save_tensors(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically ``torch.save`` a nest of dicts/lists of tensors and plain values."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_checked(path, buf.getvalue())  # hook (metarec._io.checksums): atomic write + path.sha256


def load_tensors(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by :func:`save_tensors` with ``weights_only=True``.

    The file's recorded SHA-256 (``path.sha256``) is checked **before** the file is parsed, so
    nothing but the bytes that were written reaches the unpickler; a file that is not a plain
    tensor file (text, a pickle that would run code, a link to a system file) is refused, whatever
    the parser's own error.

    Raises:
        CheckpointError: the file is missing or not a regular file (a FIFO, a device), differs
            from its recorded checksum, or is not a plain tensor file.
    """
    path = Path(path)
    need_file(
        path,
        "checkpoint",
        "pass a run directory written by 'metarec train'",
        CheckpointError,
    )
    # hook (metarec._io.checksums): a flipped byte is a CheckpointError naming the file, before parsing
    verify(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parser failure is a refusal (KeyError, IndexError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r}: refused to load: it is not a plain tensor file "
            f"({type(e).__name__}: {first[:200]}); metarec only loads weights with "
            "weights_only=True and never runs code from a file; restore the file from a copy, or "
            "re-create the run with 'metarec train'"
        ) from None
    return obj


def load_best(
    run_dir: str | os.PathLike[str],
    *,
    which: str = "best",
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """The raw checkpoint ``checkpoints/<which>.pt`` of a run (tensors only, ``weights_only``),
    checked to belong to the run (:func:`metarec.runs.identity.check_identity`)."""
    if which not in WHICH:
        raise ConfigError(f"which={which!r}: choose one of {WHICH}{suggest(str(which), WHICH)}")
    path = Path(run_dir) / "checkpoints" / f"{which}.pt"
    ck = load_tensors(path, map_location=map_location)
    if not isinstance(ck, Mapping):
        raise CheckpointError(
            f"{str(path)!r}: not a metarec checkpoint (no dict at the top); re-train"
        )
    check_identity(ck, run_dir, path)  # hook (metarec.runs.identity): this run's own checkpoint
    return dict(ck)


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's ``manifest.json``, with its format and version checked."""
    p = Path(run_dir) / "manifest.json"
    if not p.is_file():
        raise CheckpointError(
            f"run directory {str(run_dir)!r}: no manifest.json; "
            "pass a folder written by 'metarec train' or 'metarec adapt'"
        )
    m = read_json_object(p, "manifest", error=CheckpointError, fix=_DAMAGED)
    if m.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(p)!r}: format {m.get('format')!r} is not {FORMAT!r}; not a metarec run directory"
        )
    v = m.get("format_version")
    if v != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(p)!r}: format_version={v!r} is not supported (this metarec reads version "
            f"{FORMAT_VERSION}); use the metarec version that wrote it, or re-train"
        )
    return m


def item_domains(table: InteractionTable) -> np.ndarray:
    """``int64 (n_items,)``: the domain index of each item's interactions (0: none; an item
    seen in several domains gets the domain of its last row)."""
    out = np.zeros(table.n_items, dtype=np.int64)
    out[table.items] = table.domains
    return out


def save_table_meta(
    table: InteractionTable, run_dir: str | os.PathLike[str], *, domains: np.ndarray | None = None
) -> None:
    """Save what a model needs of its table: id maps, feature vocabularies and arrays, and each
    item's domain (``domains``, default :func:`item_domains` of ``table``)."""
    run_dir = Path(run_dir)
    enc = {
        "user_ids": table.user_ids.to_json(),
        "item_ids": table.item_ids.to_json(),
        "domain_ids": table.domain_ids.to_json(),
        "feedback": table.feedback,
        "rating_scale": table.rating_scale,
        "user_features": table.user_features.to_json() if table.user_features else None,
        "item_features": table.item_features.to_json() if table.item_features else None,
    }
    atomic_write_json(run_dir / "encoders.json", enc)
    arrays: dict[str, Any] = {}
    dom = item_domains(table) if domains is None else np.asarray(domains, dtype=np.int64)
    if len(table) or domains is not None:
        arrays["item/domain"] = torch.from_numpy(dom)
    for side, ft in (("user", table.user_features), ("item", table.item_features)):
        if ft is None:
            continue
        for k, v in ft.categorical.items():
            arrays[f"{side}/cat/{k}"] = torch.from_numpy(v)
        arrays[f"{side}/numeric"] = torch.from_numpy(ft.numeric)
        arrays[f"{side}/present"] = torch.from_numpy(ft.present)
    save_tensors(run_dir / "features.pt", arrays)
    text = {  # the encoded texts themselves: loading the run needs no text encoder
        f"{side}/{k}": torch.from_numpy(np.ascontiguousarray(v))
        for side, ft in (("user", table.user_features), ("item", table.item_features))
        if ft is not None
        for k, v in ft.text.items()
    }
    if text:
        save_tensors(run_dir / TEXT_FILE, text)


def load_item_domains(run_dir: str | os.PathLike[str]) -> np.ndarray | None:
    """The items' domains saved by :func:`save_table_meta` (``None`` for runs saved without them)."""
    arrays = load_tensors(Path(run_dir) / "features.pt")
    d = arrays.get("item/domain") if isinstance(arrays, dict) else None
    return None if d is None else d.numpy()


def load_table_meta(run_dir: str | os.PathLike[str]) -> InteractionTable:
    """An interaction table with no interactions but the saved id maps and features (enough to
    rebuild and serve a model)."""
    run_dir = Path(run_dir)
    p = run_dir / "encoders.json"
    if not p.is_file():
        raise CheckpointError(
            f"run directory {str(run_dir)!r}: encoders.json is missing; the run directory is "
            "incomplete"
        )
    enc = read_json_object(p, "encoders", error=CheckpointError, fix=_DAMAGED)
    arrays = load_tensors(run_dir / "features.pt")
    feats: dict[str, FeatureTable | None] = {}
    for side in ("user", "item"):
        meta = enc.get(f"{side}_features")
        if meta is None:
            feats[side] = None
            continue
        vocabs = {k: IdEncoder.from_json(v) for k, v in meta["vocabs"].items()}
        cat = {  # codes read back from the run must index their vocabularies
            k: check_codes(
                arrays[f"{side}/cat/{k}"].numpy(),
                len(voc),
                f"{str(run_dir / 'features.pt')!r}: {side} feature {k!r}",
                error=CheckpointError,
                fix=_DAMAGED,
            )
            for k, voc in vocabs.items()
        }
        feats[side] = FeatureTable(
            cat,
            arrays[f"{side}/numeric"].numpy(),
            list(meta["numeric_names"]),
            vocabs,
            arrays[f"{side}/present"].numpy(),
            {k: tuple(v) for k, v in meta.get("numeric_stats", {}).items()},
            *_load_text(run_dir, side, meta),
        )
    empty = np.zeros(0, dtype=np.int64)
    scale = enc.get("rating_scale")
    return InteractionTable(
        empty,
        empty,
        np.zeros(0, dtype=np.float32),
        empty,
        None,
        IdEncoder.from_json(enc["user_ids"]),
        IdEncoder.from_json(enc["item_ids"]),
        IdEncoder.from_json(enc["domain_ids"]),
        feedback=enc.get("feedback", "explicit"),
        rating_scale=tuple(scale) if scale else None,
        user_features=feats["user"],
        item_features=feats["item"],
    )


def _load_text(
    run_dir: Path, side: str, meta: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, str]]]:
    """The ``side``'s text arrays from ``text.pt``, checked against the sources in ``meta``."""
    sources = meta.get("text_sources") or {}
    if not sources and meta.get("text_dims"):
        raise CheckpointError(
            f"{str(run_dir / 'encoders.json')!r}: {side} text features {sorted(meta['text_dims'])} "
            f"were not saved with the run (written by a metarec that did not save {TEXT_FILE}); "
            "re-train the run"
        )
    if not sources:
        return {}, {}
    path = run_dir / TEXT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{str(path)!r}: missing; the run has {side} text features {sorted(sources)} whose "
            f"embeddings this file holds; {_DAMAGED}"
        )
    blob = load_tensors(path)
    prefix = f"{side}/"
    arrays = {
        k[len(prefix) :]: v.numpy()
        for k, v in (blob.items() if isinstance(blob, Mapping) else ())
        if k.startswith(prefix) and isinstance(v, torch.Tensor)
    }
    return check_saved_text(arrays, sources, repr(str(path))), dict(sources)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
