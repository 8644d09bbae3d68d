#!/usr/bin/env bash
# The test suite, on CPU, nothing downloaded. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${LLAVA_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False DS_ACCELERATOR=cpu
python -m pytest -q "$@"
