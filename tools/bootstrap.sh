#!/usr/bin/env bash
# Create (or reuse) the Python environment boat_mm runs in, idempotently.
#
#   tools/bootstrap.sh            # environment in ./.venv
#   VENV=/path/to/env tools/bootstrap.sh
#   BOAT_MM_USE_CURRENT_ENV=1 tools/bootstrap.sh   # install into the active interpreter
#
# Why a script: mmcv 2.1.0 has no wheel for torch 2.14, so it is built from its sdist with ops.
# torch 2.14 headers need C++20 while mmcv's setup.py asks for C++17, so the sdist is patched
# before building. The built wheel is cached under $BOAT_MM_CACHE (default ~/.cache/boat_mm),
# keyed by mmcv version, torch version and CUDA/CPU, so a second environment takes minutes.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO_ROOT/.venv}"
CACHE_DIR="${BOAT_MM_CACHE:-$HOME/.cache/boat_mm}"
PYTHON_BIN="${PYTHON:-python3}"

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
STAMP_NAME=".boat_mm_env_ready"

log() { echo "[bootstrap] $*"; }

if [ "${BOAT_MM_USE_CURRENT_ENV:-0}" = "1" ]; then
    PY="$(command -v "$PYTHON_BIN")"
    STAMP="$REPO_ROOT/$STAMP_NAME"
else
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtual environment in $VENV"
        "$PYTHON_BIN" -m venv "$VENV"
    fi
    PY="$VENV/bin/python"
    STAMP="$VENV/$STAMP_NAME"
fi

# The stamp records the requirements it was made from: a changed requirements.txt re-runs the install.
REQ_HASH="$(cat "$REPO_ROOT/requirements.txt" "$REPO_ROOT/requirements-deploy.txt" "$REPO_ROOT/tools/bootstrap.sh" \
    | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ] && "$PY" -c "import boat_mm, mmcv.ops" 2>/dev/null; then
    log "environment ready ($PY)"
    exit 0
fi

PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip "setuptools<82" wheel
"${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
"${PIP[@]}" install -q ninja psutil "numpy>=2,<3" "mmengine==0.10.7"

if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
    log "mmcv $MMCV_VERSION with ops already installed"
else
    if command -v nvcc >/dev/null 2>&1 && "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
        FLAVOUR=cuda; export FORCE_CUDA=1
    else
        FLAVOUR=cpu; export FORCE_CUDA=0
    fi
    TORCH_TAG="$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
    WHEEL_DIR="$CACHE_DIR/wheels/mmcv-$MMCV_VERSION-torch$TORCH_TAG-$FLAVOUR-$("$PY" -c 'import sys; print("py%d%d" % sys.version_info[:2])')"
    if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
        log "building mmcv $MMCV_VERSION ($FLAVOUR ops) from sdist; this takes ~12 min on 2 cores"
        BUILD_DIR="$(mktemp -d)"
        trap 'rm -rf "$BUILD_DIR"' EXIT
        "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary=:all: "mmcv==$MMCV_VERSION" -d "$BUILD_DIR"
        tar -xzf "$BUILD_DIR"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD_DIR"
        SRC="$BUILD_DIR/mmcv-$MMCV_VERSION"
        sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
        grep -q 'c++20' "$SRC/setup.py" || { echo "could not switch mmcv to C++20" >&2; exit 1; }
        mkdir -p "$WHEEL_DIR.partial"
        (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$WHEEL_DIR.partial" .)
        # Publish the cache only once the wheel is complete, so a killed build leaves no bad cache.
        rm -rf "$WHEEL_DIR"; mv "$WHEEL_DIR.partial" "$WHEEL_DIR"
    else
        log "reusing cached mmcv wheel from $WHEEL_DIR"
    fi
    "${PIP[@]}" install -q --no-deps "$WHEEL_DIR"/mmcv-*.whl
    "${PIP[@]}" install -q addict packaging Pillow pyyaml yapf opencv-python
fi

"${PIP[@]}" install -q -r "$REPO_ROOT/requirements.txt" -r "$REPO_ROOT/requirements-deploy.txt"
"${PIP[@]}" install -q --no-deps -e "$REPO_ROOT"
"$PY" -c "import boat_mm, mmcv.ops, mmdet.models, mmseg.models, mmpretrain.models, onnxscript, onnxruntime"
echo "$REQ_HASH" > "$STAMP"
log "environment ready ($PY)"
