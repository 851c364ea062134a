#!/usr/bin/env bash
# The README's main job: set up (if needed), then fine-tune all-MiniLM-L6-v2 on the bundled Debian pairs and print
# base vs sentence-transformers fine-tune vs embedkit on held-out packages (see BENCHMARKS.md for timings).
# Extra arguments go to eval/quality.py (e.g. --steps 300 for the full comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python eval/quality.py --quick -o runs/demo "$@"
