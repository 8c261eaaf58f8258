#!/usr/bin/env bash
# One command for a lent GPU: fixtures on CUDA, training step, DDP, full-size eval, metrics, options, roofline.
#   scripts/gpu-check.sh [--cpu-smoke] [OUT_DIR]    -> OUT_DIR/gpu-check.json and gpu-check.md; exit 1 on a failure
# Runs from the working tree without an install (PYTHONPATH=src) under torch >= 2.11; the pure-python wheels
# in scripts/gpu-check-wheels (cityscapesscripts and its import-time dependency) go on the path first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
wheels=""
for whl in "$here"/gpu-check-wheels/*.whl; do wheels="$wheels:$whl"; done
export PYTHONPATH="$root/src$wheels${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m segrepro.gpu_check "$@"
