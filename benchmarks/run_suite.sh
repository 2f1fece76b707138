#!/usr/bin/env bash
# The few-shot benchmark suite: every scenario in tasks/ through `metarec bench`.
#
#   benchmarks/run_suite.sh            # the full suite into benchmarks/suite-full/ (hours on CPU; see below)
#   benchmarks/run_suite.sh --quick    # regenerate the committed quick results in benchmarks/suite/
#   ONLY=amazon-sport-cloth-b50-quick benchmarks/run_suite.sh --quick   # just the named outputs (comma-separated)
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

# One entry per output folder: "name scenario [extra metarec-bench arguments...]".
cd_all="no-transfer,no-transfer+adapt,emcdr,emcdr+adapt,ptupcdr,ptupcdr+adapt,finetune-transfer,finetune-transfer+adapt"
cd_all="$cd_all,joint,joint+adapt,da-mmd+adapt,da-coral+adapt,da-kl+adapt,da-swd+adapt,dann+adapt,maml,reptile,popularity"
if [ "$mode" = quick ]; then
    dest=benchmarks/suite
    entries=(
        "synthetic-quick synthetic-cold-start"
        "ml1m-melu-quick ml1m-melu"
        "ml1m-cross-genre-quick ml1m-cross-genre"
        "amazon-sport-cloth-quick amazon-sport-cloth"
        "amazon-sport-cloth-b50-quick amazon-sport-cloth --set protocol.beta=0.5"
        "amazon-sport-cloth-b80-quick amazon-sport-cloth --set protocol.beta=0.8"
        "amazon-cloth-electronic-quick amazon-cloth-electronic"
        "amazon-phone-electronic-quick amazon-phone-electronic"
        "amazon-sport-phone-quick amazon-sport-phone"
        "ml1m-cross-genre-all-methods-quick ml1m-cross-genre --algorithms $cd_all"
        "amazon-sport-cloth-2000-steps-quick amazon-sport-cloth --algorithms global,finetune,maml,reptile --set bench.quick_steps=2000"
    )
    flags=(--quick --seeds 3)
else
    dest=${SUITE_OUT:-benchmarks/suite-full}
    entries=(
        "synthetic-cold-start synthetic-cold-start"
        "ml1m-melu ml1m-melu"
        "ml1m-cross-genre ml1m-cross-genre"
        "amazon-sport-cloth amazon-sport-cloth"
        "amazon-sport-cloth-b50 amazon-sport-cloth --set protocol.beta=0.5"
        "amazon-sport-cloth-b80 amazon-sport-cloth --set protocol.beta=0.8"
        "amazon-cloth-electronic amazon-cloth-electronic"
        "amazon-phone-electronic amazon-phone-electronic"
        "amazon-sport-phone amazon-sport-phone"
    )
    flags=()
fi

runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
mkdir -p "$dest"
for entry in "${entries[@]}"; do
    read -r name sc extra <<<"$entry"
    read -r -a extra <<<"${extra:-}"
    if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
    out="$dest/$name"
    if [ "$sc" != synthetic-cold-start ] && [ -z "${METAREC_DATA:-}" ]; then
        echo "skipped $name: set METAREC_DATA to the datasets folder to run it"
        continue
    fi
    rm -rf "$out"
    start=$(date +%s)
    "$METAREC" bench "tasks/$sc.toml" "${flags[@]}" "${extra[@]}" --out "$out" --runs-dir "$runs/$name" "$@"
    echo "$name: $(( $(date +%s) - start )) s -> $out/report.md"
done
