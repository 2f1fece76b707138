"""What a loaded run adapts to: the support input types shared by :class:`~metarec.adapt.MetaModel`
and :class:`~metarec.method_model.MethodModel`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import pandas as pd

from metarec.data.table import InteractionTable

__all__ = ["Per", "SupportLike"]


Per = Literal["user", "domain"]
SupportLike: TypeAlias = "pd.DataFrame | InteractionTable | Sequence[tuple[Any, ...]]"
