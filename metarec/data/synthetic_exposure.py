"""A synthetic table where *what* a user rates differs from *how* they rate it.

Generative story (one ``numpy`` generator seeded by ``seed``): item ``i`` has a popularity
``w_i = exp(N(0, popularity^2))``, a quality ``q_i ~ N(0, 1)`` independent of it, and one of
``n_groups`` taste groups ``h_i`` (its categorical feature ``genre``); user ``u`` belongs to group
``g_u`` (hidden: the user's features are a constant); its categorical feature ``title`` is its
own (an id for feature-only models such as MeLU). A user rates ``per_user`` items drawn
without replacement with probability ``∝ w_i * (affinity if h_i == g_u else 1)`` (exposure:
popularity and taste), and rates item ``i`` ``clip(round(3 + q_i + taste * (+1 / -1 by group
match) + noise), 1, 5)``.

So the items a cold user will rate highly are the popular, on-taste ones, while a rating model
learns quality: ranking the catalogue by predicted rating puts rarely-seen high-quality items
first, which the user mostly never rates. A model trained to rank relevance labels against
sampled catalogue negatives (:mod:`metarec.config.objective`) learns the exposure too, and a
few shots reveal the user's group.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable

__all__ = ["make_exposure_table"]


def make_exposure_table(
    n_users: int = 300,
    n_items: int = 120,
    *,
    per_user: int = 30,
    n_groups: int = 3,
    popularity: float = 1.2,
    affinity: float = 4.0,
    taste: float = 0.7,
    noise: float = 0.5,
    seed: int = 0,
) -> InteractionTable:
    """Build the table (see the module docstring); explicit ratings 1..5, timestamps are the
    rating order, item features ``genre`` (the taste group) and ``title``, user feature
    ``segment`` (constant).

    Example:
        >>> t = make_exposure_table(n_users=20, n_items=40, per_user=10, seed=0)
        >>> len(t), t.feedback, t.rating_scale
        (200, 'explicit', (1.0, 5.0))
    """
    rng = np.random.default_rng(seed)
    w = np.exp(rng.normal(scale=popularity, size=n_items))
    q = rng.normal(size=n_items)
    h = rng.integers(0, n_groups, size=n_items)
    g = rng.integers(0, n_groups, size=n_users)
    per_user = min(per_user, n_items)
    match = h[None, :] == g[:, None]  # (users, items)
    logits = np.log(w)[None, :] + np.where(match, np.log(affinity), 0.0)
    gumbel = -np.log(-np.log(rng.random((n_users, n_items))))
    items = np.argsort(-(logits + gumbel), axis=1)[:, :per_user]  # Gumbel top-k: exposure
    users = np.repeat(np.arange(n_users), per_user)
    items = items.reshape(-1)
    score = q[items] + taste * np.where(match[users, items], 1.0, -1.0)
    rating = np.clip(np.round(3.0 + score + rng.normal(scale=noise, size=users.shape[0])), 1, 5)
    frame = pd.DataFrame(
        {"user": users, "item": items, "rating": rating, "timestamp": np.arange(users.shape[0])}
    )
    ifr = pd.DataFrame(
        {
            "item": np.arange(n_items),
            "genre": [f"g{x}" for x in h],
            "title": [f"i{i}" for i in range(n_items)],
        }
    )
    ufr = pd.DataFrame({"user": np.arange(n_users), "segment": ["all"] * n_users})
    return InteractionTable.from_frame(
        frame,
        Columns(user="user", item="item", rating="rating", timestamp="timestamp"),
        feedback="explicit",
        rating_scale=(1.0, 5.0),
        user_features=ufr,
        user_feature_specs=[FeatureSpec("segment")],
        item_features=ifr,
        item_feature_specs=[FeatureSpec("genre"), FeatureSpec("title")],
    )
