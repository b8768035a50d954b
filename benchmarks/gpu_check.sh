#!/usr/bin/env bash
# The GPU checks, as one prepared script for a lent GPU machine (under 8 minutes): the GPU tests
# (CUDA vs CPU clusters on tie-free inputs, no host sync in FSLA, fp16 / bf16 AMP training steps,
# torch.compile), then the benchmark tables with DEVICE=cuda.
#   bash benchmarks/gpu_check.sh            # PYTHON=/path/to/python to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device')"
"$PYTHON" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
timeout 240 "$PYTHON" -m pytest tests -m cuda -q -p no:cacheprovider
DEVICE=cuda PYTHON="$PYTHON" timeout 240 bash benchmarks/run_all.sh
