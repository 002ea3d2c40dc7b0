#!/usr/bin/env bash
# The GPU check of a lent H200-class machine (at most 8 minutes): nvidia-smi, then benchmarks/gpu_check.py
# (bf16 matmul peak, the AUNCE and wce training steps at the paper's shapes, a 2-epoch full-budget run).
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (writes OUT_DIR/gpu_check.json, default: the current folder)
# Without an NVIDIA GPU it says so in one line and exits 2 before anything else.
set -euo pipefail
if ! command -v nvidia-smi >/dev/null; then
    echo "no GPU: nvidia-smi not found (this check needs an NVIDIA GPU)" >&2
    exit 2
fi
if ! gpus="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)" || [ -z "$gpus" ]; then
    echo "no GPU: nvidia-smi lists none (${gpus:+${gpus%%$'\n'*}; }this check needs an NVIDIA GPU)" >&2
    exit 2
fi
echo "$gpus"
out="${1:-.}"
mkdir -p "$out"
timeout 480 python3 "$(dirname "$0")/gpu_check.py" --out "$out/gpu_check.json"
