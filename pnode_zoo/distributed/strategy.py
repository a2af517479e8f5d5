"""``TimeParallelStrategy``: Lightning's DDP with the world split into time groups x data groups.

World = P_data x P_time ranks, a device mesh with dimensions ``data`` and ``time``; rank r
has time index r % P_time and data index r // P_time (``create_groups``). The strategy
- creates the groups after the world process group (gloo on CPU, NCCL on GPU, with the
  collective ``timeout`` given in seconds) and hands the time group to every parareal block,
  found by duck typing (``TimeParallelBlock``: a module with ``time_group`` and ``num_slices``);
- shards the data over the data groups only, so the ranks of a time group see the same batch.
  With one data group it keeps the data module's own sampler (no sharding is needed), so a
  time-parallel run draws the same batches, in the same order, as a one-process run;
- wraps the model in DDP over the data dimension only (its ``process_group`` is the data
  group). That gives the single-process gradient: a block's backward sums its parameter
  gradients over the time group, so every rank of a time group holds the same full gradient
  (per-slice parameters computed only by their owner), stem and head gradients are equal
  across it too (same batch, same final state, same lambda_0), and DDP's mean over the data
  group (the ranks with one time index) is the mean over the data shards. Before wrapping,
  every rank takes rank 0's weights (DDP itself broadcasts within each data group only);
- warns (rank 0, once) when a time group spans nodes (``cross_node_warning``): its sends would
  cross the network on the critical path; the fix is a ``time_parallel_size`` that divides
  the devices per node;
- checks before any process starts (``check``; under torchrun before any collective): torchrun's
  world size equal to devices x nodes, devices x nodes divisible by
  ``time_parallel_size``, every block's ``num_slices`` divisible by it, and a parareal block
  present when ``time_parallel_size`` > 1 (an error, not a silent fall-back to data parallel:
  time-group replicas without a block would only repeat each other's work).

Failures: an exception in one rank's part of a parareal step is agreed by its time group at
the step's next all-reduce (``pnode_zoo.distributed.communicator``): every rank raises, the
failed one its own exception, the others ``RankFailed("rank R failed: <type>: <message>")``,
and the strategy prints that cause as each rank's first error line. A killed process makes
the others fail at their next collective or receive on the closed connection, a hung one at
the latest after ``timeout`` seconds (default 300, five minutes: long enough for a slow step
or a checkpoint written while the others wait, short enough that a lost rank does not hold
the job for half an hour) or through NCCL's async error handling. Lightning then tears the
job down with a non-zero exit (its popen launcher kills the other ranks when one exits with
an error; under torchrun the elastic agent does).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any, Literal, Protocol, runtime_checkable

import pytorch_lightning as pl
import torch.distributed as dist
from lightning_fabric.plugins.environments import TorchElasticEnvironment
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from pnode_zoo.distributed.communicator import TimeGroup, create_groups
from pnode_zoo.errors import UserInputError

__all__ = [
    "CheckedLaunch",
    "TimeParallelBlock",
    "TimeParallelStrategy",
    "check_before_launch",
    "cross_node_warning",
    "time_parallel_blocks",
]


@runtime_checkable
class TimeParallelBlock(Protocol):
    """What the strategy needs of a block: its slice count and a settable time group."""

    num_slices: int
    time_group: TimeGroup | None


def time_parallel_blocks(module: nn.Module) -> list[nn.Module]:
    """The modules of ``module`` that can be time-parallel (duck typing, no import of ode)."""
    return [m for m in module.modules() if isinstance(m, TimeParallelBlock)]


def cross_node_warning(time_size: int, per_node: int, world: int) -> str | None:
    """What to tell the user when a time group's ranks lie on more than one node (None when
    none does), for ``per_node`` ranks per node: rank r is on node r // per_node and in time
    group r // time_size, as Lightning and torchrun number them."""
    spanned = max(((d + 1) * time_size - 1) // per_node - d * time_size // per_node + 1
                  for d in range(world // time_size))
    if spanned == 1:
        return None
    return (f"time_parallel: a time group spans {spanned} nodes (time_parallel_size={time_size}, "
            f"{per_node} devices per node), which puts the network between neighbouring slices, "
            f"on the critical path; make time_parallel_size divide the devices per node "
            f"({per_node})")


class TimeParallelStrategy(DDPStrategy):
    """DDP over data groups, parareal over time groups (``--trainer.strategy=time_parallel``).

    Args:
        time_parallel_size: ranks per time group, P_time (None: the whole world). Must divide
            devices x num_nodes and every parareal block's ``num_slices``.
        timeout: collective timeout in seconds (default 300: five minutes): how long a rank
            waits for a hung or killed peer before it gives up, once every rank has started.
            A peer that raises is agreed at once, without waiting for it.
        startup_timeout: how long the ranks wait for each other to start (the rendezvous), in
            seconds; at least ``timeout``. Starting a rank (imports, data) can take far longer
            than a collective on a busy machine or across nodes.
        start_method: ``"popen"`` (re-run the command for each rank) or ``"spawn"``.
        kwargs: passed on to ``DDPStrategy`` (and from there to DistributedDataParallel).
    """

    strategy_name = "time_parallel"

    def __init__(
        self,
        time_parallel_size: int | None = None,
        timeout: float = 300.0,
        startup_timeout: float = 300.0,
        start_method: Literal["popen", "spawn"] = "popen",
        **kwargs: Any,
    ) -> None:
        if time_parallel_size is not None and time_parallel_size < 1:
            raise UserInputError(f"time_parallel_size must be >= 1, got {time_parallel_size}")
        if not (timeout > 0 and startup_timeout > 0):
            raise UserInputError(
                f"timeout and startup_timeout must be positive numbers of seconds, got {timeout} "
                f"and {startup_timeout}"
            )
        # Lightning gives the world group one timeout, for the rendezvous and every later
        # collective: the generous one; ``setup_distributed`` then bounds the collectives.
        startup = timedelta(seconds=max(timeout, startup_timeout))
        super().__init__(timeout=startup, start_method=start_method, **kwargs)
        self.startup_timeout = startup
        self.collective_timeout = timedelta(seconds=timeout)
        self.time_parallel_size = time_parallel_size
        self.time_group: TimeGroup | None = None

    @property
    def world(self) -> int:
        """Ranks in the job: devices x num_nodes."""
        return self.num_nodes * self.num_processes

    @property
    def time_size(self) -> int:
        """P_time, ranks per time group."""
        return self.world if self.time_parallel_size is None else self.time_parallel_size

    def check(self, model: nn.Module) -> None:
        """Raise ValueError if this world and ``model`` cannot run time-parallel."""
        size, env = self.time_size, self.cluster_environment
        if isinstance(env, TorchElasticEnvironment) and env.world_size() != self.world:
            raise UserInputError(
                f"time_parallel: torchrun started {env.world_size()} processes but devices x "
                f"num_nodes = {self.world}; make --trainer.devices equal --nproc_per_node"
            )
        if self.world % size:
            raise UserInputError(
                f"time_parallel: devices x num_nodes = {self.world} is not divisible by "
                f"time_parallel_size={size}"
            )
        blocks = time_parallel_blocks(model)
        if size > 1 and not blocks:
            raise UserInputError(
                "time_parallel: the model has no parareal block to split over "
                f"time_parallel_size={size} ranks; use --trainer.strategy=ddp for data "
                "parallelism alone"
            )
        for block in blocks:
            if block.num_slices % size:
                raise UserInputError(
                    f"time_parallel: num_slices={block.num_slices} of a parareal block is not "
                    f"divisible by time_parallel_size={size}"
                )

    def _configure_launcher(self) -> None:
        # The one hook where a strategy's launcher is made (Lightning's accelerator connector
        # calls it; its own strategies override it): Lightning makes its launcher, and its
        # ``launch`` first checks the layout, before any rank starts. The launcher keeps its
        # class, which Lightning's trainer and prediction loop test with isinstance.
        super()._configure_launcher()
        if self.launcher is not None:
            self.launcher.launch = CheckedLaunch(self, self.launcher)

    def setup_environment(self) -> None:
        if self.root_device.type == "cuda":  # a failed peer aborts NCCL collectives
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        super().setup_environment()

    def setup_distributed(self) -> None:
        super().setup_distributed()  # the world group, with the startup timeout
        dist.set_timeout(self.collective_timeout)
        self.time_group, data_group = create_groups(self.time_size, self.collective_timeout)
        # DDP averages over the data dimension only. Lightning passes its constructor's extra
        # kwargs (kept in the private `_ddp_kwargs`) to DistributedDataParallel and has no
        # public way to give it a group made after construction; test_strategy fails if that
        # route changes.
        self._ddp_kwargs["process_group"] = data_group
        warning = cross_node_warning(self.time_size, self.num_processes, self.world)
        if warning is not None:
            rank_zero_warn(warning)

    def configure_ddp(self) -> None:
        # DDP broadcasts the initial weights within each data group only: make the time
        # groups' replicas equal first (rank 0's weights everywhere), as world-wide DDP would.
        for tensor in self.model.state_dict().values():
            dist.broadcast(tensor, 0)
        super().configure_ddp()

    def setup(self, trainer: pl.Trainer) -> None:
        self.check(self.lightning_module)
        group = self.time_group if self.time_size > 1 else None
        for block in time_parallel_blocks(self.lightning_module):
            block.time_group = group
        if self.world == self.time_size:
            # One data group: keep the data module's sampler (a one-process run's batches).
            # Lightning reads Trainer(use_distributed_sampler=...) only from its private
            # accelerator connector, and a strategy has no public way to set it;
            # test_private_apis fails if the attribute goes.
            trainer._accelerator_connector.use_distributed_sampler = False
        super().setup(trainer)

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        return {"num_replicas": self.world // self.time_size,
                "rank": self.global_rank // self.time_size}

    def on_exception(self, exception: BaseException) -> None:
        super().on_exception(exception)
        print(
            f"time_parallel: rank {self.global_rank} of {self.world} stops on "
            f"{type(exception).__name__}: {exception} (a rank that raises stops the others at "
            f"once, one killed or hung within the {self.collective_timeout} collective timeout)",
            file=sys.stderr,
        )

    def teardown(self) -> None:
        if self.lightning_module is not None:
            for block in time_parallel_blocks(self.lightning_module):
                block.time_group = None
        super().teardown()

    @classmethod
    def register_strategies(cls, strategy_registry: Any) -> None:
        for name, start_method in (("time_parallel", "popen"), ("time_parallel_spawn", "spawn")):
            if name not in strategy_registry:
                strategy_registry.register(
                    name, cls, description=f"time-parallel parareal + DDP ({start_method})",
                    start_method=start_method,
                )


class CheckedLaunch:
    """A launcher's ``launch`` that runs ``TimeParallelStrategy.check`` on the model first.

    A picklable object, not a closure: the spawn launcher pickles the trainer, and with it the
    strategy and its launcher.

    Args:
        strategy: the strategy whose layout to check.
        launcher: the launcher whose class's ``launch`` then starts the ranks.
    """

    def __init__(self, strategy: TimeParallelStrategy, launcher: Any) -> None:
        self.strategy = strategy
        self.launcher = launcher

    def __call__(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        if self.strategy.lightning_module is not None:
            self.strategy.check(self.strategy.lightning_module)
        return type(self.launcher).launch(self.launcher, function, *args, **kwargs)


def check_before_launch(trainer: pl.Trainer, model: nn.Module) -> None:
    """``TimeParallelStrategy.check`` when the trainer uses it (for the CLI, before fit)."""
    if isinstance(trainer.strategy, TimeParallelStrategy):
        trainer.strategy.check(model)


TimeParallelStrategy.register_strategies(StrategyRegistry)
