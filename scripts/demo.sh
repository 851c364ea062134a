#!/usr/bin/env bash
# The README's demo: the commands a user types. Fine-tune all-MiniLM-L6-v2 with the bundled minilm-cpu recipe on the
# bundled Debian pairs, then score the base and the fine-tuned model on held-out packages (REPORT.md + plot).
# A short run that fits in minutes on a laptop CPU; drop the --set training.max_steps option for the full recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PATH="$PWD/.venv/bin:$PATH"
OUT="${1:-runs/demo}"
STEPS="${DEMO_STEPS:-20}"

run() { echo "+ $*" >&2; "$@"; }

# 1. train: mines one hard negative per query, then trains (the recipe's eval is left to step 2)
run embedkit train minilm-cpu -o "$OUT/model" --overwrite \
  --set training.max_steps="$STEPS" --set output.save_steps="$STEPS" --set eval.beir=null
# 2. evaluate base vs fine-tuned on held-out Debian packages (200 of the 400 queries, 3,000 of the 11,000 documents;
#    drop --max-queries/--max-corpus for the full set)
run embedkit eval minilm "$OUT/model/final" --beir sample:debian-beir --max-queries 200 --max-corpus 3000 \
  --labels base fine-tuned -o "$OUT/eval" --overwrite
echo "report: $OUT/eval/REPORT.md   plot: $OUT/eval/comparison.png" >&2
