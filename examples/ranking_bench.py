"""``metarec bench`` on a catalogue ranking scenario: the report leads with ndcg@10_all,
recall@20_all and the served lists' coverage, overlap and popularity; the ranking baselines are
opt-in algorithms like any method. (Command line: ``metarec bench tasks/ml1m-cold-ranking.toml
--algorithms ease,itemknn,popularity,mf-foldin --out OUT`` on MovieLens-1M.)

Run: python examples/ranking_bench.py
"""

import tempfile
from pathlib import Path

from metarec.bench import run_bench
from metarec.config import load_scenario

scenario_file = Path(__file__).resolve().parent.parent / "tasks" / "synthetic-cold-start.toml"
sc = load_scenario(
    scenario_file,
    [
        "data.synthetic.n_domains=2",
        "data.synthetic.n_users=80",
        "data.synthetic.n_items=90",
        "data.synthetic.density=0.35",
        "protocol.ranking=true",
        "protocol.support_pool=10",
        "protocol.n_support=3",
        "protocol.n_query=5",
        "protocol.min_interactions=11",
        "protocol.max_interactions=none",
        "learners.ease.lambdas=[10.0,100.0]",
        "learners.itemknn.neighbours=[20]",
        "learners.itemknn.shrinks=[0.0,10.0]",
    ],
)
with tempfile.TemporaryDirectory() as out:
    res = run_bench(
        sc,
        algorithms=["popularity", "itemknn", "ease"],
        seeds=1,
        shots=[1, 10],
        out=out,
        verbose=False,
        plots=False,
    )
    for r in res.rows:
        if r["shots"] != "default":
            m = r["metrics"]
            print(
                f"{r['algorithm']:<10} {r['shots']:>2} shots: ndcg@10_all {m['ndcg@10_all']:.4f} recall@20_all "
                f"{m['recall@20_all']:.4f} coverage@10 {m['coverage@10']:.3f} overlap@10 {m['overlap@10']:.3f}"
            )
    print(
        next(
            line
            for line in res.report.read_text().splitlines()
            if line.startswith("- primary metric")
        )
    )
