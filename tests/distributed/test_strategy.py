"""The strategy's registration, checks, data sharding, cross-node warning and DDP group, in one
process (one rank at most)."""

from __future__ import annotations

import pickle
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from lightning_fabric.plugins.environments import LightningEnvironment
from pytorch_lightning.strategies import StrategyRegistry
from torch import nn

from pnode_zoo.distributed import TimeParallelStrategy
from pnode_zoo.distributed.strategy import (
    CheckedLaunch,
    cross_node_warning,
    time_parallel_blocks,
)
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


@pytest.mark.parametrize(
    ("time_size", "per_node", "world", "spanned"),
    [(2, 4, 8, None), (4, 4, 8, None), (4, 2, 8, 2), (8, 2, 8, 4), (3, 4, 12, 2), (1, 1, 4, None)],
)
def test_warns_when_a_time_group_spans_nodes(time_size: int, per_node: int, world: int,
                                             spanned: int | None) -> None:
    # a faked layout: ranks r on node r // per_node (no processes started)
    warning = cross_node_warning(time_size, per_node, world)
    if spanned is None:
        assert warning is None
    else:
        assert warning is not None and f"a time group spans {spanned} nodes" in warning
        assert f"make time_parallel_size divide the devices per node ({per_node})" in warning


def test_a_two_node_layout_warns_at_setup(monkeypatch, recwarn) -> None:
    strategy = _strategy(2, 4)
    strategy.num_nodes = 2  # 2 devices on each of 2 nodes, one time group of 4
    monkeypatch.setattr("pnode_zoo.distributed.strategy.DDPStrategy.setup_distributed",
                        lambda self: None)
    monkeypatch.setattr("pnode_zoo.distributed.strategy.dist.set_timeout",
                        lambda timeout: None)
    monkeypatch.setattr("pnode_zoo.distributed.strategy.create_groups",
                        lambda size, timeout: (None, "data group"))
    strategy.setup_distributed()
    assert any("a time group spans 2 nodes" in str(w.message) for w in recwarn)
    assert strategy._ddp_kwargs["process_group"] == "data group"


def test_ddp_averages_over_the_data_group_with_the_strategy_timeout() -> None:
    """One rank, through Lightning's own setup: the group the strategy made reaches
    DistributedDataParallel (a private route of Lightning's: this fails if it changes), and
    both groups of the mesh carry the strategy's collective timeout (here the world group
    itself; equivalence_worker checks groups of their own)."""
    strategy = TimeParallelStrategy(time_parallel_size=1, timeout=17.0,
                                    cluster_environment=LightningEnvironment(),
                                    parallel_devices=[torch.device("cpu")])
    strategy.setup_distributed()
    try:
        data_group = strategy._ddp_kwargs["process_group"]
        ddp = strategy._setup_model(nn.Linear(2, 2))
        assert ddp.process_group is data_group
        for group in (strategy.time_group.group, data_group):
            backend = group._get_backend(torch.device("cpu"))
            assert backend.options._timeout == timedelta(seconds=17)
    finally:
        dist.destroy_process_group()


def test_every_replica_starts_from_rank_0s_weights(monkeypatch) -> None:
    """DDP over a data group broadcasts within that group only: the strategy first broadcasts
    every parameter and buffer from global rank 0, so the time groups' replicas agree too."""
    strategy = _strategy(4, 2)
    strategy.model = nn.BatchNorm1d(3)  # parameters and buffers
    sent = []
    monkeypatch.setattr("pnode_zoo.distributed.strategy.dist.broadcast",
                        lambda tensor, src: sent.append((tensor.data_ptr(), src)))
    monkeypatch.setattr("pnode_zoo.distributed.strategy.DDPStrategy.configure_ddp",
                        lambda self: None)
    strategy.configure_ddp()
    state = strategy.model.state_dict().values()
    assert sorted(sent) == sorted((t.data_ptr(), 0) for t in state)  # in place, from rank 0


@pytest.mark.parametrize("start_method", ["popen", "spawn"])
def test_the_launcher_checks_the_layout_before_any_rank_starts(monkeypatch, start_method) -> None:
    strategy = TimeParallelStrategy(time_parallel_size=2, start_method=start_method,
                                    cluster_environment=LightningEnvironment(),
                                    parallel_devices=[torch.device("cpu")] * 2)
    strategy._configure_launcher()  # what Lightning's accelerator connector calls
    launcher = strategy.launcher
    started = []
    monkeypatch.setattr(type(launcher), "launch",
                        lambda self, function, *args, **kwargs: started.append(function))
    strategy._lightning_module = _model(num_slices=3)
    with pytest.raises(ValueError, match="num_slices=3 of a parareal block is not divisible"):
        launcher.launch(print, trainer=None)
    assert not started
    strategy._lightning_module = _model(num_slices=4)
    launcher.launch(print, trainer=None)
    assert started == [print]
    clone = pickle.loads(pickle.dumps(strategy))  # the spawn launcher pickles the strategy
    assert isinstance(clone.launcher.launch, CheckedLaunch) and clone.launcher is not launcher
