#!/usr/bin/env bash
# Fills .gpu_wheels/ (git-ignored) with the Python 3.12 wheels that benchmarks/gpu_check.sh needs on the GPU
# machine beyond its image (Python 3.12, torch 2.11, no OpenMMLab packages, no network): mmengine, mmcv-lite
# (pure Python: mmcv 2.1.0 has no wheel for that image, and mmpretrain imports without mmcv's ops), mmpretrain,
# and the pure-Python packages they import that the image lacks. Nothing the image has is fetched.
#   bash benchmarks/gpu_wheelhouse.sh      # then carry .gpu_wheels with the device call
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEST=${GPU_WHEELS:-.gpu_wheels}
MAX_MIB=40  # the working tree and what it carries travel within 64 MiB
# The stack's pins (requirements.txt), then what they import at run time, at the project environment's versions
# (each read off `unzip -p WHEEL '*/METADATA' | grep ^Requires-Dist`; the image holds the rest: numpy, pyyaml,
# rich, matplotlib, opencv-python-headless, einops, markdown, click, zipp, packaging, pillow, torchvision).
WHEELS=(
    mmengine==0.10.7 mmcv-lite==2.1.0 mmpretrain==1.2.0
    addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 platformdirs==4.14.9    # mmengine (yapf: platformdirs)
    importlib-metadata==10.2.0 lazy-importer==0.1.0                     # mmpretrain.utils (and its own need)
    model-index==0.1.11 ordered-set==4.1.0                              # mmpretrain.apis (modelindex)
)
rm -rf "$DEST"
mkdir -p "$DEST"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$DEST" "${WHEELS[@]}"
size_kib=$(du -sk "$DEST" | cut -f1)
echo "gpu_wheelhouse: $(ls "$DEST" | wc -l) wheels, $((size_kib / 1024)).$(((size_kib % 1024) * 10 / 1024)) MiB in $DEST"
if ((size_kib > MAX_MIB * 1024)); then
    echo "gpu_wheelhouse: over $MAX_MIB MiB" >&2
    exit 1
fi
