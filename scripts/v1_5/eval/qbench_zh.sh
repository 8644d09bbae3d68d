#!/bin/bash
# Q-Bench LLVisionQA with the Chinese instruction (--lang zh); everything else as qbench.sh.
#   bash scripts/v1_5/eval/qbench_zh.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
QBENCH_LANG=zh exec bash "$(dirname "$0")/qbench.sh" "$@"
