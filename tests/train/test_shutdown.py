"""The launcher entry points leave the process group before exiting."""

import socket

import torch.distributed as dist

from llava.train.train import shutdown_distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shutdown_distributed_leaves_the_group():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    assert dist.is_initialized()
    shutdown_distributed()
    assert not dist.is_initialized()
    shutdown_distributed()  # a second call, or a run without a group, does nothing
    assert not dist.is_initialized()

