"""A small synthetic federated scenario shared by the federated tests."""

from __future__ import annotations

from metarec.config import Scenario, scenario_from_dict


def fed_scenario(n_domains: int = 3, **fed: object) -> Scenario:
    """Three small synthetic domains (clients of unequal size), MeLU, the ``local`` backend."""
    return scenario_from_dict(
        {
            "name": "fed-test",
            "data": {
                "source": "synthetic",
                "synthetic": {
                    "n_domains": n_domains,
                    "n_users": 40,
                    "n_items": 60,
                    "density": 0.35,
                    "density_spread": 0.5,
                    "seed": 0,
                },
            },
            "protocol": {
                "n_support": 5,
                "n_query": 5,
                "min_interactions": 10,
                "max_interactions": 100,
            },
            "model": {"name": "melu", "embedding_dim": 8, "hidden": [16]},
            "algorithm": {"name": "maml", "inner_steps": 2, "inner_lr": 0.05, "meta_batch": 6},
            "train": {"outer_lr": 0.01, "progress": False},
            "federated": {
                "rounds": 3,
                "local_steps": 2,
                "backend": "local",
                "round_timeout": 120.0,
                **fed,
            },
        }
    )
