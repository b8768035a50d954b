#!/usr/bin/env bash
# Create (or reuse) the Python environment boat_mm runs in, idempotently.
#
#   tools/bootstrap.sh            # environment in ./.venv
#   VENV=/path/to/env tools/bootstrap.sh
#   BOAT_MM_USE_CURRENT_ENV=1 tools/bootstrap.sh   # install into the active interpreter
#   BOAT_MM_TORCH=2.1.2 VENV=.venv-torch2.1 tools/bootstrap.sh   # another tested stack (the oldest: torch 2.1.2,
#                                 # numpy 1.26, mmcv 2.1.0 from its sdist; or the newest: 2.15.0); without the
#                                 # deploy extra where its pins need a newer torch
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

TORCH_VERSION="${BOAT_MM_TORCH:-2.14.1}"  # the pinned stack (requirements.txt) unless another tested one is asked for
MMCV_VERSION=2.1.0
# Each tested torch: its torchvision, its numpy, the C++ standard its headers need (mmcv's setup.py says c++17),
# and whether the deploy extra's pins (requirements-deploy.txt) install beside it.
case "$TORCH_VERSION" in
    2.14.1) TORCHVISION_VERSION=0.29.1; NUMPY_SPEC="numpy>=2,<3"; CXX_STD=c++20; DEPLOY=1 ;;
    2.15.0) TORCHVISION_VERSION=0.29.2; NUMPY_SPEC="numpy>=2,<3"; CXX_STD=c++20; DEPLOY=1 ;;
    2.1.2) TORCHVISION_VERSION=0.16.2; NUMPY_SPEC="numpy>=1.24,<2"; CXX_STD=c++17; DEPLOY=0 ;;
    *) echo "[bootstrap] BOAT_MM_TORCH=$TORCH_VERSION is not a tested stack (2.1.2, 2.14.1, 2.15.0)" >&2; exit 2 ;;
esac
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
REQ_HASH="$( (cat "$REPO_ROOT/requirements.txt" "$REPO_ROOT/requirements-deploy.txt" "$REPO_ROOT/tools/bootstrap.sh"; \
    echo "$TORCH_VERSION") | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ] && "$PY" -c "import boat_mm, mmcv.ops" 2>/dev/null; then
    log "environment ready ($PY)"
    exit 0
fi

PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip "setuptools<82" wheel
"${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
"${PIP[@]}" install -q ninja psutil "$NUMPY_SPEC" "mmengine==0.10.7"

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
        log "building mmcv $MMCV_VERSION ($FLAVOUR ops) from sdist; this takes 12-20 min on 2 cores (once: the wheel is cached)"
        BUILD_DIR="$(mktemp -d)"
        trap 'rm -rf "$BUILD_DIR"' EXIT
        "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary=:all: "mmcv==$MMCV_VERSION" -d "$BUILD_DIR"
        tar -xzf "$BUILD_DIR"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD_DIR"
        SRC="$BUILD_DIR/mmcv-$MMCV_VERSION"
        if [ "$CXX_STD" != c++17 ]; then
            sed -i "s/-std=c++17/-std=$CXX_STD/g" "$SRC/setup.py"
            grep -q -- "$CXX_STD" "$SRC/setup.py" || { echo "could not switch mmcv to $CXX_STD" >&2; exit 1; }
        fi
        mkdir -p "$WHEEL_DIR.partial"
        # Python's own CFLAGS with debug info off (-g0 last wins): the same -O3 code, and the build takes about
        # half the time (measured on one op, roi_align.cpp: 17.0 s with -g, 9.7 s with -g0).
        MMCV_CFLAGS="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "")') -g0"
        (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" CFLAGS="$MMCV_CFLAGS" \
            "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$WHEEL_DIR.partial" .)
        # Publish the cache only once the wheel is complete, so a killed build leaves no bad cache.
        rm -rf "$WHEEL_DIR"; mv "$WHEEL_DIR.partial" "$WHEEL_DIR"
    else
        log "reusing cached mmcv wheel from $WHEEL_DIR"
    fi
    "${PIP[@]}" install -q --no-deps "$WHEEL_DIR"/mmcv-*.whl
    "${PIP[@]}" install -q addict packaging Pillow pyyaml yapf opencv-python
fi

if [ "$TORCH_VERSION" = "$(sed -n 's/^torch==//p' "$REPO_ROOT/requirements.txt")" ]; then
    "${PIP[@]}" install -q -r "$REPO_ROOT/requirements.txt" -r "$REPO_ROOT/requirements-deploy.txt"
else  # the same packages around another torch: its pins replace requirements.txt's torch, torchvision, numpy
    REQS="$(mktemp)"
    grep -v -E '^(torch|torchvision|numpy)([=<>]|$)' "$REPO_ROOT/requirements.txt" > "$REQS"
    [ "$DEPLOY" = 1 ] && cat "$REPO_ROOT/requirements-deploy.txt" >> "$REQS"
    printf 'torch==%s\ntorchvision==%s\n%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" "$NUMPY_SPEC" >> "$REQS"
    "${PIP[@]}" install -q -r "$REQS"
    rm -f "$REQS"
fi
"${PIP[@]}" install -q --no-deps -e "$REPO_ROOT"
"$PY" -c "import boat_mm, mmcv.ops, mmdet.models, mmseg.models, mmpretrain.models"
[ "$DEPLOY" = 1 ] && "$PY" -c "import onnxscript, onnxruntime"
echo "$REQ_HASH" > "$STAMP"
log "environment ready ($PY)"
