"""Item attribute graph: each item linked to the nodes of its categorical feature values.

Every value of every categorical (or multi-valued) item feature is one node (``genre=Comedy``,
``director=...``, ``actors=...``, ``year=1995``); item ``i`` is linked to the nodes of its
values. Propagating over these edges gives an item that has no interactions (a cold item) the
signal of the attribute nodes it shares with warm items. The edges come from side features
only (content, not behaviour), so the graph holds no interaction and cannot leak an evaluation
edge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metarec._errors import ConfigError, suggest
from metarec.data.features import FeatureTable

__all__ = ["attribute_edges"]


def attribute_edges(
    features: FeatureTable, names: Sequence[str] | None = None, *, offset: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Item-attribute edges of ``features``' categorical columns.

    Args:
        features: the items' encoded :class:`~metarec.data.features.FeatureTable`.
        names: the features to link (default: every categorical feature).
        offset: node index of the first attribute node (e.g. ``n_users + n_items``).

    Returns:
        ``(items, nodes, n_attr)``: ``int64 (E,)`` item indices and attribute node indices
        (``offset + k``), and the number of attribute nodes. Value code 0 (unknown) is skipped.

    Raises:
        ConfigError: a name that is not a categorical feature.
    """
    avail = sorted(features.categorical)
    chosen = avail if names is None else list(names)
    for n in chosen:
        if n not in features.categorical:
            raise ConfigError(
                f"attribute feature {n!r}: not a categorical item feature; choose from {avail}{suggest(n, avail)}"
            )
    items, nodes = [], []
    base = offset
    for n in chosen:
        codes = features.categorical[n]  # (n_items, L)
        it, pos = np.nonzero(codes)
        items.append(it.astype(np.int64))
        nodes.append(base + codes[it, pos].astype(np.int64) - 1)  # code k >= 1 -> node base + k - 1
        base += len(features.vocabs[n]) - 1
    if not items:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    return np.concatenate(items), np.concatenate(nodes), base - offset
