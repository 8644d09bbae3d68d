#!/usr/bin/env bash
# The main job on the embedded default (SmolLM2-135M-Instruct + synthetic data), CPU only, nothing
# downloaded: data -> stage 0 (vision tower) -> stage 1 -> stage 2 -> evaluation, with the delta
# projector. Extra arguments go to `python -m llava.quickstart` (e.g. --compare).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${LLAVA_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
python -m llava.quickstart "$@"
