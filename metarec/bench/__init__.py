"""The few-shot benchmark suite behind ``metarec bench``.

:func:`run_bench` trains every algorithm of a scenario per seed (model selection on meta-val
only), scores the best parameters once per seed on every test state for every shots value, and
writes ``results.jsonl``, ``report.md`` and plots. Algorithms are scenario overrides
(:data:`VARIANTS`), plus the ``popularity`` evaluator and the ``melu-ref`` MeLU reference.
:func:`make_rows` (with :func:`evaluation_from_arrays`) turns per-state metric arrays of any
method into rows of the same format.
"""

from metarec.bench.evaluation import NEGATIVES, Catalogue, score_pool
from metarec.bench.plots import write_plots
from metarec.bench.popularity import evaluate_popularity, item_scores
from metarec.bench.report import write_report
from metarec.bench.run import (
    ADAPT_CURVE_STEPS,
    BenchResult,
    evaluation_from_arrays,
    make_rows,
    run_bench,
)
from metarec.bench.stats import paired_t_test, student_t_cdf
from metarec.bench.variants import (
    BASELINES,
    BENCH_ALGORITHMS,
    QUICK_ALGORITHMS,
    VARIANTS,
    variant_scenario,
)

__all__ = [
    "ADAPT_CURVE_STEPS",
    "BASELINES",
    "BENCH_ALGORITHMS",
    "BenchResult",
    "Catalogue",
    "NEGATIVES",
    "QUICK_ALGORITHMS",
    "VARIANTS",
    "evaluate_popularity",
    "evaluation_from_arrays",
    "item_scores",
    "make_rows",
    "paired_t_test",
    "run_bench",
    "score_pool",
    "student_t_cdf",
    "variant_scenario",
    "write_plots",
    "write_report",
]
