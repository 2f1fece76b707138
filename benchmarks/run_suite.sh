#!/usr/bin/env bash
# The few-shot benchmark suite: every scenario in tasks/ through `metarec bench`.
#
#   benchmarks/run_suite.sh            # the full suite into benchmarks/suite-full/ (hours on CPU; see below)
#   benchmarks/run_suite.sh --quick    # regenerate the committed quick results in benchmarks/suite/
#
# Scenarios on real data need METAREC_DATA (e.g. METAREC_DATA=../shared/datasets); without it only
# the synthetic scenario runs and the others are reported as skipped. Extra arguments after the
# mode are passed to every `metarec bench` call (e.g. --seeds 5, --set train.device=cuda).
# Training run folders (checkpoints) go to a temporary folder, so the output folders stay small.
set -euo pipefail
cd "$(dirname "$0")/.."
METAREC=${METAREC:-.venv/bin/metarec}
[ -x "$METAREC" ] || METAREC=metarec

mode=full
# One BLAS thread per process: on 2 shared cores, two threads per run slowed training 3-5x.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ "${1:-}" = "--quick" ]; then mode=quick; shift; fi

if [ "$mode" = quick ]; then
    dest=benchmarks/suite
    scenarios=(synthetic-cold-start ml1m-melu ml1m-cross-genre amazon-sport-cloth)
    names=(synthetic-quick ml1m-melu-quick ml1m-cross-genre-quick amazon-sport-cloth-quick)
    flags=(--quick --seeds 3)
else
    dest=${SUITE_OUT:-benchmarks/suite-full}
    scenarios=(synthetic-cold-start ml1m-melu ml1m-cross-genre amazon-sport-cloth amazon-cloth-electronic
               amazon-phone-electronic amazon-sport-phone)
    names=("${scenarios[@]}")
    flags=()
fi

runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
mkdir -p "$dest"
for i in "${!scenarios[@]}"; do
    sc=${scenarios[$i]}
    out="$dest/${names[$i]}"
    if [ "$sc" != synthetic-cold-start ] && [ -z "${METAREC_DATA:-}" ]; then
        echo "skipped $sc: set METAREC_DATA to the datasets folder to run it"
        continue
    fi
    rm -rf "$out"
    start=$(date +%s)
    "$METAREC" bench "tasks/$sc.toml" "${flags[@]}" --out "$out" --runs-dir "$runs/${names[$i]}" "$@"
    echo "$sc: $(( $(date +%s) - start )) s -> $out/report.md"
done
