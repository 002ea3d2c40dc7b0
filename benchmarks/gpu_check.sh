#!/usr/bin/env bash
# The GPU check of a lent H200-class machine (at most 8 minutes): nvidia-smi, then benchmarks/gpu_check.py
# (bf16 matmul peak, the AUNCE and wce training steps at the paper's shapes, a 2-epoch full-budget run).
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (writes OUT_DIR/gpu_check.json, default: the current folder)
set -euo pipefail
out="${1:-.}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 480 python3 "$(dirname "$0")/gpu_check.py" --out "$out/gpu_check.json"
