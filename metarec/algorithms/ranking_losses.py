"""Ranking losses over a catalogue: full softmax, sampled softmax with the logQ correction, BPR.

A task (a user) has scores ``s_j`` for candidate items and a set of positives (held-out
relevant items). Every loss returns one value per task ``(T,)``: the mean over the task's real
positives; a task with no positive has loss 0 (and no gradient).

* :func:`catalogue_softmax`: the multi-label softmax cross-entropy over the whole catalogue
  (Mult-VAE's likelihood, the "full softmax" of retrieval models), excluded entries (the
  support) removed from the normaliser:
  ``L_t = -sum_j y_tj log( exp(s_tj) / sum_{c not excluded} exp(s_tc) ) / sum_j y_tj``.
* :func:`sampled_softmax`: each positive against ``N`` sampled negatives with the logQ
  correction (Jean et al. 2015; Yi et al., RecSys 2019): every logit, the positive's too, is
  shifted by ``-log Q_j`` (``Q_j``: the probability that the sampler draws item ``j``), which
  makes the sampled softmax a consistent estimate of the full one when negatives are drawn from
  ``Q`` (popularity-biased sampling otherwise penalises popular items):
  ``L_tp = -(s_tp - lq_tp) + logsumexp({s_tp - lq_tp} + {s_tn - lq_tn : n real})``.
  Masked negatives (accidental hits: a sampled item that is one of the task's positives or
  support items) leave the normaliser.
* :func:`sampled_bpr`: Bayesian personalised ranking of each positive against each real sampled
  negative, ``-mean_{p, n} log sigmoid(s_tp - s_tn)``.
* :func:`popularity_log_q`: ``log Q`` of the sampling distribution ``Q_j ∝ (count_j + 1)^alpha``.

Shifting every logit of a task by one constant changes none of these losses (the normaliser
moves with it), so ``log Q`` may be given up to a constant (``log(N Q)`` or ``log Q`` alike).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["catalogue_softmax", "sampled_softmax", "sampled_bpr", "popularity_log_q"]


def _task_mean(per: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(T, P)`` per-positive losses -> ``(T,)`` means over the real ones (0 with none)."""
    per = torch.where(mask, per, torch.zeros_like(per))
    return per.sum(dim=-1) / mask.sum(dim=-1).to(per.dtype).clamp_min(1.0)


def catalogue_softmax(
    logits: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-label softmax cross-entropy over the catalogue: ``(T, C) x2 [, (T, C)] -> (T,)``.

    Args:
        logits: ``(T, C)`` scores of every catalogue item.
        targets: ``(T, C)`` 0/1 (or non-negative weights): the task's positives.
        exclude: ``(T, C)`` bool or ``None``: entries left out of the normaliser (the support;
            an excluded positive is ignored).

    Example:
        >>> s = torch.tensor([[0.0, 0.0]])
        >>> round(catalogue_softmax(s, torch.tensor([[1.0, 0.0]])).item(), 4)   # log 2
        0.6931
    """
    y = targets.to(logits.dtype)
    if exclude is not None:
        logits = logits.masked_fill(exclude, -torch.inf)
        y = y.masked_fill(exclude, 0.0)
    logp = torch.log_softmax(logits, dim=-1)
    logp = torch.where(y > 0, logp, torch.zeros_like(logp))  # -inf * 0 would be NaN
    n = y.sum(dim=-1)  # (T,)
    loss = -(y * logp).sum(dim=-1) / torch.where(n > 0, n, torch.ones_like(n))
    return torch.where(n > 0, loss, torch.zeros_like(loss))


def sampled_softmax(
    pos: torch.Tensor,
    pos_mask: torch.Tensor,
    neg: torch.Tensor,
    neg_mask: torch.Tensor,
    log_q_pos: torch.Tensor | None = None,
    log_q_neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax with the logQ correction (see the module docstring): ``-> (T,)``.

    Args:
        pos: ``(T, P)`` scores of the positives; ``pos_mask`` ``(T, P)`` marks the real ones.
        neg: ``(T, N)`` scores of the sampled negatives; ``neg_mask`` ``(T, N)`` the kept ones.
        log_q_pos, log_q_neg: ``log Q`` of each positive / negative, broadcastable to ``pos`` /
            ``neg`` (``None``: no correction, uniform sampling).
    """
    if log_q_pos is not None:
        pos = pos - log_q_pos
    if log_q_neg is not None:
        neg = neg - log_q_neg
    # a masked negative gets a finite floor whose exp() is 0 (and whose gradient is 0): -inf
    # would give NaN gradients for a task with no real negative
    neg = neg.masked_fill(~neg_mask, torch.finfo(neg.dtype).min / 4)
    neg_lse = torch.logsumexp(neg, dim=-1, keepdim=True)  # (T, 1)
    denom = torch.logaddexp(pos, neg_lse.expand_as(pos))  # (T, P)
    return _task_mean(denom - pos, pos_mask)


def sampled_bpr(
    pos: torch.Tensor, pos_mask: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor
) -> torch.Tensor:
    """BPR of every real positive against every real negative: ``(T, P) x2, (T, N) x2 -> (T,)``,
    ``-sum_{p, n} log sigmoid(s_p - s_n) / n_pairs`` (0 for a task without a pair)."""
    pair = pos_mask.unsqueeze(-1) & neg_mask.unsqueeze(-2)  # (T, P, N)
    per = -F.logsigmoid(pos.unsqueeze(-1) - neg.unsqueeze(-2))  # (T, P, N)
    per = torch.where(pair, per, torch.zeros_like(per))
    return per.flatten(-2).sum(dim=-1) / pair.flatten(-2).sum(dim=-1).to(per.dtype).clamp_min(1.0)


def popularity_log_q(counts: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``(C,)`` interaction counts -> ``(C,)`` ``log Q`` with ``Q_j = (c_j + 1)^alpha / Z``.

    ``alpha = 0`` is uniform sampling, ``1`` proportional to (smoothed) popularity.

    Example:
        >>> popularity_log_q(torch.tensor([0.0, 1.0]), 1.0).exp()
        tensor([0.3333, 0.6667])
    """
    w = alpha * torch.log1p(counts.to(torch.get_default_dtype()))
    return w - torch.logsumexp(w, dim=0)
