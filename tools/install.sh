#!/usr/bin/env bash
# One-command install of kdtoolbox and its stack into .venv/ at the repository root.
#
# Safe to run twice: every step checks what is already there. The slow step (building mmcv 2.1.0
# with its CPU ops from source, ~17 min on 2 cores) runs once; the wheel is kept in
# $KDTOOLBOX_WHEEL_CACHE (default ~/.cache/kdtoolbox/wheels) and reused by later installs,
# fresh clones included.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
CACHE="${KDTOOLBOX_WHEEL_CACHE:-$HOME/.cache/kdtoolbox/wheels}"
CONSTRAINTS="$ROOT/tools/constraints.txt"
mkdir -p "$CACHE"

log() { printf '[install] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS")

# Build tooling first. setuptools < 81 still ships pkg_resources, which mmcv's setup.py needs.
"${PIP[@]}" -q "setuptools==80.9.0" wheel ninja
# torch is pinned by the constraints file, so no later package can re-resolve it to a CUDA build.
"${PIP[@]}" -q torch numpy

# mmcv with ops: PyPI only has the sdist. Build the wheel once, keep it in the cache.
MMCV_WHEEL=$(ls "$CACHE"/mmcv-2.1.0-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$MMCV_WHEEL" ]; then
  log "building mmcv 2.1.0 with CPU ops (one time, ~10-17 min on 2 cores)"
  "$PY" -m pip install -q -c "$CONSTRAINTS" mmengine  # mmcv's build imports nothing else of ours
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip wheel --no-deps --no-build-isolation -w "$CACHE" mmcv==2.1.0
  MMCV_WHEEL=$(ls "$CACHE"/mmcv-2.1.0-*.whl | head -n 1)
fi
log "mmcv wheel: $MMCV_WHEEL"
"${PIP[@]}" -q "$MMCV_WHEEL"

# mmdet3d's declared requirements pull open3d and tensorboard, which nothing here uses:
# install it without deps and name what register_all_modules() really imports.
"${PIP[@]}" -q -r "$ROOT/tools/requirements.txt"
"${PIP[@]}" -q --no-deps mmdet3d==1.4.0

# kdtoolbox and its built-in plugins, editable.
"${PIP[@]}" -q --no-build-isolation -e "$ROOT"

"$PY" - <<'PY'
import torch, mmengine, mmcv, mmdet, mmdet3d, spconv, pluggy
from mmcv.ops import RoIAlign  # noqa: F401  (fails if mmcv was installed without ops)
print(f"[install] ok: torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, "
      f"mmdet {mmdet.__version__}, mmdet3d {mmdet3d.__version__}, spconv {spconv.__version__}")
PY
