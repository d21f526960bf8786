#!/usr/bin/env bash
# The prepared GPU check: install, correctness on CUDA, timings; one part per device call.
#
#   bash benchmarks/gpu_check.sh kernels   ~6 min: install, C++ extension build + checks + timings
#                                          (gpu_cuda.py), Triton checks + timings (gpu_triton.py),
#                                          the cuda-marked tests of the C++ backend, the models and
#                                          the README's GPU snippets
#   bash benchmarks/gpu_check.sh models    ~8 min: install, `hrnet-fast bench --suite model --peers`
#                                          W32 pose fp16 channels_last: batch 32 with every peer
#                                          (torch.compile reduce-overhead and max-autotune with
#                                          freezing, ONNX Runtime's CUDA provider, or a row saying
#                                          it is not installed) beside optimize(); batch 128 with
#                                          the reduce-overhead peer and ONNX Runtime
#   bash benchmarks/gpu_check.sh train     ~3 min: install, the training benchmark (AMP fp16)
#   bash benchmarks/gpu_check.sh triton-tests   ~5 min: every cuda-marked Triton test (compiles
#                                          ~200 kernel variants)
#   bash benchmarks/gpu_check.sh level2    ~6 min: install, C++ extension build, level 2 on backend
#                                          cpp (gpu_level2.py: correctness on W32/W48 pose and W48
#                                          seg steps at batch 1/32/128, every dtype and layout;
#                                          timings beside triton level 2, eager and torch.compile),
#                                          the cuda-marked level-2 tests of cpp
#   bash benchmarks/gpu_check.sh seg       ~4 min: install, `hrnet-fast bench --suite seg`: W48 seg on one
#                                          1024x2048 image end to end, official-style eager fp32 beside
#                                          each backend and optimize() in fp16 (target: optimize >= 4x)
#
# A session's 15 device minutes (machine start included) hold about two parts: `kernels`, then
# `level2` (nothing has run on a GPU yet; both stop early when the CUDA build fails), `models` and
# `seg` in the next session with a device.
# Run each through the device tool with timeout_s of about 540. Results land in $OUT (the device
# tool's output folder; /tmp/hrnet_fast_gpu elsewhere). Afterwards, on this machine:
#   cp <files_at>/gpu-*.json benchmarks/results/; cp <files_at>/cuda/gpu_cuda.md benchmarks/results/;
#   cp <files_at>/triton/results.md benchmarks/results/gpu_triton.md;
#   cp <files_at>/level2/gpu_level2.md benchmarks/results/; python benchmarks/update_results.py
# It runs on the H200 image as it is (torch 2.11, triton 3.6, Python 3.12, nvcc 13.0, no network).
set -uo pipefail
PART=${1:-kernels}
OUT=${OUT:-/tmp/hrnet_fast_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
step() { echo "== $(date +%T) $*"; }
{
    step "environment ($PART)"
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv
    python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
    step install
    python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1

    case "$PART" in
    kernels)
        step "C++ extension: build, correctness, timings"
        timeout 240 python3 benchmarks/gpu_cuda.py "$OUT/cuda"
        step "Triton: correctness, timings (target case first)"
        timeout 200 python3 benchmarks/gpu_triton.py "$OUT/triton" --budget-s 150
        step "cuda-marked tests: C++ backend, models, optimize(), training, harness, README's GPU snippets"
        timeout 150 python3 -m pytest -q -m cuda tests/test_cpp_ops.py tests/test_cpp_model.py \
            tests/test_optimize.py tests/test_training.py tests/test_bench.py tests/test_readme.py
        ;;
    models)
        python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" \
            || echo "onnxruntime is not installed: its rows will say so"
        step "hrnet-fast bench: W32 pose fp16 channels_last, batch 32, optimize() beside every peer"
        timeout 330 hrnet-fast bench --dtype float16 --channels-last --batch 32 --suite model --peers \
            --json "$OUT/gpu-w32-pose-b32-fp16-channels_last.json"
        step "hrnet-fast bench: batch 128, optimize() beside reduce-overhead + freezing and ONNX Runtime"
        timeout 150 hrnet-fast bench --dtype float16 --channels-last --batch 128 --suite model \
            --peers compile-ro-freeze onnxruntime --json "$OUT/gpu-w32-pose-b128-fp16-channels_last.json"
        ;;
    train)
        step "hrnet-fast bench --train: AMP fp16"
        timeout 120 hrnet-fast bench --train --dtype float16 --channels-last --json "$OUT/gpu-train-amp-fp16.json"
        ;;
    triton-tests)
        step "cuda-marked Triton tests"
        timeout 500 python3 -m pytest -q -m cuda tests/test_triton_*.py
        ;;
    level2)
        step "C++ extension build (CUDA kernels), then level 2 on backend cpp: correctness, timings"
        timeout 330 python3 benchmarks/gpu_level2.py "$OUT/level2" --budget-s 240
        step "cuda-marked level-2 tests of backend cpp"
        timeout 120 python3 -m pytest -q -m cuda tests/test_fusion_branch.py tests/test_fusion_level2.py -k cpp
        ;;
    seg)
        step "hrnet-fast bench --suite seg: W48 seg 1024x2048 end to end, fp16 channels_last vs eager fp32"
        timeout 420 hrnet-fast bench --suite seg --dtype float16 --channels-last \
            --json "$OUT/gpu-seg-w48-1024x2048-fp16-channels_last.json"
        python3 - "$OUT/gpu-seg-w48-1024x2048-fp16-channels_last.json" <<'PY'
import json, sys
rows = {r["backend"]: r for r in json.load(open(sys.argv[1]))["results"]}
speedup = rows["optimize"]["speedup"]
verdict = "met" if speedup >= 4 else "NOT met"
print(f"optimize() fp16 vs official-style eager fp32: {speedup:.2f}x (target 4x): {verdict}")
PY
        ;;
    *)
        echo "unknown part $PART: kernels, models, train, triton-tests, level2 or seg" >&2
        exit 2
        ;;
    esac
    step done
} 2>&1 | tee "$OUT/gpu_check-$PART.log"
