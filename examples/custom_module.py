"""A plain `torch.nn.Module` (no metarec base class, no adapt patterns) meta-trained by the engine.

A module that declares no `adapt_patterns` adapts every parameter in the inner loop (MAML's
original formulation); declare `adapt_patterns = ("head.*",)` to adapt only some, and
`head_patterns` for ANIL.

Run: python examples/custom_module.py
"""

import os

import torch
from torch import nn
from torch.utils.data import DataLoader

import metarec as mr
from metarec.data.synthetic import make_synthetic
from metarec.episodes.splits import random_split

quick = os.environ.get("METAREC_EXAMPLE_QUICK") == "1"


class DotProduct(nn.Module):
    """users, items (..., N) -> (..., N): a dot product of two small embedding tables plus a bias."""

    def __init__(self, n_users: int, n_items: int, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.bias = nn.Parameter(torch.tensor(3.0))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user(users) * self.item(items)).sum(-1) + self.bias


table = make_synthetic(n_domains=4, n_users=60, n_items=80, density=0.2, seed=0)
splits = random_split(table, min_interactions=20, seed=0)
model = DotProduct(table.n_users, table.n_items)
params = dict(model.named_parameters())
cfg = mr.AlgorithmConfig("maml", inner_steps=2, inner_lr=0.1)
print("inner-loop parameters:", mr.adapt_patterns(cfg, model), "->", list(params))

tasks = mr.TaskDataset(
    table,
    splits.pools["meta-train"],
    mr.SamplerConfig(5, 10),
    meta_batch=8,
    steps=5 if quick else 100,
)
opt = torch.optim.Adam(params.values(), lr=0.01)
for step, batch in enumerate(DataLoader(tasks, batch_size=None)):  # one meta-batch per item
    loss, grads = mr.meta_loss_and_grads(cfg, model, params, batch)
    for k, p in params.items():
        p.grad = grads[k]
    opt.step()
    if step % 20 == 0:
        print(f"step {step:>3}: meta-loss {float(loss):.3f}")
ev = mr.evaluate_pool(model, params, cfg, table, splits.pools["meta-test"], mr.SamplerConfig(5, 10))
print(f"meta-test MAE after adaptation: {ev['mae']:.3f} on {ev['n_tasks']} cold users")
