#!/usr/bin/env bash
# The whole benchmark suite in one command; tables to stdout, plot to benchmarks/fsla_scaling*.png.
#   bash benchmarks/run_all.sh              # CPU: fp32 (+ backward at 224/512/800x1216), bf16 and fp16
#                                           # autocast, torch.compile, onnxruntime (about 60 minutes on 2 cores)
#   DEVICE=cuda bash benchmarks/run_all.sh  # GPU: the same tables with bf16 autocast (about 5 minutes)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cpu}
# Progress on stderr (the tables stay on stdout): a line when each script starts and one with its time.
STEPS=$([ "$DEVICE" = cuda ] && echo 3 || echo 8)
done_steps=0
step() {
    done_steps=$((done_steps + 1))
    local start=$SECONDS
    echo "[run_all] $(date +%H:%M:%S) step $done_steps/$STEPS: $*" >&2
    "$PYTHON" "$@"
    local rc=$?
    echo "[run_all] step $done_steps/$STEPS: $(( SECONDS - start )) s (exit $rc)" >&2
    return $rc
}
if [ "$DEVICE" = cuda ]; then
    step benchmarks/bench_fsla.py --device cuda --plot benchmarks/fsla_scaling_cuda.png
    step benchmarks/bench_backbones.py --device cuda --dtype bf16 --backward --sizes 224 512 800x1216 896
    step benchmarks/bench_backbones.py --device cuda --dtype fp32 --sizes 224 896
    exit
fi
step benchmarks/bench_fsla.py --plot benchmarks/fsla_scaling.png
step benchmarks/bench_backbones.py --sizes 224 512 800x1216 896
step benchmarks/bench_backbones.py --backward --sizes 224 512 800x1216 --repeats 3
step benchmarks/bench_backbones.py --dtype bf16 --sizes 224 512 --repeats 3
step benchmarks/bench_backbones.py --dtype fp16 --sizes 224 --repeats 3 || echo "fp16 autocast variant did not run here"
# Leaving eager PyTorch: eager vs onnxruntime vs torch.compile (inductor), both backbones at 224 and 512
# (export and compile of each take 1-5 minutes on 2 cores)
step benchmarks/bench_deploy.py --repeats 3 || echo "deploy variant did not run here (pip install onnx onnxscript onnxruntime)"
# torch.compile: BOAT-Swin-T pair only (inductor compiles every stage shape: ~5 minutes on 2 cores per pair)
step benchmarks/bench_backbones.py --compile --pairs swin --sizes 224 --repeats 3 || echo "torch.compile variant did not run here"
# Every ADE20K test-time-augmentation scale through the whole BOAT-CSWin-T UperNet (about 1 minute)
step benchmarks/bench_tta_sizes.py
