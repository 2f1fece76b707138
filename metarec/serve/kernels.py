"""Batched adapt-and-score for the served models: B cold users adapted and ranked in a few calls.

:meth:`metarec.recommend.load.MetaModel.adapt_many` adapts many users in one ``vmap`` but then scores
them one by one; a server answering many small requests needs both halves batched. A kernel
adapts B tasks (one per request) with the run's inner loop, ``fast <- fast - lr * grad L_support``
(the same masked loss of :data:`metarec.algorithms.LOSSES`, the same steps and rate), written
over explicit task-batched weights ``(B, out, in)`` so that one autograd call per step serves
every task (the tasks are independent, so the gradient of the summed loss is each task's own).
It then scores the whole catalogue for all B users in a few batched matrix products.

* :class:`MeLUKernel`: MeLU with its default inner loop (every ``decision.*`` and ``head.*``
  weight adapts, the feature embeddings do not). The first decision layer's update is kept in
  the span of the support inputs: an inner step changes ``W`` by ``-lr * sum_r delta_r x_r^T``
  (``x_r`` the support row's input, ``delta_r`` the gradient at its pre-activation), so
  ``W = W_0 + sum_r D_r x_r^T`` and, for a catalogue item, ``W [x_u; x_c] = W_0 [x_u; x_c] +
  sum_r D_r (x_r . [x_u; x_c])``. ``W_0 x_c`` is computed once for the catalogue; each user costs
  ``items x support x hidden`` multiply-adds in that layer instead of ``items x inputs x hidden``.
  The same numbers as the full model, up to float rounding (tests compare in float64).
* :class:`TwoTowerKernel`: the two-tower model with its default inner loop (``user.unknown``,
  ``user_tower.*``, ``bias``): the item tower does not adapt, so the catalogue's item vectors
  are computed once and a user's scores are one product with its adapted user vector.

:func:`kernel_for` picks the kernel a run's model declares (``serving_kernel``), or ``None``
when none applies (other models, learned per-parameter rates, another inner-loop pattern): the
engine then uses the library's ``adapt_many`` and ``recommend`` (correct for every run, slower).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from metarec._errors import ConfigError
from metarec.algorithms import LOSSES, adapt_patterns
from metarec.models.base import split_params
from metarec.models.id_models import TwoTower
from metarec.models.melu import MeLU

__all__ = ["Kernel", "MeLUKernel", "TwoTowerKernel", "KERNELS", "kernel_for"]

Support = tuple[
    np.ndarray, np.ndarray, np.ndarray
]  # uidx (B,), items (B, S), ratings (B, S) with -1 padding
_GRAM_MAX_ITEMS = (
    8192  # MeLU: precompute item-item dot products up to this catalogue size (256 MiB)
)


class Kernel:
    """Batched adaptation and scoring for one run (see the module docstring)."""

    name = "kernel"

    @classmethod
    def applies(cls, model: Any, fast: set[str]) -> bool:
        """Whether this kernel computes ``model``'s inner loop over the parameters ``fast``."""
        return False

    def __init__(self, meta: Any) -> None:
        self.meta = meta
        self.model = meta.model
        self.params = meta.params
        self.loss = LOSSES[meta.algo.loss]
        self.n_items = len(meta.item_ids) - 1
        self.device, self.dtype = meta.device, meta.dtype

    # ------------------------------------------------------------------ public
    def adapt(
        self,
        uidx: np.ndarray,
        items: Sequence[np.ndarray],
        ratings: Sequence[np.ndarray],
        steps: int,
        lr: float,
    ) -> dict[str, torch.Tensor]:
        """B tasks' adapted state: ``uidx (B,)``, per task ``items (S_b,)`` and ``ratings (S_b,)``."""
        users, itm, tgt, mask = self._pad(uidx, items, ratings)
        state, fast = self._init(users, itm, mask)
        for _ in range(steps):
            leaves = {k: v.detach().requires_grad_() for k, v in fast.items()}
            with torch.enable_grad():
                pred, wrt = self._support_pred(state, leaves)  # (B, S)
                loss = self.loss(
                    pred, tgt, mask
                ).sum()  # tasks are independent: each gets its own gradient
                names = list(wrt)
                grads = torch.autograd.grad(loss, [wrt[k] for k in names])
            with torch.no_grad():
                fast = self._step(leaves, dict(zip(names, grads, strict=True)), lr)
        return {**state, **{k: v.detach() for k, v in fast.items()}}

    def score_catalogue(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw scores of every catalogue item (indices ``1..n_items``) for each task: ``(B, n_items)``."""
        raise NotImplementedError

    def finite_tasks(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """``bool (B,)``: whether each task's adapted state is finite (no NaN, no infinity)."""
        b = next(iter(state.values())).shape[0]
        flat = [v.reshape(b, -1) for v in state.values() if v.is_floating_point()]
        return torch.stack([_finite_rows(v) for v in flat]).all(dim=0) if flat else None  # type: ignore[return-value]

    def finite_scores(self, state: dict[str, torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
        """``bool (B,)``: whether each row of ``scores (B, C)`` (of ``state``) is finite."""
        return _finite_rows(scores)

    def score_items(self, state: dict[str, torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        """Raw scores of item indices ``items (B, P)`` (each task its own row): ``(B, P)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ internals
    def _pad(self, uidx: np.ndarray, items: Sequence[np.ndarray], ratings: Sequence[np.ndarray]):
        b = len(uidx)
        width = max([len(i) for i in items] + [1])
        itm = np.zeros((b, width), np.int64)  # (tasks, support)
        tgt = np.zeros((b, width), np.float64)
        mask = np.zeros((b, width), bool)
        for t, (i, r) in enumerate(zip(items, ratings, strict=True)):
            itm[t, : len(i)], tgt[t, : len(i)], mask[t, : len(i)] = i, r, True
        users = np.repeat(np.asarray(uidx, np.int64)[:, None], width, axis=1)  # (tasks, support)
        dev = self.device
        return (
            torch.from_numpy(users).to(dev),
            torch.from_numpy(itm).to(dev),
            torch.from_numpy(tgt).to(dev, self.dtype),
            torch.from_numpy(mask).to(dev),
        )

    def _init(self, users: torch.Tensor, items: torch.Tensor, mask: torch.Tensor):
        raise NotImplementedError

    def _support_pred(self, state: dict[str, torch.Tensor], fast: dict[str, torch.Tensor]):
        raise NotImplementedError

    def _step(
        self, fast: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr: float
    ) -> dict[str, torch.Tensor]:
        return {k: fast[k] - lr * grads[k] for k in fast}


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """``bool (B,)``: whether each row of ``x (B, N)`` is finite. A row's sum is finite when every
    entry is (one pass, no mask), unless finite entries overflow it: those rows are checked in full."""
    ok = torch.isfinite(x.sum(dim=1))
    if not bool(ok.all()):
        rows = torch.nonzero(~ok).squeeze(1)
        ok[rows] = torch.isfinite(x[rows]).all(dim=1)
    return ok


def _batched(
    params: dict[str, torch.Tensor], names: Sequence[str], b: int
) -> dict[str, torch.Tensor]:
    """The initialisation of ``names``, one copy per task: ``{name: (B, *shape)}``."""
    return {k: params[k].detach().unsqueeze(0).expand(b, *params[k].shape).clone() for k in names}


def _shared(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x (B, N, in) @ w.T`` for one weight ``w (out, in)`` shared by the tasks, as one product
    per task (a single folded product would round a task's numbers by the batch's size)."""
    return torch.bmm(x, w.T.unsqueeze(0).expand(x.shape[0], -1, -1))  # (B, N, out)


def _linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Task-batched linear layer: ``x (B, N, in), w (B, out, in), bias (B, out) -> (B, N, out)``."""
    return torch.baddbmm(bias.unsqueeze(1), x, w.transpose(1, 2))


# ---------------------------------------------------------------------- MeLU
class MeLUKernel(Kernel):
    """MeLU, every decision layer and the head adapting (see the module docstring)."""

    name = "melu-batched"

    @classmethod
    def applies(cls, model: Any, fast: set[str]) -> bool:
        want = {k for k, _ in model.named_parameters() if k.startswith(("decision.", "head."))}
        return model.item_features is not None and len(model.decision) > 0 and fast == want

    def __init__(self, meta: Any) -> None:
        super().__init__(meta)
        m: MeLU = self.model
        if m.item_features is None:
            raise ConfigError(
                "MeLUKernel: the MeLU model has no item features, which this kernel precomputes "
                "for the catalogue; use kernel_for(meta), which returns None for such a model (the "
                "unbatched path)"
            )
        self.n_layers = len(m.decision)
        self.fu = m.user_features.out_dim if m.user_features is not None else 0
        w0 = self.params["decision.0.weight"]  # (H, F)
        with torch.no_grad():
            cat = torch.arange(1, self.n_items + 1, device=self.device)
            self.x_items = m.item_features(cat)  # (C, Fi): the catalogue's item blocks
            self.base_items = self.x_items @ w0[:, self.fu :].T  # (C, H): W_0 x_c, once per server
            # x_i . x_c for every pair of items (row 0: the padding item), when it fits in memory
            self.gram = (
                torch.cat([torch.zeros_like(self.x_items[:1]), self.x_items]) @ self.x_items.T
                if self.n_items <= _GRAM_MAX_ITEMS
                else None
            )  # (C + 1, C)

    def _rest(self) -> list[str]:
        names = ["decision.0.bias"]
        for i in range(1, self.n_layers):
            names += [f"decision.{i}.weight", f"decision.{i}.bias"]
        return [*names, "head.weight", "head.bias"]

    def _init(self, users: torch.Tensor, items: torch.Tensor, mask: torch.Tensor):
        w0 = self.params["decision.0.weight"]
        with torch.no_grad():
            x = self.model.encode(
                users, items
            )  # (B, S, F) support inputs (the embeddings do not adapt)
            state = {
                "x": x,
                "base": _shared(x, w0),  # (B, S, H): W_0 x_r
                "gram": x @ x.transpose(1, 2),  # (B, S, S): x_r . x_r'
                "mask": mask,
                "items": items,
            }
        b, s = items.shape
        fast = _batched(self.params, self._rest(), b)
        fast["coef"] = torch.zeros(
            b, s, w0.shape[0], dtype=self.dtype, device=self.device
        )  # (B, S, H): D_r
        return state, fast

    def _decide_from(self, z1: torch.Tensor, fast: dict[str, torch.Tensor]) -> torch.Tensor:
        """Decision layers above the first pre-activation ``z1 (B, N, H)`` -> ``(B, N)``."""
        h = F.relu(z1)
        for i in range(1, self.n_layers):
            h = F.relu(_linear(h, fast[f"decision.{i}.weight"], fast[f"decision.{i}.bias"]))
        return _linear(h, fast["head.weight"], fast["head.bias"]).squeeze(-1)

    def _support_pred(self, state, fast):
        z1 = (
            state["base"] + fast["decision.0.bias"].unsqueeze(1) + state["gram"] @ fast["coef"]
        )  # (B, S, H)
        wrt = {k: v for k, v in fast.items() if k != "coef"}
        wrt["z1"] = z1  # the gradient at the first pre-activation updates the span coefficients
        return self._decide_from(z1, fast), wrt

    def _step(self, fast, grads, lr):
        new = {k: fast[k] - lr * grads[k] for k in fast if k != "coef"}
        new["coef"] = fast["coef"] - lr * grads["z1"]  # W <- W - lr sum_r delta_r x_r^T
        return new

    def _user_part(self, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The user's share of the first pre-activation, ``b + W_u x_u + sum_r D_r (x_u_r . x_u)``
        ``(B, 1, H)``, and the support rows' item blocks ``(B, S, Fi)``."""
        x = state["x"]  # (B, S, F)
        xu = x[:, :1, : self.fu]  # (B, 1, Fu): every row of a task holds its user's block
        u_dot = (x[:, :, : self.fu] * xu).sum(-1).unsqueeze(1)  # (B, 1, S): x_u_r . x_u
        hu = state["decision.0.bias"].unsqueeze(1) + _shared(
            xu, self.params["decision.0.weight"][:, : self.fu]
        )  # (B, 1, H)
        return torch.baddbmm(hu, u_dot, state["coef"]), x[:, :, self.fu :]

    def _decide_fast(self, z1: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`_decide_from` without autograd, in place: ``(b, P, H) -> (b, P)``."""
        h = torch.relu_(z1)
        for i in range(1, self.n_layers):
            h = torch.relu_(_linear(h, state[f"decision.{i}.weight"], state[f"decision.{i}.bias"]))
        return (h @ state["head.weight"].transpose(1, 2)).squeeze(-1) + state["head.bias"]  # (b, P)

    def score_catalogue(self, state):
        b = state["x"].shape[0]
        out = torch.empty(b, self.n_items, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            hu, xs = self._user_part(state)  # (B, 1, H), (B, S, Fi)
            if self.gram is not None:
                dots = self.gram[state["items"]]  # (B, S, C): x_i_r . x_c, looked up
            else:
                dots = _shared(xs, self.x_items)  # (B, S, C): x_i_r . x_c
            for s in range(
                b
            ):  # one user at a time: its numbers do not depend on the batch (and fit in cache)
                e = s + 1
                part = {k: v[s:e] for k, v in state.items()}
                z1 = torch.baddbmm(
                    hu[s:e], dots[s:e].transpose(1, 2), state["coef"][s:e]
                )  # (b', C, H)
                z1 += self.base_items  # + W_0 x_c
                out[s:e] = self._decide_fast(z1, part)
        return out

    def score_items(self, state, items):
        with torch.no_grad():
            hu, xs = self._user_part(state)
            xi = self.model.item_features(items)  # (B, P, Fi)
            z1 = torch.baddbmm(hu, xi @ xs.transpose(1, 2), state["coef"])  # (B, P, H)
            z1 += _shared(xi, self.params["decision.0.weight"][:, self.fu :])  # + W_0 x_i
            return self._decide_fast(z1, state)


# ---------------------------------------------------------------------- two-tower
class TwoTowerKernel(Kernel):
    """The two-tower model, ``user.unknown``, ``user_tower.*`` and ``bias`` adapting."""

    name = "two-tower-batched"

    @classmethod
    def applies(cls, model: Any, fast: set[str]) -> bool:
        want = {k for k, _ in model.named_parameters() if k.startswith("user_tower.")}
        return fast == want | {"user.unknown", "bias"}

    def __init__(self, meta: Any) -> None:
        super().__init__(meta)
        m: TwoTower = self.model
        self.n_layers = len(m.user_tower)
        with torch.no_grad():
            every = torch.arange(0, self.n_items + 1, device=self.device)
            mapped = torch.where(m.known_items[every], every, torch.zeros_like(every))
            parts = [m.item(mapped)]
            if m.item_features is not None:
                parts.append(m.item_features(every))
            x = torch.cat(parts, dim=-1)
            for i, layer in enumerate(m.item_tower):  # ReLU between the layers, none after the last
                x = layer(x)
                if i < len(m.item_tower) - 1:
                    x = F.relu(x)
            self.item_vecs = x  # (C + 1, h), row c = item index c
            self.catalogue_t = x[1:].T.contiguous()  # (h, C): the catalogue, for the products
            # the largest item vector norm bounds every score: |u . v + b| <= |u| max|v| + |b|
            self.max_item_norm = float(x[1:].norm(dim=1).max()) if self.n_items else 0.0

    def _fast_names(self) -> list[str]:
        names = ["user.unknown", "bias"]
        for i in range(self.n_layers):
            names += [f"user_tower.{i}.weight", f"user_tower.{i}.bias"]
        return names

    def _init(self, users, items, mask):
        m: TwoTower = self.model
        u = users[:, 0]  # (B,) one user per task
        with torch.no_grad():
            state = {
                "known": m.known_users[u].unsqueeze(-1),  # (B, 1)
                "emb": m.user.weight[u],  # (B, d): a known user's (meta-learned, fixed) embedding
                "feat": m.user_features(u) if m.user_features is not None else None,  # (B, Fu)
                "sup": self.item_vecs[items],  # (B, S, h)
            }
        return {k: v for k, v in state.items() if v is not None}, _batched(
            self.params, self._fast_names(), len(u)
        )

    def _user_vec(self, state, fast) -> torch.Tensor:
        return self._forward(state, fast)[1]  # (B, h)

    def _support_pred(self, state, fast):
        u = self._user_vec(state, fast)
        return (state["sup"] @ u.unsqueeze(-1)).squeeze(-1) + fast["bias"].unsqueeze(
            -1
        ), fast  # (B, S)

    def adapt(self, uidx, items, ratings, steps, lr):
        """As :meth:`Kernel.adapt`, with the gradient written out: the user tower is a small MLP
        and the loss elementwise, so each step is a handful of batched products (no autograd
        graph); float64 tests compare it with autograd."""
        users, itm, tgt, mask = self._pad(uidx, items, ratings)
        state, fast = self._init(users, itm, mask)
        n_real = mask.sum(dim=1, keepdim=True).to(self.dtype).clamp_min(1.0)  # (B, 1)
        w = mask.to(self.dtype) / n_real  # (B, S): d mean / d entry, 0 on padding
        bce = self.meta.algo.loss == "bce"
        tgt = torch.where(mask, tgt, torch.zeros((), dtype=self.dtype, device=self.device))
        for _ in range(steps):
            acts, u = self._forward(state, fast)  # inputs of each layer, (B, h)
            pred = torch.bmm(state["sup"], u.unsqueeze(-1)).squeeze(-1) + fast["bias"].unsqueeze(-1)
            pred = torch.where(mask, pred, torch.zeros((), dtype=self.dtype, device=self.device))
            g = (torch.sigmoid(pred) - tgt if bce else 2.0 * (pred - tgt)) * w  # (B, S): dL/dpred
            grads = {"bias": g.sum(dim=1)}
            gz = torch.bmm(g.unsqueeze(1), state["sup"]).squeeze(1)  # (B, h): dL/du
            for i in reversed(range(self.n_layers)):
                a, wi = acts[i], fast[f"user_tower.{i}.weight"]
                grads[f"user_tower.{i}.weight"] = gz.unsqueeze(2) * a.unsqueeze(1)  # (B, out, in)
                grads[f"user_tower.{i}.bias"] = gz
                ga = torch.bmm(gz.unsqueeze(1), wi).squeeze(1)  # (B, in)
                gz = ga * (acts[i] > 0) if i > 0 else ga  # through the ReLU below layer i
            d = fast["user.unknown"].shape[-1]
            grads["user.unknown"] = torch.where(
                state["known"], torch.zeros((), dtype=self.dtype, device=self.device), gz[:, :d]
            )
            fast = {k: torch.add(fast[k], grads[k], alpha=-lr) for k in fast}
        return {**state, **fast}

    def _forward(self, state, fast) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The user tower without autograd: each layer's input ``(B, in_i)`` and the output ``(B, h)``."""
        emb = torch.where(state["known"], state["emb"], fast["user.unknown"])  # (B, d)
        x = torch.cat([emb, state["feat"]], dim=-1) if "feat" in state else emb
        acts = []
        for i in range(self.n_layers):
            acts.append(x)
            w, b = fast[f"user_tower.{i}.weight"], fast[f"user_tower.{i}.bias"]
            x = (w * x.unsqueeze(1)).sum(dim=-1) + b  # (B, out): per-task W x + b
            if i < self.n_layers - 1:
                x = torch.relu(x)
        return acts, x

    def score_catalogue(self, state):
        with torch.no_grad():
            u = self._user_vec(state, state).unsqueeze(1)  # (B, 1, h)
            items = self.catalogue_t.unsqueeze(0).expand(u.shape[0], -1, -1)  # (B, h, C), no copy
            # one product per user (not one (B, h) x (h, C) product), so that a user's scores do
            # not depend on which other requests share its batch
            return torch.bmm(u, items).squeeze(1).add_(state["bias"].unsqueeze(1))  # (B, C)

    def finite_scores(self, state, scores):
        """Exact and cheap: a finite user vector and bias whose bound ``|u| max|v| + |b|`` is far
        below the float range cannot give a non-finite score; other rows are checked in full."""
        with torch.no_grad():
            u = self._user_vec(state, state)  # (B, h)
            bound = u.norm(dim=1) * self.max_item_norm + state["bias"].abs()  # (B,)
            ok = torch.isfinite(bound) & (bound < torch.finfo(scores.dtype).max / 4)
            if not bool(ok.all()):
                rows = torch.nonzero(~ok).squeeze(1)
                ok[rows] = torch.isfinite(scores[rows]).all(dim=1)
            return ok

    def score_items(self, state, items):
        with torch.no_grad():
            u = self._user_vec(state, state)
            return (self.item_vecs[items] @ u.unsqueeze(-1)).squeeze(-1) + state["bias"].unsqueeze(
                -1
            )  # (B, P)


# ---------------------------------------------------------------------- choice
KERNELS: dict[str, type[Kernel]] = {"melu": MeLUKernel, "two-tower": TwoTowerKernel}
"""The batched kernels by the name a model declares (``RecModel.serving_kernel``)."""


def kernel_for(meta: Any) -> Kernel | None:
    """The batched kernel for ``meta`` (a :class:`~metarec.recommend.load.MetaModel`), or ``None``.

    The model declares which kernel fits it (``serving_kernel``: MeLU ``"melu"``, the two-tower
    model ``"two-tower"``). The kernel applies when the model is in eval mode, its inner loop
    adapts exactly the kernel's parameters (the model's default ones), with one scalar rate (not
    Meta-SGD / MAML++ learned rates), and the loss is elementwise (``mse`` or ``bce``) on the
    support as given (not a run trained to rank on ratings, whose adaptation first turns the
    ratings into relevance labels and adds sampled negatives: the library's path does that).
    """
    model, algo = meta.model, meta.algo
    cls = KERNELS.get(getattr(model, "serving_kernel", None) or "")
    if cls is None or model.training or algo.meta_learned_lrs or algo.loss not in ("mse", "bce"):
        return None
    if getattr(algo, "relevance", None) is not None:
        return None
    fast, _ = split_params(model, adapt_patterns(algo, model), meta.params)
    return cls(meta) if cls.applies(model, set(fast)) else None
