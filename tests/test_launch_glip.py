"""`launch_glip.check_distributed_launch`: processes the launcher started but Accelerate runs alone are refused."""

import pytest

from transformers_glip.launch_glip import check_distributed_launch


def test_processes_that_accelerate_runs_alone_are_refused(monkeypatch):
    # e.g. `accelerate launch` with `use_cpu: true` + `distributed_type: FSDP`: 2 processes, each DistributedType.NO
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"started 2 processes .* num_processes=1 \(DistributedType.NO\)"):
        check_distributed_launch(1, "DistributedType.NO")


@pytest.mark.parametrize("world_size, num_processes", [(None, 1), ("1", 1), ("2", 2), ("", 1)])
def test_consistent_launches_pass(monkeypatch, world_size, num_processes):
    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    assert check_distributed_launch(num_processes, "DistributedType.MULTI_CPU") is None
