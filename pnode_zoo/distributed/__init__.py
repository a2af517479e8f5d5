"""Time parallelism across ranks: the time-group communicator and the Lightning strategy.

``TimeGroup``/``create_groups`` need only torch.distributed (so ``pnode_zoo.ode`` stays usable
without Lightning); ``TimeParallelStrategy`` loads Lightning on first access. Importing
``pnode_zoo.distributed.strategy`` registers the strategy names ``time_parallel`` (popen
launcher) and ``time_parallel_spawn``. Per-rank timings are logged by
``pnode_zoo.training.monitor.RunMonitor``.
"""

from __future__ import annotations

from typing import Any

from pnode_zoo.distributed.communicator import TimeGroup, create_groups

__all__ = [
    "TimeGroup",
    "TimeParallelStrategy",
    "create_groups",
]

_LIGHTNING = ("TimeParallelStrategy", "check_before_launch")


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING:
        from pnode_zoo.distributed import strategy

        return getattr(strategy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
