"""The launcher entry points leave the process group before exiting."""

import torch.distributed as dist

from llava.train.train import shutdown_distributed


def test_shutdown_distributed_leaves_the_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert dist.is_initialized()
    shutdown_distributed()
    assert not dist.is_initialized()
    shutdown_distributed()  # a second call, or a run without a group, does nothing
    assert not dist.is_initialized()
