"""A synthetic two-domain table whose target preferences are a function of source preferences.

Generative story (one ``numpy`` generator seeded by ``seed``):

* user ``u`` has source taste ``x_u ~ N(0, I_f)`` and target taste ``y_u = g(x_u)``, with
  ``g(x) = x A`` (``transfer="linear"``) or ``g(x) = tanh(x A) * sqrt(f) / 2`` (``"nonlinear"``),
  ``A`` a random ``f x f`` Gaussian matrix scaled by ``1 / sqrt(f)``;
* items of each domain have ``v_i ~ N(0, I_f)`` and a bias ``b_i ~ N(0, 0.3^2)``; the score is
  ``s = <taste, v_i> / sqrt(f) * signal + b_i``;
* every user interacts with ``n_source`` source items and ``n_target`` target items, drawn
  without replacement with probability increasing in ``s`` (Gumbel top-k; ``temperature``);
* explicit feedback: rating ``clip(3 + s + noise, 1, 5)``; implicit: rating 1.

So a user's source interactions determine their target taste up to ``g``: a bridge that learns
``g`` on warm users transfers to cold ones, while a target-only model cannot know a cold user.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from metarec.data.table import Columns, InteractionTable

__all__ = ["make_two_domain"]


def make_two_domain(
    n_users: int = 300,
    n_source_items: int = 200,
    n_target_items: int = 150,
    *,
    n_factors: int = 4,
    n_source: int = 30,
    n_target: int = 20,
    transfer: Literal["linear", "nonlinear"] = "linear",
    feedback: Literal["explicit", "implicit"] = "explicit",
    signal: float = 1.5,
    noise: float = 0.2,
    temperature: float = 1.0,
    seed: int = 0,
) -> InteractionTable:
    """Build the table (domains ``"source"`` and ``"target"``; users ``0..n_users-1`` shared,
    items named ``"s<k>"`` / ``"t<k>"``).

    Example:
        >>> t = make_two_domain(n_users=50, seed=0)
        >>> t.domain_ids.values, len(t) == 50 * (30 + 20)
        (['source', 'target'], True)
    """
    rng = np.random.default_rng(seed)
    f = n_factors
    x = rng.normal(size=(n_users, f))
    a = rng.normal(size=(f, f)) / np.sqrt(f)
    y = x @ a if transfer == "linear" else np.tanh(x @ a) * np.sqrt(f) / 2.0
    frames = []
    for name, taste, n_items, per_user in (
        ("source", x, n_source_items, n_source),
        ("target", y, n_target_items, n_target),
    ):
        v = rng.normal(size=(n_items, f))
        b = rng.normal(scale=0.3, size=n_items)
        s = taste @ v.T / np.sqrt(f) * signal + b  # (users, items)
        gumbel = rng.gumbel(size=s.shape)
        picks = np.argsort(-(s / temperature + gumbel), axis=1)[:, :per_user]  # (users, per_user)
        users = np.repeat(np.arange(n_users), per_user)
        items = picks.reshape(-1)
        score = s[users, items]
        if feedback == "explicit":
            rating = np.clip(3.0 + score + rng.normal(scale=noise, size=score.shape), 1.0, 5.0)
        else:
            rating = np.ones_like(score)
        frames.append(
            pd.DataFrame(
                {
                    "user": users,
                    "item": [f"{name[0]}{k}" for k in items],
                    "rating": rating,
                    "domain": name,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    cols = Columns(rating="rating", domain="domain")
    scale = (1.0, 5.0) if feedback == "explicit" else None
    return InteractionTable.from_frame(frame, cols, feedback=feedback, rating_scale=scale)
