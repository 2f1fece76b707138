"""The ``[[data.user_features]]`` / ``[[data.item_features]]`` entries of a scenario: side-feature
files read beside the interactions (:class:`FeatureFile`).

Each entry names a file, its id column and the feature columns with their kind (the kinds of
:class:`metarec.data.features.FeatureSpec`). MovieLens-100K's raw ``u.user`` as user features::

    [[data.user_features]]
    path = "${METAREC_DATA}/movielens-100k/ml-100k/u.user"
    sep = "|"
    header = false
    names = ["user", "age", "gender", "occupation", "zip"]
    id = "user"
    columns = { age = "numeric", gender = "categorical", occupation = "categorical" }

>>> FeatureFile("u.user", id="user", columns={"age": "numeric"}).columns
{'age': 'numeric'}
>>> FeatureFile("u.user", id="user", columns={"age": "numerical"})
Traceback (most recent call last):
...
metarec._errors.ConfigError: columns.age='numerical': unknown feature kind (did you mean
'numeric'?); kinds are categorical, multi, numeric, text; e.g. columns = { age = "numeric",
genre = "multi" }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from metarec._errors import ConfigError, suggest

__all__ = ["FEATURE_KINDS", "FeatureFile"]

FEATURE_KINDS: tuple[str, ...] = ("categorical", "multi", "numeric", "text")
"""Kinds a feature column may have: one value, several values in one field (split by
``multi_sep``), a number (standardised), or a text embedded by the ``encoder``."""


@dataclass(frozen=True)
class FeatureFile:
    """One side-feature file: one row per user (or item), one column per feature.

    Fields:
        path: the file (``.csv``, ``.tsv``, ``.parquet``, or any name with ``format``); may use
            ``${METAREC_DATA}``.
        id: the column holding the user (or item) id; ids are matched to the interactions'
            ids under the same ``data.ids`` rule (``"numeric"``: ``01`` is ``1``).
        columns: ``{column: kind}``, kind one of ``"categorical"``, ``"multi"``, ``"numeric"``,
            ``"text"``; columns of the file not named here are ignored.
        flags: multi-valued features spread over 0/1 columns (one-hot genres):
            ``{genre = ["Action", "Comedy", ...]}`` makes the feature ``genre`` hold the names
            of the listed columns that are 1 (``"1"``, ``"true"``) in a row.
        format: ``"csv"``, ``"tsv"`` or ``"parquet"`` (``None``: from the extension).
        sep: separator of a text file (``"|"``, ``"\\t"``, ``"::"``; ``None``: the format's
            default).
        header: the file starts with a header line; ``false``: name the columns with ``names``.
        names: column names of a header-less file.
        encoding: text encoding of the file (``"latin-1"`` for MovieLens' ``u.item``).
        multi_sep: separator of the values of a ``"multi"`` column (``"Action|Comedy"``).
        max_values: keep at most this many values of a ``"multi"`` column (``None``: all).
        encoder: the pretrained text encoder of ``"text"`` columns (``"wordllama"``, needs the
            ``text`` extra; or ``"sentence-transformers:/path"``).
        domain: with ``data.namespace`` naming this entity, the domain whose ids the file
            holds (ids become ``"domain:id"`` as in the interactions); ``None`` otherwise.

    Example:
        >>> import tempfile, pathlib, metarec as mr
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "ratings.csv").write_text("user,item,rating\\nu1,i1,4\\nu1,i2,2\\nu2,i1,5\\n")
        >>> _ = (d / "users.csv").write_text("id,age,job\\nu1,31,nurse\\nu2,45,chef\\nu3,22,chef\\n")
        >>> users = FeatureFile(str(d / "users.csv"), id="id",
        ...                     columns={"age": "numeric", "job": "categorical"})
        >>> sc = mr.Scenario(data={"source": "csv", "path": str(d / "ratings.csv"),
        ...                        "user_features": [users]})
        >>> t = mr.load_table(sc.data)
        >>> t.user_features.numeric_names, t.user_features.vocabs["job"].values
        (['age'], ['chef', 'nurse'])
        >>> t.n_users - 1  # u3 has features and no ratings: a cold user with an index
        3
    """

    path: str
    id: str
    columns: dict[str, str] = field(default_factory=dict)
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    format: Literal["csv", "tsv", "parquet"] | None = None
    sep: str | None = None
    header: bool = True
    names: tuple[str, ...] | None = None
    encoding: str = "utf-8"
    multi_sep: str = "|"
    max_values: int | None = None
    encoder: str = "wordllama"
    domain: str | None = None

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise ConfigError(
                'path="": each feature file entry needs the path of a file; e.g. path = "users.csv"'
            )
        if not self.id.strip():
            raise ConfigError('id="": name the id column of the feature file; e.g. id = "user"')
        if not self.columns and not self.flags:
            raise ConfigError(
                "columns={}: name at least one feature column and its kind; "
                'e.g. columns = { age = "numeric", gender = "categorical" }'
            )
        for name, cols in self.flags.items():
            if not cols:
                raise ConfigError(
                    f"flags.{name}=[]: list the 0/1 columns of feature {name!r}; "
                    'e.g. flags = { genre = ["Action", "Comedy", "Drama"] }'
                )
            if name in self.columns:
                raise ConfigError(
                    f"flags.{name}: {name!r} is also in columns; a feature is either a column or a "
                    "set of flags; rename one of them"
                )
        for col, kind in self.columns.items():
            if kind not in FEATURE_KINDS:
                raise ConfigError(
                    f"columns.{col}={kind!r}: unknown feature kind{suggest(kind, FEATURE_KINDS)}; "
                    f'kinds are {", ".join(FEATURE_KINDS)}; e.g. columns = {{ age = "numeric", '
                    'genre = "multi" }'
                )
        if self.id in self.columns:
            raise ConfigError(
                f"columns.{self.id}: {self.id!r} is the id column (id = {self.id!r}), not a "
                "feature; remove it from columns"
            )
        if self.names is not None:
            if len(set(self.names)) != len(self.names) or not all(n.strip() for n in self.names):
                raise ConfigError(
                    f"names={list(self.names)}: column names must be distinct and non-empty; "
                    'e.g. names = ["user", "age", "gender"]'
                )
            flag_cols = [c for cols in self.flags.values() for c in cols]
            missing = [c for c in (self.id, *self.columns, *flag_cols) if c not in self.names]
            if missing:
                raise ConfigError(
                    f"names={list(self.names)}: no column "
                    f"{missing[0]!r}{suggest(missing[0], self.names)}, which id, columns or flags "
                    "names; name every column of the file in names"
                )
        elif not self.header:
            raise ConfigError(
                "header=false: a file without a header needs names, one per column; "
                'e.g. names = ["user", "age", "gender", "occupation", "zip"]'
            )
        if self.sep == "" or self.multi_sep == "":
            which = "sep" if self.sep == "" else "multi_sep"
            raise ConfigError(
                f'{which}="": a separator needs at least one character; e.g. {which} = "|"'
            )
        if self.max_values is not None and self.max_values < 1:
            raise ConfigError(
                f"max_values={self.max_values}: keep at least one value; set max_values >= 1, or "
                '"none" for all'
            )
