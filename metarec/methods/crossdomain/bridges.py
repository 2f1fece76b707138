"""Bridges from a user's source-domain representation to their target-domain one.

* **EMCDR** (Man et al., IJCAI 2017): train an MF on each domain (:func:`~metarec.methods.crossdomain.mf.fit_mf`),
  then a mapping ``f`` on the users present in both, minimising the embedding distance
  ``sum_u ||f(v_u^s) - v_u^t||^2``; a cold user's target vector is ``f(v_u^s)``.
  :func:`fit_mapping` fits ``f`` (``"linear"``: ``x A + c``; ``"mlp"``: one tanh hidden layer).
* **PTUPCDR** (Zhu et al., WSDM 2022): a meta-network turns the user's source history into a
  personalised bridge matrix,

  ``a_j = w^T relu(W_a q_j)``, ``c_u = sum_j softmax(a)_j q_j`` (attention pooling of the
  source item vectors ``q_j`` of the user's history),
  ``B_u = B_0 + reshape(MLP(c_u), (du, du))``, ``v_u^t = v_u^s B_u``,

  trained *task-oriented*: on the warm users' target interactions with the target model's loss
  (MSE, or BCE with sampled negatives), with both MF models frozen. ``B_0`` is a learned shared
  bridge (zero at start) that the personal part corrects; with ``B_0 = 0`` the form is the
  paper's.

Both bridges are :class:`~metarec.methods.crossdomain.evaluate.ColdStartScorer`\\ s: ``user_vectors``
is the bridged vector and ``score`` the target MF's.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from metarec._errors import ConfigError
from metarec.methods.crossdomain._train import Validate, point_loss, train_selected
from metarec.methods.crossdomain.data import CrossDomainView, RowBatches, user_histories
from metarec.methods.crossdomain.mf import MF
from metarec.models.base import seeded

__all__ = ["Mapping", "fit_mapping", "EMCDR", "MetaBridge", "PTUPCDR"]

MappingKind = Literal["linear", "mlp"]


class Mapping(nn.Module):
    """EMCDR's mapping ``f: (..., d_in) -> (..., d_out)``.

    ``kind="linear"``: ``f(x) = x A + c`` (``A = linear.weight.T``); ``kind="mlp"``:
    ``f(x) = W_2 tanh(W_1 x + b_1) + b_2`` with ``hidden`` units (EMCDR's MLP form).
    """

    def __init__(
        self, d_in: int, d_out: int, kind: MappingKind = "linear", hidden: int = 64
    ) -> None:
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ConfigError(f"mapping kind={kind!r}: must be 'linear' or 'mlp'")
        self.kind = kind
        if kind == "linear":
            self.net: nn.Module = nn.Linear(d_in, d_out)
        else:
            self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def fit_mapping(
    xs: torch.Tensor,
    xt: torch.Tensor,
    *,
    kind: MappingKind = "linear",
    hidden: int = 64,
    epochs: int = 300,
    lr: float = 0.01,
    batch_size: int | None = None,
    weight_decay: float = 0.0,
    seed: int = 0,
    validate: Validate | None = None,
    patience: int | None = None,
    mapping: Mapping | None = None,
) -> tuple[Mapping, dict]:
    """Fit ``f`` minimising ``mean_u ||f(xs_u) - xt_u||^2`` with Adam.

    Args:
        xs, xt: ``(n, d_in)`` source and ``(n, d_out)`` target vectors of the same users.
        kind, hidden: see :class:`Mapping`.
        epochs: passes over the users; batch_size: users per step (``None``: all).
        validate: scores the mapping after each epoch (the best epoch is kept); it sees the
            mapping through ``mapping=`` (pass your own instance to score it).
        mapping: an instance to train (default: a new one seeded by ``seed``).

    Returns:
        ``(mapping, log)``.

    Example:
        >>> x = torch.randn(200, 3); a = torch.randn(3, 2)
        >>> f, _ = fit_mapping(x, x @ a, epochs=400, lr=0.05)
        >>> bool(torch.allclose(f.net.weight.T, a, atol=0.05))
        True
    """
    if xs.dim() != 2 or xt.dim() != 2 or xs.shape[0] != xt.shape[0]:
        raise ConfigError(
            f"fit_mapping: xs {tuple(xs.shape)} and xt {tuple(xt.shape)} must be (n, d) rows of the same n users"
        )
    if xs.shape[0] == 0:
        raise ConfigError(
            "fit_mapping: no users to fit on; the mapping needs users present in both domains"
        )
    xs, xt = xs.detach(), xt.detach()
    if mapping is None:
        with seeded(seed):
            mapping = Mapping(xs.shape[1], xt.shape[1], kind, hidden)
    opt = torch.optim.Adam(mapping.parameters(), lr=lr, weight_decay=weight_decay)
    n = xs.shape[0]
    bs = n if batch_size is None else batch_size
    gen = torch.Generator().manual_seed(seed)

    def run_epoch(_: int) -> float:
        perm = torch.randperm(n, generator=gen)
        total, k = 0.0, 0
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            loss = (mapping(xs[idx]) - xt[idx]).square().sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, k = total + float(loss.detach()), k + 1
        return total / k

    log = train_selected(run_epoch, [mapping], epochs=epochs, validate=validate, patience=patience)
    return mapping, log


class EMCDR(nn.Module):
    """Source MF + target MF + mapping; cold user ``u``: ``f(v_u^s)`` scored by the target MF."""

    def __init__(self, source: MF, target: MF, mapping: Mapping) -> None:
        super().__init__()
        self.source, self.target, self.mapping = source, target, mapping

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.mapping(self.source.user_vectors(users))

    def score(self, uvec: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.target.score(uvec, items)

    def fit_mapping(self, users: np.ndarray, **kwargs) -> dict:
        """Fit the mapping on ``users`` (present in both domains); ``kwargs`` go to :func:`fit_mapping`."""
        u = torch.from_numpy(np.asarray(users, dtype=np.int64))
        with torch.no_grad():
            xs, xt = self.source.user_vectors(u), self.target.user_vectors(u)
        _, log = fit_mapping(xs, xt, mapping=self.mapping, **kwargs)
        return log


class MetaBridge(nn.Module):
    """PTUPCDR's meta-network: history ``(B, H, dq)`` + mask ``(B, H)`` -> bridges ``(B, du, du)``.

    Args:
        dq: item-vector size; du: user-vector size; hidden: width of both MLPs.
    """

    def __init__(self, dq: int, du: int, hidden: int = 64) -> None:
        super().__init__()
        self.du = du
        self.attention = nn.Sequential(
            nn.Linear(dq, hidden), nn.ReLU(), nn.Linear(hidden, 1, bias=False)
        )
        out = nn.Linear(hidden, du * du)
        self.meta = nn.Sequential(nn.Linear(dq, hidden), nn.ReLU(), out)
        with torch.no_grad():
            out.weight.mul_(0.1)
            out.bias.zero_()
        self.shared = nn.Parameter(torch.zeros(du, du))  # B_0

    def characteristic(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention-pooled history ``c_u``: ``(B, H, dq), (B, H) -> (B, dq)`` (zeros for no history)."""
        logits = self.attention(hist).squeeze(-1).masked_fill(~mask, -1e9)  # (B, H)
        w = torch.softmax(logits, dim=-1) * mask  # (B, H); all-padding rows become 0
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-9)
        return (w.unsqueeze(-1) * hist).sum(-2)  # (B, dq)

    def forward(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        c = self.characteristic(hist, mask)
        return self.shared + self.meta(c).view(-1, self.du, self.du)  # (B, du, du)


class PTUPCDR(nn.Module):
    """Frozen source and target MFs joined by a :class:`MetaBridge`.

    Args:
        source, target: the two MF models (their parameters are frozen here).
        histories: ``int64 (n_users, H)`` source items per user (0 = padding), from
            :func:`~metarec.methods.crossdomain.data.user_histories`.
        hidden: the meta-network's width.
        seed: initialisation seed of the meta-network.
    """

    histories: torch.Tensor  # buffer int64 (n_users, H)

    def __init__(
        self, source: MF, target: MF, histories: torch.Tensor, *, hidden: int = 64, seed: int = 0
    ) -> None:
        super().__init__()
        self.source, self.target = source, target
        for p in [*source.parameters(), *target.parameters()]:
            p.requires_grad_(False)
        self.register_buffer("histories", histories)
        with seeded(seed):
            self.bridge = MetaBridge(source.dim, source.user_dim, hidden)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """``v_u^s B_u``: ``(B,) -> (B, du)``; bridges are computed once per distinct user."""
        uniq, inv = torch.unique(users, return_inverse=True)
        h = self.histories[uniq]  # (U, H)
        q = self.source.item[self.source.item_map[h]]  # (U, H, d)
        b = self.bridge(q, h != 0)  # (U, du, du)
        v = torch.bmm(self.source.user_vectors(uniq).unsqueeze(1), b).squeeze(1)  # (U, du)
        return v[inv]

    def score(self, uvec: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.target.score(uvec, items)

    def fit_bridge(
        self,
        view: CrossDomainView,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        negatives: int,
        seed: int,
        validate: Validate | None = None,
        patience: int | None = None,
    ) -> dict:
        """Train the meta-network on the warm users' target rows with the target loss."""
        t = view.table
        rows = view.target_rows[np.isin(t.users[view.target_rows], view.warm_users)]
        batches = RowBatches(view, rows, batch_size=batch_size, negatives=negatives, seed=seed)
        opt = torch.optim.Adam(self.bridge.parameters(), lr=lr)

        def run_epoch(_: int) -> float:
            total, k = 0.0, 0
            for u, i, y, _d in batches.epoch():
                loss = point_loss(self.score(self.user_vectors(u), i), y, view.train_feedback)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, k = total + float(loss.detach()), k + 1
            return total / max(k, 1)

        return train_selected(
            run_epoch, [self.bridge], epochs=epochs, validate=validate, patience=patience
        )


def ptupcdr_histories(view: CrossDomainView, length: int, seed: int) -> torch.Tensor:
    """Each user's source-domain history (training rows only), ``int64 (n_users, length)``."""
    items, _ = user_histories(view, view.source_rows, length, seed=seed)
    return items
