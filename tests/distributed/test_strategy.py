"""The strategy's registration, checks and data sharding, in one process (no ranks started)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning_fabric.plugins.environments import LightningEnvironment
from pytorch_lightning.strategies import StrategyRegistry
from torch import nn

from pnode_zoo.distributed import TimeParallelStrategy
from pnode_zoo.distributed.strategy import time_parallel_blocks
from pnode_zoo.ode import MLPVectorField, PararealODEBlock


def _strategy(devices: int, time_size: int | None, rank: int = 0) -> TimeParallelStrategy:
    environment = LightningEnvironment()
    environment.set_global_rank(rank)
    return TimeParallelStrategy(time_parallel_size=time_size, cluster_environment=environment,
                                parallel_devices=[torch.device("cpu")] * devices)


def _model(num_slices: int) -> nn.Module:
    block = PararealODEBlock(MLPVectorField(2, 4), 0.0, 1.0, num_slices=num_slices)
    return nn.Sequential(nn.Linear(3, 2), block)


def test_registered_by_name() -> None:
    for name, start_method in (("time_parallel", "popen"), ("time_parallel_spawn", "spawn")):
        strategy = StrategyRegistry.get(name)
        assert isinstance(strategy, TimeParallelStrategy)
        assert strategy._start_method == start_method


def test_blocks_are_found_by_duck_typing() -> None:
    model = _model(4)
    assert time_parallel_blocks(model) == [model[1]]


def test_time_and_data_groups_shard_the_data_over_data_groups_only() -> None:
    assert _strategy(4, 2, rank=3).distributed_sampler_kwargs == {"num_replicas": 2, "rank": 1}
    assert _strategy(4, 2, rank=2).distributed_sampler_kwargs == {"num_replicas": 2, "rank": 1}
    assert _strategy(4, None, rank=3).distributed_sampler_kwargs == {"num_replicas": 1, "rank": 0}


@pytest.mark.parametrize(
    ("devices", "time_size", "model", "message"),
    [
        (3, 2, _model(4), "devices x num_nodes = 3 is not divisible by time_parallel_size=2"),
        (2, None, _model(3), "num_slices=3 of a parareal block is not divisible"),
        (2, None, nn.Linear(2, 2), "the model has no parareal block"),
    ],
)
def test_check_rejects(devices: int, time_size: int | None, model: nn.Module,
                       message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _strategy(devices, time_size).check(model)


def test_check_accepts_data_parallel_without_a_block() -> None:
    _strategy(2, 1).check(nn.Linear(2, 2))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="time_parallel_size must be >= 1"):
        TimeParallelStrategy(time_parallel_size=0)
    with pytest.raises(ValueError, match="timeout and startup_timeout must be positive"):
        TimeParallelStrategy(timeout=0)


def test_block_rejects_a_time_group_that_does_not_divide_its_slices() -> None:
    block = PararealODEBlock(MLPVectorField(2, 4), 0.0, 1.0, num_slices=4)
    block.time_group = SimpleNamespace(size=3, index=0)
    with pytest.raises(ValueError, match="num_slices=4 is not divisible by the time group size 3"):
        block(torch.zeros(1, 2))
