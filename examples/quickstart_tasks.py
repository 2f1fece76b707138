"""Synthetic multi-domain data -> validated table -> meta-splits -> a padded batch of few-shot tasks.

Run: python examples/quickstart_tasks.py
"""

from metarec.data.synthetic import make_synthetic
from metarec.episodes.leakage import run_leakage_checks
from metarec.episodes.sampler import SamplerConfig, TaskSampler
from metarec.episodes.splits import random_split

# 10 domains sharing latent structure, 100 users and 150 items each (deterministic per seed).
table = make_synthetic(n_domains=10, n_users=100, n_items=150, density=0.15, seed=0)
print(table)

# Task unit = a user; disjoint meta-train / meta-val / meta-test users, reproducible by seed.
splits = random_split(table, unit="user", fractions=(0.7, 0.1, 0.2), min_interactions=20, seed=0)
print({name: len(pool) for name, pool in splits.pools.items()})

# 5-shot tasks with 10 query ratings; a batch is padded (T, N) tensors with masks, ready for vmap.
config = SamplerConfig(n_support=5, n_query=10)
batch = TaskSampler(table, splits.pools["meta-train"], config, seed=0).sample(32)
print("support", tuple(batch.support.users.shape), "query", tuple(batch.query.users.shape))

checks, details = run_leakage_checks(splits, config)
for name, result in checks.items():
    print(f"{name}: {result} ({details[name]})")
