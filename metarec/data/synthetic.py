"""Synthetic multi-domain interactions with known ground truth: the embedded default data.

Generative story (all sizes per domain; every draw comes from one ``numpy`` generator seeded by
``seed``, so the same arguments give the same data):

* Users and items carry categorical side features; each feature value has a latent vector in
  ``R^f``, shared by **all** domains. An item's latent vector is the mean of its feature-value
  vectors plus a small item-specific part; a user's is the mean of their feature-value vectors
  plus a **personal** part of comparable size, which only the user's own ratings reveal (this is
  what few-shot adaptation can recover and a global model cannot).
* Domain ``d`` distorts the shared space by ``A_d = I + shift * R_d`` (``R_d`` Gaussian, scaled)
  and adds a bias ``b_d``: domains share structure, with a controllable shift.
* Score ``s = (A_d u) . v / sqrt(f) + b_d + b_u + b_i``. Explicit feedback: rating
  ``clip(3 + s + noise, 1, 5)``. Implicit feedback: each user's interactions are drawn without
  replacement with probability increasing in ``s`` (Gumbel top-k), rating 1.
* Density varies by domain: domain ``d`` has density ``density * exp(density_spread * z_d)``;
  every user has at least ``min_per_user`` interactions.

:class:`SyntheticTruth` keeps the latent parameters, so tests can compute the noiseless
expected rating of any (user, item) pair and check that adaptation moves towards it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from metarec._errors import DataError
from metarec.data.encoding import IdEncoder
from metarec.data.features import FeatureSpec, encode_features
from metarec.data.table import Columns, InteractionTable

__all__ = ["SyntheticTruth", "make_synthetic", "make_synthetic_large"]


@dataclass(frozen=True)
class SyntheticTruth:
    """Ground truth of a synthetic data set, indexed by raw ids (user ``k`` of domain ``d`` is
    ``d * n_users + k``, item ``k`` is ``d * n_items + k``; domains are named ``"d0"``, ``"d1"``...)."""

    user_vec: dict[int, np.ndarray]
    item_vec: dict[int, np.ndarray]
    user_bias: dict[int, float]
    item_bias: dict[int, float]
    domain_map: dict[str, np.ndarray]
    domain_bias: dict[str, float]
    user_domain: dict[int, str]
    n_factors: int

    def score(self, user: int, item: int) -> float:
        """Noiseless score ``s`` of a (raw user id, raw item id) pair."""
        d = self.user_domain[user]
        u = self.domain_map[d] @ self.user_vec[user]
        return float(
            u @ self.item_vec[item] / np.sqrt(self.n_factors)
            + self.domain_bias[d]
            + self.user_bias[user]
            + self.item_bias[item]
        )

    def expected_rating(self, user: int, item: int) -> float:
        """Noiseless explicit rating ``clip(3 + s, 1, 5)``."""
        return float(np.clip(3.0 + self.score(user, item), 1.0, 5.0))


def make_synthetic(
    n_domains: int = 40,
    n_users: int = 200,
    n_items: int = 300,
    *,
    n_factors: int = 8,
    shift: float = 0.5,
    density: float = 0.05,
    density_spread: float = 0.5,
    min_per_user: int = 15,
    feedback: Literal["explicit", "implicit"] = "explicit",
    noise: float = 0.3,
    n_user_features: int = 3,
    n_item_features: int = 3,
    n_values: int = 8,
    seed: int = 0,
    return_truth: bool = False,
) -> InteractionTable | tuple[InteractionTable, SyntheticTruth]:
    """Generate ``n_domains`` domains of ``n_users`` users and ``n_items`` items each.

    Args:
        n_domains, n_users, n_items: sizes (users and items are per domain).
        n_factors: latent dimension ``f``.
        shift: size of each domain's distortion of the shared latent space (0 = no shift).
        density: mean fraction of a domain's items a user interacts with.
        density_spread: log-normal spread of density across domains (per-domain sparsity).
        min_per_user: every user gets at least this many interactions.
        feedback: ``"explicit"`` (ratings in [1, 5]) or ``"implicit"`` (positives only).
        noise: standard deviation of rating noise (explicit) or of the Gumbel temperature scale.
        n_user_features, n_item_features: categorical side features (``n_values`` values each);
            items also get a multi-valued ``tags`` feature.
        seed: the one source of randomness.
        return_truth: also return the :class:`SyntheticTruth`.

    Returns:
        An :class:`InteractionTable` with columns user, item, rating, domain, timestamp and side
        features (and the truth when asked).

    Example:
        >>> t = make_synthetic(n_domains=2, n_users=20, n_items=30, seed=0)
        >>> t.n_domains - 1, t.n_users - 1
        (2, 40)
    """
    for name, v, lo in (
        ("n_domains", n_domains, 1),
        ("n_users", n_users, 1),
        ("n_items", n_items, 2),
        ("n_factors", n_factors, 1),
    ):
        if int(v) < lo:
            raise DataError(f"{name}={v}: must be >= {lo}; pass {name} >= {lo}")
    if not 0 < density <= 1:
        raise DataError(f"density={density}: must be in (0, 1]; pass e.g. density=0.05")
    if min_per_user > n_items:
        raise DataError(
            f"min_per_user={min_per_user}: cannot exceed n_items={n_items}; lower min_per_user or raise n_items"
        )
    if feedback not in ("explicit", "implicit"):
        raise DataError(f"feedback={feedback!r}: must be 'explicit' or 'implicit'")
    rng = np.random.default_rng(seed)
    f = n_factors
    ufeat_vecs = rng.normal(size=(n_user_features, n_values, f))
    ifeat_vecs = rng.normal(size=(n_item_features, n_values, f))
    tag_vecs = rng.normal(size=(n_values * 2, f)) * 0.5

    frames, ufr, ifr = [], [], []
    truth: dict[str, dict] = {k: {} for k in ("uv", "iv", "ub", "ib", "dm", "db", "ud")}
    t0 = 1_500_000_000
    for d in range(n_domains):
        dn = f"d{d}"
        A = np.eye(f) + shift * rng.normal(size=(f, f)) / np.sqrt(f)
        bd = shift * rng.normal() * 0.5
        # users: (n_users, n_user_features) feature values -> latent
        uvals = rng.integers(0, n_values, size=(n_users, max(n_user_features, 1)))
        ubase = (
            ufeat_vecs[np.arange(n_user_features)[None, :], uvals[:, :n_user_features]].mean(axis=1)
            if n_user_features
            else 0.0
        )
        U = ubase + rng.normal(size=(n_users, f))  # personal part, same scale as the shared part
        bu = rng.normal(size=n_users) * 0.3
        ivals = rng.integers(0, n_values, size=(n_items, max(n_item_features, 1)))
        ibase = (
            ifeat_vecs[np.arange(n_item_features)[None, :], ivals[:, :n_item_features]].mean(axis=1)
            if n_item_features
            else 0.0
        )
        ntags = rng.integers(1, 4, size=n_items)
        tags = rng.integers(0, n_values * 2, size=(n_items, 3))
        tmask = np.arange(3)[None, :] < ntags[:, None]
        tagvec = (tag_vecs[tags] * tmask[..., None]).sum(1) / ntags[:, None]
        V = ibase * 1.5 + tagvec + 0.3 * rng.normal(size=(n_items, f))
        bi = rng.normal(size=n_items) * 0.3
        S = (U @ A.T) @ V.T / np.sqrt(f) + bd + bu[:, None] + bi[None, :]  # (users, items)

        dens = min(1.0, density * float(np.exp(density_spread * rng.normal())))
        counts = np.clip(rng.binomial(n_items, dens, size=n_users), min_per_user, n_items)
        if feedback == "explicit":
            keys = rng.random((n_users, n_items))
        else:  # Gumbel top-k: items with a higher score are more likely to be interacted with
            keys = -(S / max(noise, 1e-3) + rng.gumbel(size=S.shape))
        order = np.argsort(keys, axis=1)
        take = np.arange(n_items)[None, :] < counts[:, None]
        ui, pos = np.nonzero(take)
        ii = order[ui, pos]
        if feedback == "explicit":
            r = np.clip(3.0 + S[ui, ii] + noise * rng.normal(size=ui.shape[0]), 1.0, 5.0)
        else:
            r = np.ones(ui.shape[0])
        ts = t0 + d * 10_000_000 + ui * 1000 + rng.permutation(ui.shape[0]) % 997 * 7
        users = d * n_users + ui  # raw ids are integers: user k of domain d is d * n_users + k
        items = d * n_items + ii
        frames.append(
            pd.DataFrame({"user": users, "item": items, "rating": r, "domain": d, "timestamp": ts})
        )
        udf: dict[str, Any] = {"user": d * n_users + np.arange(n_users)}
        for j in range(n_user_features):
            udf[f"u_f{j}"] = np.char.add(f"v{j}_", uvals[:, j].astype(str))
        ufr.append(pd.DataFrame(udf))
        idf: dict[str, Any] = {"item": d * n_items + np.arange(n_items)}
        for j in range(n_item_features):
            idf[f"i_f{j}"] = np.char.add(f"v{j}_", ivals[:, j].astype(str))
        idf["tags"] = [
            "|".join(f"t{x}" for x in row[:k]) for row, k in zip(tags.tolist(), ntags.tolist())
        ]
        ifr.append(pd.DataFrame(idf))
        if return_truth:
            for k in range(n_users):
                key = d * n_users + k
                truth["uv"][key], truth["ub"][key], truth["ud"][key] = U[k], float(bu[k]), dn
            for k in range(n_items):
                key = d * n_items + k
                truth["iv"][key], truth["ib"][key] = V[k], float(bi[k])
            truth["dm"][dn], truth["db"][dn] = A, float(bd)

    frame = pd.concat(frames, ignore_index=True)
    frame["domain"] = pd.Categorical.from_codes(
        frame["domain"].to_numpy(), [f"d{d}" for d in range(n_domains)]
    )
    table = InteractionTable.from_frame(
        frame,
        Columns(user="user", item="item", rating="rating", domain="domain", timestamp="timestamp"),
        feedback=feedback,
        rating_scale=(1.0, 5.0) if feedback == "explicit" else None,
        user_features=pd.concat(ufr, ignore_index=True),
        user_feature_specs=[FeatureSpec(f"u_f{j}") for j in range(n_user_features)],
        item_features=pd.concat(ifr, ignore_index=True),
        item_feature_specs=[FeatureSpec(f"i_f{j}") for j in range(n_item_features)]
        + [FeatureSpec("tags", "multi")],
    )
    if not return_truth:
        return table
    return table, SyntheticTruth(
        truth["uv"], truth["iv"], truth["ub"], truth["ib"], truth["dm"], truth["db"], truth["ud"], f
    )


def make_synthetic_large(
    n_interactions: int,
    *,
    n_users: int = 2000,
    n_items: int = 1000,
    per_user: int = 50,
    n_factors: int = 8,
    shift: float = 0.5,
    noise: float = 0.3,
    n_values: int = 8,
    seed: int = 0,
    via_frame: bool = False,
) -> InteractionTable:
    """About ``n_interactions`` explicit ratings with :func:`make_synthetic`'s generative story,
    drawn sparsely, for scale tests (10M-100M interactions).

    :func:`make_synthetic` draws a dense ``(users, items)`` score matrix per domain, which costs
    ``users * items`` per domain whatever the density; here each user's items are drawn directly
    (``per_user`` on average, Poisson, at least 15, distinct), only the drawn pairs are scored, and
    domains of ``n_users`` users and ``n_items`` items are added until ``n_interactions`` is
    reached, so time and memory grow with the interactions only. Three categorical features per
    user and per item (no multi-valued tags, to keep feature tables small). The same arguments
    give the same data; it is not the same data as :func:`make_synthetic`. The table is encoded
    directly from the generated arrays (``via_frame=True``: through
    :meth:`InteractionTable.from_frame`, the same table with several times the peak memory).

    Example:
        >>> t = make_synthetic_large(20_000, n_users=100, n_items=200, per_user=40)
        >>> 19_000 <= len(t) <= 21_000
        True
    """
    for name, v, lo in (
        ("n_interactions", n_interactions, 1),
        ("n_users", n_users, 1),
        ("n_items", n_items, 16),
        ("per_user", per_user, 15),
    ):
        if int(v) < lo:
            raise DataError(f"{name}={v}: must be >= {lo}; pass {name} >= {lo}")
    if per_user > n_items // 2:
        raise DataError(
            f"per_user={per_user}: must be <= n_items // 2 = {n_items // 2}; raise n_items or lower per_user"
        )
    rng = np.random.default_rng(seed)
    f, nf = n_factors, 3
    ufeat = rng.normal(size=(nf, n_values, f))
    ifeat = rng.normal(size=(nf, n_values, f))
    n_domains = max(1, -(-int(n_interactions) // (n_users * per_user)))
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("user", "item", "rating", "domain", "timestamp")
    }
    uvals_all, ivals_all = [], []
    total = 0
    for d in range(n_domains):
        A = np.eye(f) + shift * rng.normal(size=(f, f)) / np.sqrt(f)
        bd = shift * rng.normal() * 0.5
        uvals = rng.integers(0, n_values, size=(n_users, nf))
        U = ufeat[np.arange(nf)[None, :], uvals].mean(axis=1) + rng.normal(size=(n_users, f))
        ivals = rng.integers(0, n_values, size=(n_items, nf))
        V = ifeat[np.arange(nf)[None, :], ivals].mean(axis=1) * 1.5 + 0.3 * rng.normal(
            size=(n_items, f)
        )
        bu, bi = rng.normal(size=n_users) * 0.3, rng.normal(size=n_items) * 0.3
        left = int(n_interactions) - total
        counts = np.clip(rng.poisson(per_user, size=n_users), 15, n_items // 2)
        if counts.sum() > left:  # the last domain: fewer users
            counts = counts[: max(1, int(np.searchsorted(np.cumsum(counts), left)) + 1)]
        nu = counts.shape[0]
        # distinct items per user: oversample with replacement, drop repeats, keep a random `count`
        draw = (counts * 1.3 + 4).astype(np.int64)
        uu = np.repeat(np.arange(nu), draw)
        key = np.unique(uu * n_items + rng.integers(0, n_items, size=uu.shape[0]))
        uu, ii = key // n_items, key % n_items
        prio = rng.random(uu.shape[0])
        order = np.lexsort((prio, uu))
        uu, ii = uu[order], ii[order]
        start = np.searchsorted(uu, np.arange(nu))
        keep = (np.arange(uu.shape[0]) - start[uu]) < counts[uu]
        uu, ii = uu[keep], ii[keep]
        s = np.einsum("nf,nf->n", U[uu] @ A.T, V[ii]) / np.sqrt(f) + bd + bu[uu] + bi[ii]
        cols["user"].append(d * n_users + uu)
        cols["item"].append(d * n_items + ii)
        cols["rating"].append(
            np.clip(3.0 + s + noise * rng.normal(size=s.shape[0]), 1.0, 5.0).astype(np.float32)
        )
        cols["domain"].append(np.full(uu.shape[0], d, dtype=np.int32))
        cols["timestamp"].append(
            1_500_000_000 + d * 10_000_000 + uu * 1000 + rng.integers(0, 997, size=uu.shape[0])
        )
        uvals_all.append(uvals[:nu])
        ivals_all.append(ivals)
        total += uu.shape[0]
        if total >= n_interactions:
            n_domains = d + 1
            break
    uv, iv = np.concatenate(uvals_all), np.concatenate(ivals_all)
    n_users_total = sum(len(x) for x in uvals_all)
    users = pd.DataFrame(
        {
            "user": np.concatenate(
                [d * n_users + np.arange(len(x)) for d, x in enumerate(uvals_all)]
            ),
            **{f"u_f{j}": uv[:, j] for j in range(nf)},
        }
    )
    items = pd.DataFrame(
        {"item": np.arange(n_domains * n_items), **{f"i_f{j}": iv[:, j] for j in range(nf)}}
    )
    if not via_frame:
        # Encoded directly: raw user k (item k) is index k + 1 of an encoder over 0..n-1, domain
        # d is index d + 1; the rows are valid by construction (distinct pairs, ratings in
        # [1, 5]), so the frame validation of InteractionTable.from_frame (which holds several
        # copies of every column) is skipped. The same table as the from_frame path (tested).
        raw_users = np.concatenate(
            [d * n_users + np.arange(len(x)) for d, x in enumerate(uvals_all)]
        )
        assert raw_users.shape[0] == n_users_total
        user_ids = IdEncoder(raw_users.tolist(), "user")
        item_ids = IdEncoder(np.arange(n_domains * n_items).tolist(), "item")
        domain_ids = IdEncoder([f"d{d}" for d in range(n_domains)], "domain")
        # user raw id d * n_users + k sits at position (d's offset + k) of raw_users
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in uvals_all])])
        u_raw = np.concatenate(cols["user"])
        dom = np.concatenate(cols["domain"]).astype(np.int64)
        u_idx = offsets[dom] + (u_raw - dom * n_users) + 1
        return InteractionTable(
            u_idx.astype(np.int64),
            np.concatenate(cols["item"]).astype(np.int64) + 1,
            np.concatenate(cols["rating"]).astype(np.float32),
            dom + 1,
            np.concatenate(cols["timestamp"]).astype(np.int64),
            user_ids,
            item_ids,
            domain_ids,
            feedback="explicit",
            rating_scale=(1.0, 5.0),
            user_features=encode_features(
                users, "user", [FeatureSpec(f"u_f{j}") for j in range(nf)], user_ids, what="user"
            ),
            item_features=encode_features(
                items, "item", [FeatureSpec(f"i_f{j}") for j in range(nf)], item_ids, what="item"
            ),
        )
    frame = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    del cols
    frame["domain"] = pd.Categorical.from_codes(
        frame["domain"].to_numpy(), [f"d{d}" for d in range(n_domains)]
    )
    return InteractionTable.from_frame(
        frame,
        Columns(user="user", item="item", rating="rating", domain="domain", timestamp="timestamp"),
        feedback="explicit",
        rating_scale=(1.0, 5.0),
        user_features=users,
        user_feature_specs=[FeatureSpec(f"u_f{j}") for j in range(nf)],
        item_features=items,
        item_feature_specs=[FeatureSpec(f"i_f{j}") for j in range(nf)],
    )
