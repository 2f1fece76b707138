"""metarec tasks with learn2learn's MAML wrapper (skipped when learn2learn is not installed).

`fast_parameters` freezes the slow weights so `MAML.adapt` updates the model's inner-loop
parameters only (metarec's fast/slow split); `maml_step` runs one task of a metarec
`EpisodeBatch` through a `MAML.clone()`.

Run: python examples/learn2learn_interop.py
"""

from metarec.data.synthetic import make_synthetic
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.episodes.splits import random_split
from metarec.interop import fast_parameters, l2l_maml, maml_step
from metarec.models import build_model

table = make_synthetic(n_domains=3, n_users=40, n_items=60, density=0.25, seed=0)
splits = random_split(table, min_interactions=20, seed=0)
batch = TaskSampler(table, splits.pools["meta-train"], SamplerConfig(5, 10), seed=0).sample(4)
model = build_model("melu", table, embedding_dim=8, hidden=(16,))
print("fast (adapted) parameters:", list(fast_parameters(model, freeze_slow=False)))
try:
    maml = l2l_maml(model, lr=0.05)
except ImportError as e:
    print(f"skipped the learn2learn part: {e}")
else:
    total = 0.0
    for t in range(batch.n_tasks):
        support_loss, query_loss = maml_step(maml.clone(), batch, t, steps=2)
        query_loss.backward()
        total += float(query_loss.detach())
    print(f"mean query loss over {batch.n_tasks} tasks: {total / batch.n_tasks:.4f}")
