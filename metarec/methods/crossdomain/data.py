"""What the cross-domain methods may train on, and minibatches over it.

:func:`cross_domain_view` reads a cold-domain-users :class:`~metarec.episodes.splits.MetaSplits`
(:func:`~metarec.episodes.splits.cold_domain_users_split`): the target domain is the one domain
of the evaluation pools; the training rows are exactly the meta-train pool's rows, cut into
source-domain rows (every user, the cold users included: their source history is what transfers)
and target-domain rows (warm users only). Cold users' target rows are never in the view.

:class:`RowBatches` turns a set of rows into shuffled ``(users, items, targets, domains)``
minibatches; with implicit feedback each positive gets ``negatives`` items of its own domain
that the user never interacted with in training (label 0), drawn from the items of that domain's
training rows. A view trained to rank ratings (``relevance`` set: a ranking scenario on explicit
data) trains like implicit feedback: each row's target is its relevance label (``rating >=
relevance``) and each row gets ``negatives`` sampled items the same way.
(Evaluation draws its candidates from the whole catalogue; drawing training negatives
from it too would make every item that only held-out rows contain a training negative that is never
a positive, and teach the models to rank all such items last.)
:func:`user_histories` gives each user a padded list of their source items (PTUPCDR's input).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from metarec._errors import ConfigError
from metarec.data.table import InteractionTable
from metarec.episodes.splits import MetaSplits

__all__ = [
    "CrossDomainView",
    "cross_domain_view",
    "RowBatches",
    "paired_batches",
    "user_histories",
    "user_history_rows",
]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class CrossDomainView:
    """The training side of a cross-domain cold-start split.

    Attributes:
        table: the interaction table.
        target: encoded index of the target domain; ``target_name`` its name.
        source_rows, target_rows: ``int64`` table rows of meta-train in the source domain(s)
            and in the target domain.
        cold_users: users of the evaluation pools (their target rows are held out).
        known_items: ``bool (n_items,)``: items with at least one training row (others are
            scored through the unknown slot 0).
        eval_pools: names of the pools whose units are cold (validation and test).
        relevance: explicit ratings trained to rank: a rating at least this is relevant (label
            1, else 0), and the methods train on those labels and sampled negatives with the
            implicit-feedback loss; ``None``: the table's own targets.
    """

    table: InteractionTable
    target: int
    target_name: str
    source_rows: np.ndarray
    target_rows: np.ndarray
    cold_users: np.ndarray
    known_items: np.ndarray
    eval_pools: tuple[str, ...]
    relevance: float | None = None

    @property
    def train_feedback(self) -> str:
        """The feedback the methods train on: ``"implicit"`` (clicks, or relevance labels of
        ratings trained to rank) or ``"explicit"`` (ratings)."""
        return "implicit" if self.relevance is not None else self.table.feedback

    @property
    def train_rows(self) -> np.ndarray:
        return np.concatenate([self.source_rows, self.target_rows])

    @property
    def warm_users(self) -> np.ndarray:
        """Users with training rows in both the source domain(s) and the target domain."""
        t = self.table
        return np.intersect1d(
            np.unique(t.users[self.source_rows]), np.unique(t.users[self.target_rows])
        )

    @property
    def item_map(self) -> torch.Tensor:
        """``int64 (n_items,)``: known items map to themselves, the rest to 0."""
        idx = np.arange(self.table.n_items, dtype=np.int64)
        return torch.from_numpy(np.where(self.known_items, idx, 0))


def cross_domain_view(
    table: InteractionTable, splits: MetaSplits, *, relevance: float | None = None
) -> CrossDomainView:
    """The training view of ``splits`` (a cold-domain-users split of ``table``); with
    ``relevance`` (explicit ratings only), the ratings train as relevance labels
    (:attr:`CrossDomainView.relevance`).

    Raises:
        ConfigError: the splits are not cross-domain (units are not (user, domain) pairs, or
            the evaluation pools span several domains), or a training row is a held-out row.
    """
    train = splits.pools[splits.train]
    pools = tuple(dict.fromkeys([splits.val, *splits.states]))
    if train.unit != "user-domain":
        raise ConfigError(
            f"splits: task units are {train.unit!r}; the cross-domain methods need (user, domain) units from "
            "cold_domain_users_split (protocol.split = 'cold_domain_users')"
        )
    eval_rows = np.concatenate([splits.pools[p].rows for p in pools])
    if eval_rows.shape[0] == 0:
        raise ConfigError(
            "splits: the evaluation pools are empty (no user interacts in both the target and a source domain with "
            "enough target interactions); lower protocol.min_interactions or raise protocol.beta"
        )
    doms = np.unique(table.domains[eval_rows])
    if doms.shape[0] != 1:
        raise ConfigError(
            f"splits: the evaluation pools {list(pools)} hold rows of {doms.shape[0]} domains; the cross-domain "
            "methods need one target domain (cold_domain_users_split)"
        )
    if relevance is not None and table.feedback != "explicit":
        raise ConfigError(
            f"relevance={relevance}: {table.feedback} feedback has no ratings to turn into relevance "
            "labels; pass relevance=None"
        )
    target = int(doms[0])
    warm = [name for name, units in getattr(splits, "warm_units", {}).items() if len(units)]
    if warm:  # a predefined split whose test users also train in the target domain
        raise ConfigError(
            f"protocol.split = 'predefined': the dataset's own split is warm (the users of {warm} also train "
            f"in the target domain {str(table.domain_ids.values[target - 1])!r}), and the cross-domain methods "
            "need cold target users, whose target rows are all held out; bench this scenario with the "
            "meta-learners and baselines only (e.g. --algorithms maml,finetune,global,popularity; --quick "
            "picks them), or draw cold users with protocol.split = 'cold_domain_users'"
        )
    if np.intersect1d(train.rows, eval_rows).shape[0]:
        raise ConfigError(
            "splits: meta-train shares rows with an evaluation pool; rebuild the splits"
        )
    rows = train.rows
    in_target = table.domains[rows] == target
    known = np.zeros(table.n_items, dtype=bool)
    known[table.items[rows]] = True
    known[0] = False
    cold = np.unique(table.users[eval_rows])
    assert not np.isin(table.users[rows[in_target]], cold).any(), (
        "a cold user's target row is in meta-train"
    )
    return CrossDomainView(
        table,
        target,
        str(table.domain_ids.values[target - 1]),
        rows[~in_target],
        rows[in_target],
        cold,
        known,
        pools,
        None if relevance is None else float(relevance),
    )


class RowBatches:
    """Shuffled minibatches over table ``rows``; one call of :meth:`epoch` is one pass.

    Args:
        view: the training view (supplies the table, the catalogue and the training positives).
        rows: table row indices to iterate.
        batch_size: positives per batch (each batch holds ``batch_size * (1 + negatives)``
            examples with implicit feedback).
        negatives: sampled negatives per row (implicit feedback, or ratings trained to rank:
            ``view.relevance``; ignored for ratings trained as ratings).
        seed: seeds the shuffling and the negatives.

    Each batch is ``(users, items, targets, domains)``, ``int64/int64/float/int64 (B,)``; the
    targets are the ratings, clicks, or (``view.relevance``) relevance labels ``rating >=
    relevance`` as 1.0 / 0.0; sampled negatives follow a batch's rows with target 0.
    """

    def __init__(
        self,
        view: CrossDomainView,
        rows: np.ndarray,
        *,
        batch_size: int,
        negatives: int = 0,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r}: must be >= 1")
        t = view.table
        self.table = t
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.relevance = view.relevance
        self.negatives = int(negatives) if view.train_feedback == "implicit" else 0
        self.rng = np.random.default_rng(seed)
        if self.negatives:
            tr = view.train_rows
            self._pos = np.unique(t.users[tr].astype(np.int64) * t.n_items + t.items[tr])
            pairs = np.unique(
                np.stack([t.domains[tr], t.items[tr]], axis=1), axis=0
            )  # (pairs, 2) by domain
            self._items = pairs[:, 1]
            counts = np.bincount(pairs[:, 0], minlength=t.n_domains)
            self._start, self._len = np.cumsum(counts) - counts, counts

    def __len__(self) -> int:
        return max(1, -(-self.rows.shape[0] // self.batch_size))

    def epoch(self) -> Iterator[Batch]:
        t = self.table
        order = self.rng.permutation(self.rows)
        for s in range(0, max(order.shape[0], 1), self.batch_size):
            r = order[s : s + self.batch_size]
            u, i, y, d = t.users[r], t.items[r], t.ratings[r].astype(np.float32), t.domains[r]
            if self.relevance is not None:
                y = (y >= self.relevance - 1e-9).astype(np.float32)
            if self.negatives:
                nu, nd = np.repeat(u, self.negatives), np.repeat(d, self.negatives)
                u, d = np.concatenate([u, nu]), np.concatenate([d, nd])
                i = np.concatenate([i, self._sample(nu, nd)])
                y = np.concatenate([y, np.zeros(nu.shape[0], dtype=np.float32)])
            yield (
                torch.from_numpy(u),
                torch.from_numpy(i),
                torch.from_numpy(y),
                torch.from_numpy(d),
            )

    def _sample(self, users: np.ndarray, doms: np.ndarray) -> np.ndarray:
        """One catalogue item of each row's domain, resampled (3 rounds) while it is a positive."""
        items = np.zeros(users.shape[0], dtype=np.int64)
        todo = np.arange(users.shape[0])
        for _ in range(3):
            d = doms[todo]
            pick = self._start[d] + (self.rng.random(todo.shape[0]) * self._len[d]).astype(np.int64)
            items[todo] = self._items[pick]
            keys = users[todo].astype(np.int64) * self.table.n_items + items[todo]
            pos = np.minimum(np.searchsorted(self._pos, keys), self._pos.shape[0] - 1)
            todo = todo[self._pos[pos] == keys]
            if todo.shape[0] == 0:
                break
        return items


def paired_batches(
    view: CrossDomainView, *, batch_size: int, negatives: int, seed: int
) -> tuple[RowBatches, RowBatches]:
    """Source and target :class:`RowBatches` with the same number of batches per epoch.

    The ``batch_size`` positives of a step are shared in proportion to the domains' row counts,
    so one epoch is one pass over each domain and ``zip(src.epoch(), tgt.epoch())`` pairs them.
    """
    ns, nt = view.source_rows.shape[0], view.target_rows.shape[0]
    if ns == 0 or nt == 0:
        raise ConfigError(
            f"splits: meta-train has {ns} source-domain and {nt} target-domain rows; joint training needs both"
        )
    steps = max(1, -(-(ns + nt) // batch_size))
    src = RowBatches(
        view, view.source_rows, batch_size=-(-ns // steps), negatives=negatives, seed=seed
    )
    tgt = RowBatches(
        view, view.target_rows, batch_size=-(-nt // steps), negatives=negatives, seed=seed + 1
    )
    return src, tgt


def user_history_rows(
    view: CrossDomainView, rows: np.ndarray, length: int, *, seed: int = 0
) -> np.ndarray:
    """Each user's table rows among ``rows``: at most ``length`` of them (a seeded random subset),
    ``int64 (n_users, length)``, ``-1`` = padding."""
    if length < 1:
        raise ConfigError(f"history_len={length!r}: must be >= 1")
    t = view.table
    rng = np.random.default_rng(seed)
    rows = np.asarray(rows, dtype=np.int64)
    order = np.lexsort((rng.random(rows.shape[0]), t.users[rows]))
    picked = rows[order]
    users = t.users[picked]
    counts = np.bincount(users, minlength=t.n_users)
    start = np.cumsum(counts) - counts
    rank = np.arange(users.shape[0]) - start[users]
    keep = rank < length
    out = np.full((t.n_users, length), -1, dtype=np.int64)
    out[users[keep], rank[keep]] = picked[keep]
    return out


def user_histories(
    view: CrossDomainView, rows: np.ndarray, length: int, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's items among ``rows``: at most ``length`` of them (a seeded random subset,
    :func:`user_history_rows`).

    Returns:
        ``items int64 (n_users, length)`` (0 = padding) and ``mask bool (n_users, length)``.
    """
    hist = user_history_rows(view, rows, length, seed=seed)
    out = np.where(hist >= 0, view.table.items[np.maximum(hist, 0)], 0)
    return torch.from_numpy(out), torch.from_numpy(out != 0)
