#!/usr/bin/env bash
# The GPU acceptance check for a short GPU window: `python -m vgrpo.bench gpu` on a CUDA machine, report in $OUT.
#
#   scripts/gpu-check.sh [OUT] [BUDGET_S]        (defaults: gpu-report, 400)
#
# Needs a Python with torch (CUDA build), triton, transformers, peft and accelerate. When vgrpo is not installed
# there, it is installed from this checkout without the network: `pip install --no-deps` of the core and the
# count plugin (the engine section's task), with any missing pure-Python dependencies (pydantic, pluggy, rich,
# pyyaml, ...) taken from a folder of wheels, $VGRPO_WHEELS (default: ./wheels), when one is there.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-report}
BUDGET=${2:-400}
PY=${PYTHON:-python}

if ! "$PY" -c "import vgrpo, vgrpo_count" 2>/dev/null; then
    WHEELS=${VGRPO_WHEELS:-wheels}
    if [ -d "$WHEELS" ]; then
        "$PY" -m pip install -q --no-index --find-links "$WHEELS" -e . -e plugins/count
    else
        "$PY" -m pip install -q --no-deps --no-build-isolation -e . -e plugins/count
    fi
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
# the sections keep to BUDGET; the outer limit only guards against a hang outside them
timeout $((${BUDGET%.*} + 120)) "$PY" -m vgrpo.bench gpu --out "$OUT" --budget-s "$BUDGET"
