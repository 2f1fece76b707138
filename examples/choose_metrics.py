"""Choose the reported metrics with ``metrics.names``, and run the fault probe set.

``metric_selection`` shows what a scenario's ``metrics.names`` computes on each feedback kind
(the primary metric, which selects the best validation step, is always kept); then a per-task
evaluation of a few query sets computes exactly those metrics. The whole hostile-input and
fault probe of the command line is ``python benchmarks/fault_probe.py`` (a few minutes).

Run: python examples/choose_metrics.py
"""

import warnings

import torch

from metarec.metrics.evaluate import metric_selection, per_task_metrics

print("explicit, default:", metric_selection([], "explicit", k=10))
print("implicit, default:", metric_selection([], "implicit", k=10))
print(
    'explicit, ["rmse", "ndcg@5", "mae"]:', metric_selection(["rmse", "ndcg@5", "mae"], "explicit")
)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    print('implicit, ["hr", "logloss"]:', metric_selection(["hr", "logloss"], "implicit", k=5))
    print("  warning:", w[0].message)

scores = torch.tensor([[2.0, -1.0, 0.3, 0.0], [0.5, 1.5, -0.5, 0.1]])
clicks = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
for name, v in per_task_metrics(
    scores, clicks, mask, "implicit", 10, ["auc", "logloss", "hr@1"]
).items():
    print(f"{name:>8} per task: {[round(x, 4) for x in v.tolist()]}")
