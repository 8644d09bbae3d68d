"""The launcher entry points leave the process group before exiting."""

import torch.distributed as dist

from llava.train.train import finish_launched_run, shutdown_distributed


def test_shutdown_distributed_leaves_the_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert dist.is_initialized()
    shutdown_distributed()
    assert not dist.is_initialized()
    shutdown_distributed()  # a second call, or a run without a group, does nothing
    assert not dist.is_initialized()


RANK_SCRIPT = """
import sys
import torch.distributed as dist
from llava.train.train import finish_launched_run

rank, world, rendezvous = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
print(f"rank {rank} trained", end="")  # no newline: only an explicit flush gets it out before os._exit
finish_launched_run()
print(" and went on")
"""


def test_finish_launched_run_ends_gloo_ranks_after_flushing(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def launch(world: int) -> list[subprocess.CompletedProcess]:
        rendezvous = tmp_path / "rendezvous"
        procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), str(world), str(rendezvous)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for rank in range(world)]
        return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in procs]

    for rank, done in enumerate(launch(2)):  # two gloo ranks: the process ends inside, exit code 0
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"rank {rank} trained"
    # one process: it leaves the group and goes on as usual
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'single'}", rank=0, world_size=1)
    finish_launched_run()
    assert not dist.is_initialized()
