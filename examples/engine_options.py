"""The meta-gradient engine's options: analytic inner loop vs torch.func, support-size buckets.

For MeLU (decision layers adapt, embeddings meta-learned) the default engine runs the inner loop
as batched matrix products with hand-derived gradients and groups tasks by support size
(`AlgorithmConfig(engine="auto", buckets=2)`); `engine="vmap"` is the general torch.func path
any model can use. Both give the same meta-gradients; this prints their difference and timings.

Run: python examples/engine_options.py
"""

import time

import numpy as np

from metarec.algorithms import AlgorithmConfig, meta_loss_and_grads
from metarec.data.synthetic import make_synthetic
from metarec.episodes.pool import build_pool
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.models import build_model

table = make_synthetic(n_domains=4, n_users=60, n_items=120, seed=0)
pool = build_pool(table, np.arange(len(table)), table.users, "all", "user", min_interactions=15)
batch = TaskSampler(table, pool, SamplerConfig(n_support=None, n_query=10), seed=0).sample(
    32
)  # ragged supports
model = build_model("melu", table, embedding_dim=16, hidden=(32, 32))
params = dict(model.named_parameters())
results = {}
for engine, buckets in (("vmap", 1), ("auto", 1), ("auto", 2), ("auto", 4)):
    cfg = AlgorithmConfig("maml", inner_steps=3, inner_lr=0.05, engine=engine, buckets=buckets)
    meta_loss_and_grads(cfg, model, params, batch)  # warm-up
    t0 = time.perf_counter()
    loss, grads = meta_loss_and_grads(cfg, model, params, batch)
    results[(engine, buckets)] = grads
    print(
        f"engine={engine:<5} buckets={buckets}: meta-loss {float(loss):.5f}, "
        f"{1000 * (time.perf_counter() - t0):6.1f} ms"
    )
ref = results[("vmap", 1)]
diff = max(float((g[k] - ref[k]).abs().max()) for g in results.values() for k in ref)
print(f"largest meta-gradient difference between the engines: {diff:.1e} (float32)")
assert diff < 1e-4 * max(float(v.abs().max()) for v in ref.values())
