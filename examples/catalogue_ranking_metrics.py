"""Catalogue ranking metrics with several relevant items per user, and what the served top-10
lists look like beyond accuracy (coverage, overlap between users, popularity).

Run: python examples/catalogue_ranking_metrics.py
"""

import numpy as np
import torch

from metarec.metrics.catalogue import (
    beyond_accuracy,
    catalogue_metrics,
    popularity_percentile,
    served_top_k,
)

# two users ranking a catalogue of 8 items; user 0 already has item 2 (its support: not a candidate)
scores = torch.tensor(
    [[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]]
)
candidates = torch.ones(2, 8, dtype=torch.bool)
candidates[0, 2] = False
relevant = torch.zeros(2, 8, dtype=torch.bool)
relevant[0, [1, 4]] = True  # user 0 rated items 1 and 4 at least 4 stars
relevant[1, [7, 0]] = True
for name, values in catalogue_metrics(
    scores, candidates, relevant, recall_k=3, ndcg_k=3, hr_k=1
).items():
    print(f"{name:<14}", [round(v, 4) for v in values.tolist()])

served = served_top_k(scores, candidates, k=3)  # catalogue positions, best first
print("served top-3 per user:", served.tolist())
counts = np.array([50, 40, 30, 20, 10, 5, 2, 1])  # meta-train interactions of each item
coverage, overlap, pop = beyond_accuracy(served.numpy(), 8, popularity_percentile(counts), k=3)
print(f"coverage@3 {coverage:.3f}, overlap@3 {overlap.mean():.3f}, pop@3 {pop.mean():.3f}")
