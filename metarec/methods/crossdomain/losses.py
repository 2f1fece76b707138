"""Domain-adaptation regularisers between two batches of representations, DANN's gradient
reversal, and a two-loss combiner.

Every regulariser takes a source batch ``xs (n_s, d)`` and a target batch ``xt (n_t, d)`` of
representations (rows are samples) and returns a scalar that is 0 (or close to it) when the two
samples come from one distribution and grows as they drift apart. All are differentiable in
both inputs, so adding ``lambda * R(xs, xt)`` to a training loss pulls the two distributions
together.

* :func:`gaussian_kl`: KL divergence between Gaussian fits of the two batches (closed form).
* :func:`mmd_rbf`: squared maximum mean discrepancy with a sum of RBF kernels.
* :func:`coral`: CORAL, the squared Frobenius distance of the covariances / ``4 d^2``.
* :func:`sliced_wasserstein`: the sliced Wasserstein distance over random 1-D projections.
* :func:`grad_reverse` / :class:`GradientReversal` and :class:`DomainDiscriminator`: DANN
  (Ganin et al., JMLR 2016).
* :class:`JointLoss`: ``w_s L_s + w_t L_t`` with fixed weights or learned by uncertainty
  weighting (Kendall et al., CVPR 2018).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> xs, same, shifted = (torch.randn(256, 4, generator=g) for _ in range(3))
    >>> bool(mmd_rbf(xs, shifted + 1.0) > 10 * abs(mmd_rbf(xs, same)))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metarec._errors import ConfigError, suggest

__all__ = [
    "REGULARISERS",
    "gaussian_kl",
    "mmd_rbf",
    "coral",
    "sliced_wasserstein",
    "GradientReversal",
    "grad_reverse",
    "DomainDiscriminator",
    "dann_loss",
    "JointLoss",
    "regulariser",
]


def _check_pair(xs: torch.Tensor, xt: torch.Tensor, fn: str, min_rows: int = 2) -> int:
    """Validate two ``(n, d)`` batches with the same ``d``; return ``d``."""
    if xs.dim() != 2 or xt.dim() != 2:
        raise ConfigError(
            f"{fn}: xs {tuple(xs.shape)} and xt {tuple(xt.shape)} must be 2-D (samples, features); "
            "flatten the batch first, e.g. z.reshape(-1, z.shape[-1])"
        )
    if xs.shape[1] != xt.shape[1]:
        raise ConfigError(
            f"{fn}: xs has {xs.shape[1]} features and xt {xt.shape[1]}; both batches must live in "
            "the same representation space (same d)"
        )
    if xs.shape[0] < min_rows or xt.shape[0] < min_rows:
        raise ConfigError(
            f"{fn}: xs has {xs.shape[0]} rows and xt {xt.shape[0]}; each batch needs at least "
            f"{min_rows} samples to estimate its statistics"
        )
    return int(xs.shape[1])


def _cov(x: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance ``(d, d)`` of the rows of ``x (n, d)``: ``(x - m)^T (x - m) / (n - 1)``."""
    c = x - x.mean(dim=0, keepdim=True)  # (n, d)
    return c.T @ c / (x.shape[0] - 1)


# ---------------------------------------------------------------------- Gaussian KL
def gaussian_kl(xs: torch.Tensor, xt: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """KL divergence ``KL(N_s || N_t)`` between Gaussian fits of the two batches.

    Each batch is summarised by its mean ``mu`` and unbiased covariance plus a ridge,
    ``S = cov + ridge * I`` (keeps ``S`` invertible when ``n <= d`` or features are collinear),
    and

    ``KL = 0.5 * [tr(S_t^-1 S_s) + (mu_t - mu_s)^T S_t^-1 (mu_t - mu_s) - d + ln det S_t - ln det S_s]``

    computed through Cholesky factors. In 1-D: ``ln(s_t / s_s) + (s_s^2 + (mu_s - mu_t)^2) /
    (2 s_t^2) - 1/2``. Not symmetric: swap the arguments for ``KL(N_t || N_s)``.

    Args:
        xs, xt: ``(n_s, d)`` and ``(n_t, d)`` samples (``n >= 2`` each).
        ridge: added to each covariance's diagonal (``> 0``).

    Returns:
        A scalar ``>= 0``.
    """
    d = _check_pair(xs, xt, "gaussian_kl")
    if not ridge > 0:
        raise ConfigError(
            f"gaussian_kl: ridge={ridge!r} must be > 0 (e.g. 1e-3) so the covariances are invertible"
        )
    eye = torch.eye(d, dtype=xs.dtype, device=xs.device)
    s_s, s_t = _cov(xs) + ridge * eye, _cov(xt) + ridge * eye  # (d, d)
    diff = (xt.mean(dim=0) - xs.mean(dim=0)).unsqueeze(1)  # (d, 1)
    l_t = torch.linalg.cholesky(s_t)
    l_s = torch.linalg.cholesky(s_s)
    trace = torch.cholesky_solve(s_s, l_t).diagonal().sum()  # tr(S_t^-1 S_s)
    maha = (diff * torch.cholesky_solve(diff, l_t)).sum()
    logdet = 2.0 * (
        l_t.diagonal().log().sum() - l_s.diagonal().log().sum()
    )  # ln det S_t - ln det S_s
    return 0.5 * (trace + maha - d + logdet)


# ---------------------------------------------------------------------- MMD
def mmd_rbf(
    xs: torch.Tensor,
    xt: torch.Tensor,
    bandwidths: Sequence[float] | None = None,
    *,
    unbiased: bool = True,
) -> torch.Tensor:
    """Squared maximum mean discrepancy with a multi-bandwidth RBF kernel.

    ``k(x, y) = sum_b exp(-||x - y||^2 / (2 sigma_b^2))`` and

    ``MMD^2 = E[k(s, s')] + E[k(t, t')] - 2 E[k(s, t)]``.

    * ``unbiased=True`` (default): the U-statistic; the within-batch means leave out the
      diagonal (``i != j``), so its expectation is exactly ``MMD^2`` (0 for one distribution)
      but a single estimate can be slightly negative.
    * ``unbiased=False``: the V-statistic (all pairs, diagonal included); always ``>= 0`` but
      biased upwards by ``O(1/n)``.

    Args:
        xs, xt: ``(n_s, d)`` and ``(n_t, d)`` samples (``n >= 2`` each).
        bandwidths: the ``sigma_b`` values. ``None`` (default): the median heuristic,
            ``sigma_med * (0.25, 0.5, 1, 2, 4)`` with ``sigma_med`` the median pairwise distance
            of the pooled (detached) samples, so the kernel follows the representations' scale.

    Returns:
        A scalar.
    """
    _check_pair(xs, xt, "mmd_rbf")
    z = torch.cat([xs, xt], dim=0)  # (n, d)
    d2 = torch.cdist(z, z).square()  # (n, n) squared distances
    if bandwidths is None:
        with torch.no_grad():
            off = d2[~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)]
            med = off.median().clamp_min(1e-12).sqrt()
        sig = med * torch.tensor((0.25, 0.5, 1.0, 2.0, 4.0), dtype=z.dtype, device=z.device)
    else:
        bw = tuple(float(b) for b in bandwidths)
        if not bw or any(not (b > 0 and math.isfinite(b)) for b in bw):
            raise ConfigError(
                f"mmd_rbf: bandwidths={tuple(bandwidths)!r} must be positive finite numbers, e.g. (0.5, 1, 2); "
                "pass None for the median heuristic"
            )
        sig = torch.tensor(bw, dtype=z.dtype, device=z.device)
    k = torch.exp(-d2.unsqueeze(0) / (2.0 * sig.view(-1, 1, 1) ** 2)).sum(dim=0)  # (n, n)
    ns = xs.shape[0]
    k_ss, k_tt, k_st = k[:ns, :ns], k[ns:, ns:], k[:ns, ns:]
    if unbiased:
        nt = xt.shape[0]
        e_ss = (k_ss.sum() - k_ss.diagonal().sum()) / (ns * (ns - 1))
        e_tt = (k_tt.sum() - k_tt.diagonal().sum()) / (nt * (nt - 1))
    else:
        e_ss, e_tt = k_ss.mean(), k_tt.mean()
    return e_ss + e_tt - 2.0 * k_st.mean()


# ---------------------------------------------------------------------- CORAL
def coral(xs: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """CORAL loss (Sun & Saenko, ECCV-W 2016): ``||C_s - C_t||_F^2 / (4 d^2)``.

    ``C`` are the unbiased covariances of the batches (``(n, d)`` rows are samples). It only
    compares second moments: 0 for equal covariances, whatever the means.
    """
    d = _check_pair(xs, xt, "coral")
    return (_cov(xs) - _cov(xt)).square().sum() / (4.0 * d * d)


# ---------------------------------------------------------------------- sliced Wasserstein
def sliced_wasserstein(
    xs: torch.Tensor,
    xt: torch.Tensor,
    n_projections: int = 64,
    *,
    p: int = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sliced Wasserstein distance to the power ``p`` (Bonneel et al., 2015).

    ``SW_p^p = (1/L) sum_l W_p^p(theta_l # P_s, theta_l # P_t)`` over ``L = n_projections``
    random unit directions ``theta_l``; the 1-D ``W_p^p`` between projected samples is the mean of
    ``|q_s(u) - q_t(u)|^p`` over ``m = max(n_s, n_t)`` quantile levels ``u`` (sorted values when
    ``n_s = n_t``; linear quantile interpolation otherwise). Identical samples give exactly 0.

    Args:
        xs, xt: ``(n_s, d)`` and ``(n_t, d)`` samples.
        n_projections: number of random directions ``L``.
        p: the order (``>= 1``).
        generator: draws the directions (seed it for a reproducible value; ``None`` uses the
            global RNG).
    """
    d = _check_pair(xs, xt, "sliced_wasserstein", min_rows=1)
    if n_projections < 1 or p < 1:
        raise ConfigError(
            f"sliced_wasserstein: n_projections={n_projections!r} and p={p!r} must be >= 1; e.g. n_projections=64, p=2"
        )
    dev = "cpu" if generator is None else generator.device
    theta = torch.randn(d, n_projections, generator=generator, device=dev, dtype=xs.dtype).to(
        xs.device
    )
    theta = theta / theta.norm(dim=0, keepdim=True)  # (d, L) unit directions
    ps, pt = xs @ theta, xt @ theta  # (n_s, L), (n_t, L)
    if ps.shape[0] == pt.shape[0]:
        qs, qt = ps.sort(dim=0).values, pt.sort(dim=0).values
    else:
        m = max(ps.shape[0], pt.shape[0])
        u = torch.linspace(0.0, 1.0, m, dtype=xs.dtype, device=xs.device)
        qs, qt = torch.quantile(ps, u, dim=0), torch.quantile(pt, u, dim=0)  # (m, L)
    return (qs - qt).abs().pow(p).mean()


# ---------------------------------------------------------------------- DANN
class GradientReversal(torch.autograd.Function):
    """Identity forward, ``-lambda * grad`` backward (Ganin & Lempitsky, ICML 2015).

    Use :func:`grad_reverse`; ``lambda_`` gets no gradient. Written in the ``setup_context``
    form with ``generate_vmap_rule``, so it also runs under :func:`torch.func.vmap`.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, lambda_: float) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.lambda_ = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.lambda_ * grad, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; its gradient flows back multiplied by ``-lambda_``."""
    return GradientReversal.apply(x, float(lambda_))


class DomainDiscriminator(nn.Module):
    """DANN's domain classifier: ``(n, d) -> (n,)`` logits of "target domain".

    ``forward(z, lambda_)`` passes ``z`` through :func:`grad_reverse` first, so minimising the
    discriminator's loss trains the discriminator to separate the domains and, through the
    reversed gradient, the encoder to confuse it.

    Args:
        in_dim: representation size ``d``.
        hidden: width of the single hidden layer (ReLU).
    """

    def __init__(self, in_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
        return self.net(grad_reverse(z, lambda_)).squeeze(-1)  # (n,)


def dann_loss(
    disc: DomainDiscriminator, zs: torch.Tensor, zt: torch.Tensor, lambda_: float = 1.0
) -> torch.Tensor:
    """Domain-classification BCE of ``disc`` on source (label 0) and target (label 1) rows,
    with the gradient into ``zs``/``zt`` reversed and scaled by ``lambda_``:
    ``0.5 * (mean_s softplus(l) + mean_t softplus(-l))``."""
    ls, lt = disc(zs, lambda_), disc(zt, lambda_)
    return 0.5 * (
        F.binary_cross_entropy_with_logits(ls, torch.zeros_like(ls))
        + F.binary_cross_entropy_with_logits(lt, torch.ones_like(lt))
    )


# ---------------------------------------------------------------------- registry
REGULARISERS: dict[str, Callable[..., torch.Tensor]] = {
    "mmd": mmd_rbf,
    "coral": coral,
    "gaussian_kl": gaussian_kl,
    "sliced_wasserstein": sliced_wasserstein,
}
"""Regulariser name -> function ``(xs, xt) -> scalar``."""


def regulariser(name: str) -> Callable[..., torch.Tensor]:
    """The regulariser called ``name`` (one of :data:`REGULARISERS`)."""
    if name not in REGULARISERS:
        raise ConfigError(
            f"regulariser={name!r}: unknown; choose one of {sorted(REGULARISERS)}{suggest(name, REGULARISERS)}"
        )
    return REGULARISERS[name]


# ---------------------------------------------------------------------- joint loss
class JointLoss(nn.Module):
    """Combine per-domain losses: ``sum_i w_i L_i`` (fixed) or uncertainty weighting.

    * ``weights=(w_s, w_t)`` (default ``(1, 1)``): ``L = sum_i w_i L_i``.
    * ``uncertainty=True``: learned log-variances ``s_i`` (start at 0), Kendall, Gal &
      Cipolla (CVPR 2018) in the common simplified form ``L = sum_i exp(-s_i) L_i + s_i``.
      A loss that stays large gets down-weighted; the ``+ s_i`` term stops the weights from
      collapsing to 0. The ``s_i`` are parameters of this module: put
      ``joint.parameters()`` into the optimiser.

    Example:
        >>> j = JointLoss(weights=(0.5, 1.0))
        >>> float(j(torch.tensor(2.0), torch.tensor(3.0)))
        4.0
    """

    fixed: torch.Tensor  # buffer (n,): the fixed weights

    def __init__(
        self, n: int = 2, weights: Sequence[float] | None = None, *, uncertainty: bool = False
    ) -> None:
        super().__init__()
        if n < 1:
            raise ConfigError(f"JointLoss: n={n!r} must be >= 1 (the number of losses combined)")
        if uncertainty and weights is not None:
            raise ConfigError(
                "JointLoss(weights=..., uncertainty=True): the weights are learned with uncertainty=True; "
                "pass one or the other"
            )
        w = (1.0,) * n if weights is None else tuple(float(x) for x in weights)
        if len(w) != n or any(not (x >= 0 and math.isfinite(x)) for x in w):
            raise ConfigError(
                f"JointLoss: weights={w!r} must be {n} finite numbers >= 0, e.g. weights=(1.0, 1.0)"
            )
        self.uncertainty = uncertainty
        self.register_buffer("fixed", torch.tensor(w))
        self.log_vars = nn.Parameter(torch.zeros(n)) if uncertainty else None

    @property
    def weights(self) -> torch.Tensor:
        """The current weight of each loss, ``(n,)`` (``exp(-s_i)`` when learned)."""
        return torch.exp(-self.log_vars.detach()) if self.log_vars is not None else self.fixed

    def forward(self, *losses: torch.Tensor) -> torch.Tensor:
        if len(losses) != self.fixed.shape[0]:
            raise ConfigError(
                f"JointLoss: got {len(losses)} losses, built for n={self.fixed.shape[0]}"
            )
        stacked = torch.stack([torch.as_tensor(x) for x in losses])  # (n,)
        if self.log_vars is None:
            return (self.fixed.to(stacked) * stacked).sum()
        s = self.log_vars.to(stacked)
        return (torch.exp(-s) * stacked + s).sum()
