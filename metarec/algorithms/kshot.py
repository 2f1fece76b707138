"""The k-shot objective of a linear set-to-scores model, in closed form.

A linear model scores items from a task's input row ``z = [H_u, s, 1]`` (an optional always-present
block ``H_u``, the support's item indicators ``s`` and an intercept) as ``z B``. Meta-trained on
``k``-shot tasks, it minimises over the meta-train users the expected squared error of predicting
each user's held-out relevant items from a uniformly drawn ``k``-item support of that user's own
items, plus ``lambda ||B||^2``. The expectation over every support is exact
(:func:`kshot_moments`: the inclusion probabilities of a uniform ``k``-subset), so the meta-trained
``B`` is one ridge solve (:func:`solve_ridge`): the same answer as averaging the normal equations
of infinitely many sampled episodes. :mod:`metarec.methods.learners.elae` is the method.
"""

from __future__ import annotations

import torch

from metarec._errors import ConfigError

__all__ = ["kshot_moments", "kshot_moments_projected", "solve_ridge"]


def kshot_moments(
    X: torch.Tensor,
    T: torch.Tensor,
    k: int,
    H: torch.Tensor | None = None,
    *,
    chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The expected normal equations of the ``k``-shot objective (see the module docstring).

    Args:
        X: ``(U, m)`` 0/1 interaction indicators of the meta-train users over the modelled items.
        T: ``(U, m)`` 0/1 relevance indicators (``T <= X``).
        k: the support size; a user with ``n_u <= k`` interactions keeps them all (``q_u = 1``).
        H: ``(U, h)`` or ``None``: a block of inputs every task always has (a user's source-domain
            history); it enters the input row before the support: ``z = [H_u, s, 1]``.
        chunk: users per block (bounds the temporary memory to ``chunk x (h + m)``).

    Returns:
        ``(A, C)``: ``A (h + m + 1, h + m + 1)``, the expected Gram matrix of ``z``, and ``C (h + m
        + 1, m)``, its expected cross moment with the held-out relevant items ``y``, summed over
        users, in ``X``'s dtype (the intercept is the last row/column). With ``q_u = k / n_u``
        and ``q2_u = k (k - 1) / (n_u (n_u - 1))``: ``E[s_i s_j] = q2_u x_ui x_uj`` (``i != j``),
        ``E[s_i^2] = q_u x_ui``, ``E[s_i y_j] = (q_u - q2_u) x_ui t_uj`` (``i != j``; 0 for
        ``i = j``), ``E[y_j] = (1 - q_u) t_uj``, and ``H`` times ``s`` / ``y`` / ``1`` by ``q_u``,
        ``1 - q_u`` and 1.

    Example:
        >>> X = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
        >>> A, C = kshot_moments(X, X, k=1)
        >>> A[0, 1].item(), A[0, 0].item()    # never two items at once with one shot
        (0.0, 0.8333333333333333)
    """
    if X.shape != T.shape or X.dim() != 2:
        raise ConfigError(
            f"X {tuple(X.shape)} and T {tuple(T.shape)}: expected two (users, items) matrices of one shape"
        )
    if H is not None and (H.dim() != 2 or H.shape[0] != X.shape[0]):
        raise ConfigError(
            f"H {tuple(H.shape)}: expected one history row per user of X {tuple(X.shape)}"
        )
    if k < 1:
        raise ConfigError(f"k={k}: the support size must be >= 1")
    U, m = X.shape
    h = 0 if H is None else H.shape[1]
    n = X.sum(dim=1)
    q = torch.clamp(k / n.clamp(min=1.0), max=1.0)
    pairs = torch.where(n > 1, k * (k - 1) / (n * (n - 1)).clamp(min=1.0), torch.zeros_like(n))
    q2 = torch.minimum(pairs, q)
    d = h + m + 1
    A = X.new_zeros(d, d)
    C = X.new_zeros(d, m)
    S, b = slice(h, h + m), h + m  # the support block, the intercept (bias) index
    for s in range(0, U, chunk):
        x, t = X[s : s + chunk], T[s : s + chunk]
        qq, qq2 = q[s : s + chunk], q2[s : s + chunk]
        A[S, S] += x.T @ (qq2[:, None] * x)
        C[S] += x.T @ ((qq - qq2)[:, None] * t)
        A[b, S] += qq @ x
        C[b] += (1.0 - qq) @ t
        if H is not None:
            hh = H[s : s + chunk]
            A[:h, :h] += hh.T @ hh
            A[:h, S] += hh.T @ (qq[:, None] * x)
            A[:h, b] += hh.sum(dim=0)
            C[:h] += hh.T @ ((1.0 - qq)[:, None] * t)
    # the diagonal: E[s_j^2] = q_u x_uj, not q2_u x_uj (an item is drawn once): add (q - q2) x
    A[S, S] += torch.diag(X.T @ (q - q2))
    A[S, b] = A[b, S]
    A[S, :h] = A[:h, S].T
    A[b, :h] = A[:h, b]
    A[b, b] = float(U)
    idx = torch.arange(m)
    C[h + idx, idx] = 0.0  # an item in the support is not held out
    return A, C


def solve_ridge(A: torch.Tensor, C: torch.Tensor, lam: float) -> torch.Tensor:
    """``(A + lam b)^-1 C`` by a Cholesky factorisation (``A`` symmetric positive semi-definite).

    Raises:
        ConfigError: the system is not positive definite (``lam`` too small for this data).
    """
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    L, info = torch.linalg.cholesky_ex(A + lam * eye)
    if int(info) != 0:
        raise ConfigError(
            f"lambda={lam}: A + lambda b is not positive definite; raise the ridge strength "
            "(--set learners.elae.lambdas=[1.0, 3.0, 10.0])"
        )
    return torch.cholesky_solve(C, L)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sparse.mm(a, b) if a.is_sparse else a @ b


def _t(a: torch.Tensor) -> torch.Tensor:
    return a.t().coalesce() if a.is_sparse else a.T


def kshot_moments_projected(
    X: torch.Tensor,
    T: torch.Tensor,
    k: int,
    P: torch.Tensor,
    H: torch.Tensor | None = None,
    Ph: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`kshot_moments` for a model whose inputs pass through item bases first:
    ``z = [H_u Ph, s P, 1]`` with ``P (m, r)`` and ``Ph (h, r_h)``, so the model is ``z W`` with
    ``W (r_h + r + 1, m)`` and the moments are ``diag(Ph, P, 1)' A diag(Ph, P, 1)`` and
    ``diag(Ph, P, 1)' C`` without ever forming the ``(h + m)``-square ``A``.

    ``X``, ``T`` and ``H`` may be sparse (COO) tensors: the cost is a few sparse-by-dense products
    of width ``r``, and memory ``O((h + m) r + U r)``. With square invertible bases the ridge
    solution maps back to :func:`kshot_moments`'s through the bases (up to the ridge's metric).

    Returns:
        ``(A_r (r_h + r + 1, r_h + r + 1), C_r (r_h + r + 1, m))`` in ``P``'s dtype.
    """
    if k < 1:
        raise ConfigError(f"k={k}: the support size must be >= 1")
    if (H is None) != (Ph is None):
        raise ConfigError("H and Ph: pass both (a history block and its basis) or neither")
    U, m = X.shape
    if P.shape[0] != m:
        raise ConfigError(
            f"P {tuple(P.shape)}: expected one basis row per item of X {tuple(X.shape)}"
        )
    dt = P.dtype
    ones = torch.ones(m, 1, dtype=dt)
    n = _mm(X, ones).squeeze(1)
    q = torch.clamp(k / n.clamp(min=1.0), max=1.0)
    pairs = torch.where(n > 1, k * (k - 1) / (n * (n - 1)).clamp(min=1.0), torch.zeros_like(n))
    q2 = torch.minimum(pairs, q)
    w = q - q2
    XP = _mm(X, P)  # (U, r)
    Xt, Tt = _t(X), _t(T)
    r = P.shape[1]
    rh = 0 if Ph is None else Ph.shape[1]
    d = rh + r + 1
    S, b = slice(rh, rh + r), rh + r
    A = torch.zeros(d, d, dtype=dt)
    C = torch.zeros(d, m, dtype=dt)
    diag = _mm(Xt, w[:, None]).squeeze(1)  # (m,) sum_u (q - q2) x_uj
    A[S, S] = XP.T @ (q2[:, None] * XP) + P.T @ (diag[:, None] * P)
    A[b, S] = q @ XP
    A[S, b] = A[b, S]
    A[b, b] = float(U)
    c = _mm(Tt, w[:, None]).squeeze(1)  # (m,) sum_u (q - q2) t_uj: the C_jj that are zeroed
    C[S] = _mm(Tt, w[:, None] * XP).T - (P * c[:, None]).T
    C[b] = _mm(Tt, (1.0 - q)[:, None]).squeeze(1)
    if H is not None and Ph is not None:
        HP = _mm(H, Ph)  # (U, r_h)
        A[:rh, :rh] = HP.T @ HP
        A[:rh, S] = HP.T @ (q[:, None] * XP)
        A[S, :rh] = A[:rh, S].T
        A[:rh, b] = HP.sum(dim=0)
        A[b, :rh] = A[:rh, b]
        C[:rh] = _mm(Tt, (1.0 - q)[:, None] * HP).T
    return A, C
