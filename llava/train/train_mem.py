"""Upstream's launcher entry: ``deepspeed llava/train/train_mem.py ...``.

Upstream hard-codes flash-attention 2 (and fails where flash-attn does not build). Here flash
attention 2 is used when ``flash_attn`` imports and CUDA is present, else PyTorch's SDPA (which
runs flash kernels on recent GPUs anyway).
"""

from llava.model.attention import select_attn_implementation
from llava.train.train import finish_launched_run, train

if __name__ == "__main__":
    from llava.entry import run_main

    run_main(train, select_attn_implementation())
    finish_launched_run()
