#!/usr/bin/env bash
# The one prepared GPU check: install, GPU correctness tests, timings, in a single device call.
#
#   device run:  bash benchmarks/gpu_check.sh          (timeout_s about 540; results land in $OUT)
#   afterwards:  cp <files_at>/*.json benchmarks/results/ && python benchmarks/update_results.py
#
# Everything it measures is written as JSON in the `hrnet-fast bench --json` format, plus one log.
# It runs on the H200 image as it is (torch 2.11, triton 3.6, Python 3.12, nvcc, no network).
set -uo pipefail
OUT=${OUT:-/tmp/hrnet_fast_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
step() { echo "== $(date +%T) $*"; }
{
    step environment
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv
    python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

    step install
    python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1

    step "GPU correctness tests (pytest -m cuda)"
    timeout 240 python3 -m pytest -q -x -m cuda tests/

    for script in benchmarks/gpu_triton.py benchmarks/gpu_cuda.py; do
        if [ -f "$script" ]; then
            step "$script"
            timeout 240 python3 "$script" "$OUT"
        fi
    done

    step "hrnet-fast bench: W32 pose, fp16 channels_last, batch 32, with torch.compile"
    timeout 300 hrnet-fast bench --dtype float16 --channels-last --batch 32 --compile --json "$OUT/gpu-w32-b32-fp16cl.json"
    step "hrnet-fast bench: W32 pose, fp16 channels_last, batch 128"
    timeout 120 hrnet-fast bench --dtype float16 --channels-last --batch 128 --json "$OUT/gpu-w32-b128-fp16cl.json"
    step done
} 2>&1 | tee "$OUT/gpu_check.log"
