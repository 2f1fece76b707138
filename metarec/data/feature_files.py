"""Side-feature files named by a scenario (``[[data.user_features]]``, ``[[data.item_features]]``).

:func:`read_feature_files` reads the files of one entity (users or items), checks their id
column and feature columns, joins several files on the id and returns the frame with the
:class:`~metarec.data.features.FeatureSpec` of each column, ready for
:meth:`InteractionTable.from_frame(user_features=..., user_feature_specs=...)
<metarec.data.table.InteractionTable.from_frame>`.

>>> import tempfile, pathlib
>>> from metarec.config.features import FeatureFile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "u.user"
>>> _ = p.write_text("1|24|M|technician\\n2|53|F|other\\n")
>>> entry = FeatureFile(str(p), id="user", format="csv", sep="|", header=False,
...                     names=("user", "age", "gender", "job"),
...                     columns={"age": "numeric", "gender": "categorical"})
>>> frame, specs = read_feature_files([entry], "user")
>>> frame.columns.tolist(), [(s.name, s.kind) for s in specs]
(['user', 'age', 'gender'], [('age', 'numeric'), ('gender', 'categorical')])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metarec._errors import DataError, py, suggest
from metarec.config.features import FeatureFile
from metarec.data.features import FeatureSpec
from metarec.data.files import read_frame
from metarec.data.sources import _numeric_ids

__all__ = ["read_feature_files"]


def read_feature_files(
    entries: Sequence[FeatureFile],
    what: str,
    *,
    ids: str = "string",
    namespace: Sequence[str] = (),
) -> tuple[pd.DataFrame, list[FeatureSpec]]:
    """Read and join the feature files of one entity.

    Args:
        entries: the files (:class:`~metarec.config.features.FeatureFile`), at least one.
        what: ``"user"`` or ``"item"``: whose features (names the scenario key in errors).
        ids: ``"string"`` (ids as written) or ``"numeric"`` (``01`` is ``1``): the rule of the
            interactions' ids (``data.ids``), so that both sides match.
        namespace: ``data.namespace``; when it names ``what``, each entry's ``domain``
            prefixes its ids (``"books:7"``), as the interactions' ids are.

    Returns:
        ``(frame, specs)``: one row per id, the id column named as in the first entry, then
        every feature column; the spec of each feature column.

    Raises:
        DataError: an unreadable file, a missing column (with a close match), a duplicated id
            within a file, a namespaced entity without the entry's ``domain``.
    """
    if not entries:
        raise DataError(f"{what}_features: no files given; name at least one feature file")
    key = f"data.{what}_features"
    id_name = entries[0].id
    frames: list[pd.DataFrame] = []
    specs: list[FeatureSpec] = []
    for i, e in enumerate(entries):
        path = Path(e.path)
        frame = read_frame(
            path,
            format=e.format,
            sep=e.sep,
            header=e.header,
            names=e.names,
            # ids and categorical values as exact strings ("01" stays "01"); numbers inferred
            string_columns=[e.id, *(c for c, k in e.columns.items() if k != "numeric")],
            read_options={"encoding": e.encoding} if e.encoding.lower() != "utf-8" else None,
            how=f"check {key}[{i}].path",
        )
        flag_cols = list(dict.fromkeys(c for cols in e.flags.values() for c in cols))
        wanted = [e.id, *e.columns, *flag_cols]
        for col in wanted:
            if col not in frame.columns:
                cols = [str(c) for c in frame.columns]
                role = "id" if col == e.id else (f"columns.{col}" if col in e.columns else "flags")
                raise DataError(
                    f"{path}: {key}[{i}].{role}: column {col!r} not found; the file has {cols}"
                    f"{suggest(str(col), cols)}; fix the name, or for a file without a header set "
                    f"header = false and names = [...]"
                )
        frame = _with_flags(frame[wanted], e.flags, path, f"{key}[{i}]")
        if frame[e.id].isna().any():
            row = int(frame[e.id].isna().to_numpy().argmax())
            raise DataError(
                f"{path}: {key}[{i}].id: row {row} has no id in column {e.id!r}; every feature row needs "
                f"its {what} id; drop those rows"
            )
        if ids == "numeric":
            frame[e.id] = _numeric_ids(frame[e.id], f"id column {e.id!r}", path)
        if what in namespace:
            if e.domain is None:
                raise DataError(
                    f"{path}: {key}[{i}].domain: data.namespace names {what!r}, so {what} ids are "
                    f'"domain:id"; set domain = "..." on this entry (the domain whose ids the file holds)'
                )
            frame[e.id] = str(e.domain) + ":" + frame[e.id].astype(str)
        dup = frame[e.id][frame[e.id].duplicated()]
        if len(dup):
            raise DataError(
                f"{path}: {len(dup)} duplicated {what} id(s) in column {e.id!r}, first {py(dup.iloc[0])!r}; "
                f"each {what} needs one row per feature file; remove the repeated rows"
            )
        frame = frame.rename(columns={e.id: id_name})
        frames.append(frame)
        specs += [
            FeatureSpec(col, kind, sep=e.multi_sep, max_values=e.max_values, encoder=e.encoder)  # type: ignore[arg-type]
            for col, kind in e.columns.items()
        ] + [FeatureSpec(name, "multi") for name in e.flags]
    joined = frames[0]
    for frame in frames[1:]:
        if frame[id_name].dtype != joined[id_name].dtype:  # numbers never match strings
            frame = frame.assign(**{id_name: frame[id_name].astype(joined[id_name].dtype)})
        joined = joined.merge(frame, on=id_name, how="outer")
    return joined, specs


_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no", ""}


def _with_flags(
    frame: pd.DataFrame, flags: dict[str, tuple[str, ...]], path: Path, key: str
) -> pd.DataFrame:
    """``frame`` with each flag feature as one list-valued column in place of its 0/1 columns."""
    if not flags:
        return frame
    out = frame.copy()
    used: set[str] = set()
    for name, cols in flags.items():
        values = {}
        for col in cols:
            text = frame[col].astype(str).str.strip().str.lower()
            bad = ~text.isin(_TRUE | _FALSE) & frame[col].notna()
            if bad.any():
                row = int(bad.to_numpy().argmax())
                raise DataError(
                    f"{path}: {key}.flags.{name}: column {col!r} holds {py(frame[col].iloc[row])!r} at row {row}, "
                    f"not a 0/1 flag; list only 0/1 columns in flags, or declare {col!r} in columns"
                )
            values[col] = text.isin(_TRUE).to_numpy()
        out[name] = [[c for c in cols if values[c][r]] for r in range(len(frame))]
        used |= set(cols)
    keep = [c for c in out.columns if c not in used or c in flags]
    return out[keep]
