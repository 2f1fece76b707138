"""A small synthetic table where a user's (or an item's) own interactions carry what its features do not.

Generative story (one ``numpy`` generator seeded by ``seed``): items have a categorical feature
``genre`` (``n_genres`` values) and ``tag``; users have a categorical feature ``group``. User
``u`` has a personal bias ``b_u ~ N(0, user_bias^2)`` and a personal taste ``w_u`` over genres
(``N(0, 1)``), neither visible in their features; item ``i`` has a bias
``b_i = beta_genre + e_i`` (``e_i ~ N(0, item_bias^2)``, an item-own part its features do not
show). The score is ``s = b_u + w_u[genre_i] * taste + b_i``. Every user rates ``per_user``
random items. Explicit feedback: ``clip(3 + s + noise, 1, 5)``; implicit: label
``1[s + noise > 0]`` (both labels kept as 0/1 ratings; ``feedback="implicit"``).

So a model without the user's support cannot know ``b_u`` or ``w_u`` (few-shot adaptation can),
and one without an item's interactions cannot know ``e_i`` (item warm-up can).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from metarec.data.features import FeatureSpec
from metarec.data.table import Columns, InteractionTable

__all__ = ["make_taste_table"]


def make_taste_table(
    n_users: int = 200,
    n_items: int = 120,
    *,
    per_user: int = 30,
    n_genres: int = 5,
    user_bias: float = 0.8,
    item_bias: float = 0.3,
    taste: float = 0.8,
    noise: float = 0.2,
    feedback: Literal["explicit", "implicit"] = "explicit",
    seed: int = 0,
) -> InteractionTable:
    """Build the table (see the module docstring); timestamps are the rating order.

    Example:
        >>> t = make_taste_table(n_users=20, n_items=30, per_user=10, seed=0)
        >>> len(t), t.feedback
        (200, 'explicit')
    """
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, n_genres, size=n_items)
    tag = rng.integers(0, 3, size=n_items)
    group = rng.integers(0, 3, size=n_users)
    bu = rng.normal(scale=user_bias, size=n_users)
    wu = rng.normal(size=(n_users, n_genres))
    bi = rng.normal(scale=0.5, size=n_genres)[genre] + rng.normal(scale=item_bias, size=n_items)
    per_user = min(per_user, n_items)
    items = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :per_user].reshape(-1)
    users = np.repeat(np.arange(n_users), per_user)
    s = (
        bu[users]
        + wu[users, genre[items]] * taste
        + bi[items]
        + rng.normal(scale=noise, size=users.shape[0])
    )
    if feedback == "explicit":
        rating = np.clip(3.0 + s, 1.0, 5.0)
    else:
        rating = (s > 0).astype(np.float64)
    frame = pd.DataFrame(
        {"user": users, "item": items, "rating": rating, "timestamp": np.arange(users.shape[0])}
    )
    ifr = pd.DataFrame(
        {
            "item": np.arange(n_items),
            "genre": [f"g{g}" for g in genre],
            "tag": [f"t{x}" for x in tag],
        }
    )
    ufr = pd.DataFrame({"user": np.arange(n_users), "group": [f"u{g}" for g in group]})
    return InteractionTable.from_frame(
        frame,
        Columns(user="user", item="item", rating="rating", timestamp="timestamp"),
        feedback=feedback,
        rating_scale=(1.0, 5.0) if feedback == "explicit" else None,
        user_features=ufr,
        user_feature_specs=[FeatureSpec("group")],
        item_features=ifr,
        item_feature_specs=[FeatureSpec("genre"), FeatureSpec("tag")],
    )
