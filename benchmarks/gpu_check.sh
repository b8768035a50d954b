#!/usr/bin/env bash
# The GPU check as one call on a lent GPU machine (at most 8 minutes): installs the carried wheels into a
# temporary target, then runs benchmarks/gpu_check.py, whose time-boxed steps write OUT/gpu_check.json,
# OUT/gpu_check.md and OUT/gpu_check.log (OUT defaults to ./gpu_check_out). docs/performance.md, "The GPU
# check", has the device call.
#   bash benchmarks/gpu_wheelhouse.sh         # once, here: fills .gpu_wheels (carry it with the call)
#   bash benchmarks/gpu_check.sh [ARGS]       # on the GPU machine; ARGS go to gpu_check.py (--steps ...)
#   bash benchmarks/gpu_check.sh --rehearse   # here: every step on CPU at small sizes, in a fresh venv that
#                                             # holds only what the GPU image holds (about 7 minutes)
# PYTHON chooses the interpreter on the GPU machine (default python3, the image's); REHEARSAL_VENV reuses a
# rehearsal environment instead of building a fresh one.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export OUT=${OUT:-$REPO/gpu_check_out}
WHEELS=${GPU_WHEELS:-$REPO/.gpu_wheels}
WALL_LIMIT_S=470  # the steps' own budget (gpu_check.py) plus the install and a margin: the call's hard stop
# The GPU image's packages that the check uses, at its versions where they matter (torch, torchvision), as
# last read on that machine (the device tool's KINDS.md, 2026-11-17): the rehearsal environment holds these.
IMAGE_PYTHON=python3.12
IMAGE_PACKAGES=(torch==2.11.0 torchvision==0.26.0 numpy pyyaml rich matplotlib opencv-python-headless einops
                markdown click zipp packaging pillow)
PINNED_TORCH=(torch==2.14.1 torchvision==0.29.1)  # if the image's torch does not install here

mode=()
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT
if [[ ${1:-} == --rehearse ]]; then
    shift
    mode=(--rehearse)
    [[ -d $WHEELS ]] || bash benchmarks/gpu_wheelhouse.sh || exit 2
    venv=${REHEARSAL_VENV:-}
    if [[ -z $venv ]]; then
        venv=$(mktemp -d /tmp/gpu_rehearsal_venv.XXXXXX)
        cleanup+=("$venv")
        start=$SECONDS
        interpreter=python3  # the image's Python where this machine has it (pyenv's shim may refuse it)
        for candidate in "$IMAGE_PYTHON" "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
            if "$candidate" -c 'import venv' 2>/dev/null; then interpreter=$candidate; break; fi
        done
        "$interpreter" -m venv "$venv" || exit 2
        if ! "$venv/bin/pip" install -q "${IMAGE_PACKAGES[@]}"; then
            echo "gpu_check: the image's torch does not install here; the pinned one instead" >&2
            "$venv/bin/pip" install -q "${PINNED_TORCH[@]}" "${IMAGE_PACKAGES[@]:2}" || exit 2
        fi
        echo "gpu_check: rehearsal environment ($("$venv/bin/python" -c 'import sys, torch; print("Python", sys.version.split()[0], "torch", torch.__version__)')) built in $((SECONDS - start)) s"
    fi
    PYTHON=$venv/bin/python
    unset PYTHONPATH  # nothing of this machine's environments may leak in
else
    PYTHON=${PYTHON:-python3}
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu_check: no CUDA device (bash benchmarks/gpu_check.sh --rehearse runs the steps on the CPU)" >&2
        exit 2
    }
fi
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_check: no wheels in $WHEELS: run bash benchmarks/gpu_wheelhouse.sh here and carry .gpu_wheels" >&2
    exit 2
fi
site=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
cleanup+=("$site")
# the device machine's way: no index, no dependency resolution, into a target of its own
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl || exit 2
export PYTHONPATH="$site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
timeout --kill-after=10 "$WALL_LIMIT_S" "$PYTHON" benchmarks/gpu_check.py "${mode[@]}" --out "$OUT" "$@"
