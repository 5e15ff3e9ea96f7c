"""A check every training / labelling script runs right after building its `accelerate.Accelerator`.

`torchrun` / `accelerate launch` start `WORLD_SIZE` processes, but Accelerate only joins them in one distributed
group for a distributed type it supports on the device. With `use_cpu: true` and `distributed_type: FSDP` (or
DeepSpeed), for example, Accelerate 1.x falls back to `DistributedType.NO` in every process: each process then trains
(or labels) everything on its own and they overwrite each other's outputs, silently. This module turns that into one
clear error at start-up.
"""

from __future__ import annotations

import os

__all__ = ["check_distributed_launch"]


def check_distributed_launch(num_processes: int, distributed_type: object) -> None:
    """Refuse a launch whose processes do not form one distributed group.

    Args:
        num_processes: `accelerator.num_processes`.
        distributed_type: `accelerator.distributed_type` (named in the error).

    Raises:
        ValueError: when the launcher started `WORLD_SIZE` > 1 processes but Accelerate runs each of them alone.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size > 1 and num_processes != world_size:
        raise ValueError(
            f"The launcher started {world_size} processes (WORLD_SIZE={world_size}) but Accelerate runs with "
            f"num_processes={num_processes} ({distributed_type}): every process would work alone on all of the data "
            "and overwrite the others' outputs. On CPU use `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu "
            "--num_processes N` or `torchrun --nproc_per_node N` (gloo DDP); Accelerate's FSDP / DeepSpeed need GPUs."
        )
