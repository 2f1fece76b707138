"""Estimated wall time of a full benchmark suite from measured per-step and per-evaluation times.

For every trained algorithm of a scenario's ``[bench]`` list (``popularity`` trains nothing),
with the variant's own settings (:func:`metarec.bench.variants.variant_scenario`), this measures
on the scenario's real data, one torch thread, in this process:

* ``step``: one outer step as :func:`metarec.train.loop.train` runs it (sample a meta-batch,
  :func:`~metarec.algorithms.meta_loss_and_grads`, Adam), median of ``--steps``;
* ``val``: one validation pass (``train.val_tasks`` meta-val tasks adapted and scored).

The estimate of one run is ``steps * t_step + (steps / val_every) * t_val + t_test``, with
``t_test`` the evaluation of every test state at every shot setting
(``(sum of test-pool sizes / val_tasks) * (len(shots) + 1) * t_val``), for the variant's full
step budget (no early stopping: an upper bound), times ``bench.seeds``; the suite estimate is
the sum over algorithms, on one core and on two cores running two runs at a time (total / 2).
It is an estimate from measured rates, not a measured suite time.

Run ``METAREC_DATA=... python benchmarks/scale_suite.py`` (default scenario ``tasks/ml1m-melu.toml``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def measure(scenario_path: Path, steps: int, algorithms: list[str] | None) -> dict[str, Any]:
    import torch

    from metarec.algorithms import init_algorithm_state, meta_loss_and_grads
    from metarec.bench.variants import VARIANTS, variant_scenario
    from metarec.config import load_scenario
    from metarec.data.load import load_table
    from metarec.episodes.build import build_splits, sampler_config
    from metarec.episodes.sampler import TaskSampler
    from metarec.metrics.evaluate import evaluate_pool
    from metarec.models import build_model
    from metarec.models.base import split_params
    from metarec.train.loop import algorithm_config, model_kwargs

    torch.set_num_threads(1)
    base = load_scenario(scenario_path, data_root=str(C.data_root()) if C.data_root() else None)
    table = load_table(base.data)
    splits = build_splits(table, base.protocol)
    names = algorithms or [a for a in base.bench.algorithms if VARIANTS.get(a) is not None]
    test_tasks = sum(len(splits.pools[s]) for s in splits.states)
    out: dict[str, Any] = {
        "scenario": base.name,
        "seeds": base.bench.seeds,
        "shots": list(base.bench.shots),
        "test_tasks": test_tasks,
        "algorithms": {},
    }
    for name in names:
        sc = variant_scenario(base, name)
        algo = algorithm_config(sc, table.feedback)
        model = build_model(sc.model.name, table, **model_kwargs(sc))
        params = dict(model.named_parameters())
        state = init_algorithm_state(
            algo,
            split_params(
                model, algo.adapt or (model.head_patterns if algo.name == "anil" else None), params
            )[0],
        )
        opt = torch.optim.Adam([*params.values(), *state.values()], lr=sc.train.outer_lr)
        scfg = sampler_config(sc.protocol)
        sampler = TaskSampler(
            table, splits.pools[splits.train], replace(scfg, negatives_from="pool"), seed=0
        )
        times = []
        for i in range(steps + 2):
            t0 = time.process_time()
            _, grads = meta_loss_and_grads(
                algo, model, params, sampler.sample(algo.meta_batch), state=state
            )
            for k, p in {**params, **state}.items():
                p.grad = grads[k]
            opt.step()
            if i >= 2:  # two warm-up steps
                times.append(time.process_time() - t0)
        t0 = time.process_time()
        with torch.no_grad():
            evaluate_pool(
                model,
                params,
                algo,
                table,
                splits.pools[splits.val],
                scfg,
                state=state,
                max_tasks=sc.train.val_tasks,
                k=sc.metrics.k,
                steps=sc.algorithm.eval_steps,
                lr=None if algo.meta_learned_lrs else sc.algorithm.eval_lr,
            )
        t_val = time.process_time() - t0
        t_step = C.median(times)
        n_steps, every = sc.train.steps, sc.train.val_every
        t_test = test_tasks / sc.train.val_tasks * (len(sc.bench.shots) + 1) * t_val
        run = n_steps * t_step + (n_steps // every) * t_val + t_test
        out["algorithms"][name] = {
            "step_cpu_seconds": t_step,
            "val_cpu_seconds": t_val,
            "steps": n_steps,
            "val_every": every,
            "val_tasks": sc.train.val_tasks,
            "meta_batch": algo.meta_batch,
            "test_cpu_seconds_estimate": t_test,
            "run_cpu_seconds_estimate": run,
        }
        print(name, out["algorithms"][name], flush=True)
    per_seed = sum(a["run_cpu_seconds_estimate"] for a in out["algorithms"].values())
    out["suite_cpu_seconds_one_core"] = per_seed * base.bench.seeds
    out["suite_seconds_two_cores"] = per_seed * base.bench.seeds / 2
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", type=Path, default=C.ROOT / "tasks" / "ml1m-melu.toml")
    p.add_argument(
        "--steps",
        type=C.positive_int,
        default=10,
        help="timed outer steps per algorithm (default 10)",
    )
    p.add_argument(
        "--algorithms", type=lambda s: s.split(","), default=None, help="subset, comma-separated"
    )
    p.add_argument("--out", type=Path, default=C.RESULTS / "scale_suite.jsonl")
    args = p.parse_args(argv)
    res = measure(args.scenario, args.steps, args.algorithms)
    row = {
        "benchmark": "scale_suite",
        "time": C.stamp(),
        **C.git_commit(),
        **C.device_info("cpu"),
        **res,
        "timing": "time.process_time (CPU time of this process, one torch thread)",
        "command": C.command_line(),
    }
    C.write_jsonl(args.out, [row])
    lines = [
        f"Suite wall-time estimate ({row['time']}, commit {row['commit'][:12]}"
        f"{' + uncommitted changes' if row['dirty'] else ''})",
        f"command: `{row['command']}`",
        f"scenario {res['scenario']}: {res['seeds']} seeds, shots {res['shots']}, "
        f"{res['test_tasks']} test tasks; CPU time per step / validation measured here, the rest "
        "extrapolated (no early stopping: an upper bound)",
        "",
        C.markdown_table(
            [
                "algorithm",
                "meta-batch",
                "ms / step",
                "s / validation",
                "steps",
                "est. s / run (1 core)",
            ],
            [
                [
                    n,
                    a["meta_batch"],
                    f"{1000 * a['step_cpu_seconds']:.1f}",
                    f"{a['val_cpu_seconds']:.2f}",
                    a["steps"],
                    f"{a['run_cpu_seconds_estimate']:.0f}",
                ]
                for n, a in res["algorithms"].items()
            ],
        ),
        "",
        f"estimated suite: {res['suite_cpu_seconds_one_core'] / 3600:.2f} CPU-hours on one core; "
        f"{res['suite_seconds_two_cores'] / 3600:.2f} h wall on 2 cores (two runs at a time)",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return row


if __name__ == "__main__":
    main()
