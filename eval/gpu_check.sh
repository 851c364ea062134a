#!/usr/bin/env bash
# The ready GPU check: bf16 + sdpa (+ flash-attention 2 when installed) for MiniLM and SmolLM2 bidirectional LoRA:
# tokens/s, MFU, peak memory of GradCache at batch 4096 vs a plain batch of 64, encode throughput vs
# sentence-transformers. Writes OUT/gpu_check.json and OUT/gpu_check.md. At most 8 minutes on one H100/H200
# (a hard timeout stops it at 8). Offline: the models come from the packages in the `models` extra.
#   eval/gpu_check.sh [--out DIR] [--steps N]        # on a GPU machine
#   eval/gpu_check.sh --dry-run --out /tmp/gc        # CPU smoke run in seconds (what tests/test_gpu_check.py runs)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python="${PYTHON:-python}"
exec timeout 480 "$python" "$here/gpu_check.py" "$@"
