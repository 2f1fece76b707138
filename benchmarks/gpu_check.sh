#!/usr/bin/env bash
# The GPU check, prepared to run in one go (at most ~8 minutes on one GPU):
#   1. pytest -m gpu (every gpu-marked test),
#   2. engine throughput on CUDA, float32 and bfloat16 autocast, meta-batches 32 and 256
#      (learn2learn side by side when installed; peak CUDA memory; the fraction of the GPU's
#      matmul peak measured in the same run),
#   3. catalogue-scoring throughput (benchmarks/eval_throughput.py when it exists; a marked hook
#      until then),
# writing rows to benchmarks/results/gpu_check/ (gpu_check.jsonl, gpu_check.md, one
# engine_<dtype>_T<tasks>.jsonl/.md per configuration, pytest_gpu.xml/.log).
#
# Usage:   benchmarks/gpu_check.sh                  the check, on cuda
#          benchmarks/gpu_check.sh --device cpu     a dry run on tiny sizes (seconds; not measurements)
#          PYTHON=.venv/bin/python benchmarks/gpu_check.sh --out-dir /tmp/gpu_check
# Every option goes to benchmarks/gpu_check.py (--help lists them). METAREC_DATA, when set and
# holding movielens-1m/, gives the engine MeLU's MovieLens-1M workload; else a synthetic one.
# learn2learn: PYTHON=... benchmarks/install_learn2learn.sh first (optional).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x "$here/../.venv/bin/python" ]]; then
    py="$here/../.venv/bin/python"
else
    py="python"
fi
cd "$here/.."
exec "$py" "$here/gpu_check.py" "$@"
