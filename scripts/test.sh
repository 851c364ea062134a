#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export EMBEDKIT_CACHE="${EMBEDKIT_CACHE:-$PWD/.embedkit_cache}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
