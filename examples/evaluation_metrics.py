"""Metrics on padded query sets: MAE, RMSE, nDCG@k within the query, AUC, ranks against sampled
negatives, degenerate-result flags, and mean ± 95% CI over tasks.

Run: python examples/evaluation_metrics.py
"""

import torch

from metarec import metrics as M

scores = torch.tensor([[4.1, 3.0, 2.2, 0.0], [2.5, 4.5, 3.9, 1.0]])
ratings = torch.tensor([[5.0, 3.0, 2.0, 0.0], [2.0, 5.0, 4.0, 1.0]])
mask = torch.tensor(
    [[True, True, True, False], [True, True, True, True]]
)  # task 0 has 3 real items

print("MAE per task", M.mae(scores, ratings, mask).tolist())
print("nDCG@3 per task", M.ndcg_at_k(scores, ratings, mask, k=3).tolist())
mean, half = M.mean_ci(M.mae(scores, ratings, mask).tolist())
print(f"MAE {mean:.3f} ± {half:.3f} (95% CI over tasks)")

pos = torch.tensor([0.9, 0.2])
neg = torch.tensor([[0.1, 0.5, 0.95], [0.3, 0.1, 0.0]])
rank = M.rank_of_positive(pos, neg)
print(
    "rank of the positive among sampled negatives",
    rank.tolist(),
    "HR@2",
    M.hr_at_k_from_rank(rank, 2).tolist(),
)
print("flags for constant predictions:", M.degenerate_flags(torch.ones(2, 4), ratings, mask, k=3))
