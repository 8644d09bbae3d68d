#!/usr/bin/env bash
# The main job on the embedded default (SmolLM2-135M-Instruct), CPU only, nothing downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${LLAVA_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
python scripts/first_inference.py --mm_projector_type delta "$@"
