"""A fixed K (tol 0) reduces the forward's residuals once, at the end: the same output,
residuals and errors as one process, with fewer collectives (so ranks need not wait for each
other between iterations)."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pnode_zoo.distributed.communicator import TimeGroup
from pnode_zoo.ode import MLPVectorField, PararealODEBlock, PararealOptions
from pnode_zoo.ode.parareal.iteration import iterate

F64 = torch.float64
BLOWUP_AT_HALF = r"end of slice 2 \(t=0.75\) in forward parareal iteration 0"


class Blowup(nn.Module):
    """-x, but infinite where ``t >= start`` (evaluated where the solver looks)."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self.start = start

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        return torch.where((t >= self.start)[:, None], torch.inf, -x)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def one_rank_group():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                            world_size=1)
    yield TimeGroup(dist.group.WORLD, [0])
    dist.destroy_process_group()


def _comm_calls(block: PararealODEBlock) -> int:
    return sum(kind == "comm" for kind, _, _ in block.stats.timeline)


def test_fixed_k_agrees_once(one_rank_group):
    torch.manual_seed(0)
    field, x = MLPVectorField(3, 8).double(), torch.randn(5, 3, dtype=F64)
    one = PararealODEBlock(field, 0.0, 1.0, num_slices=4, max_iters=2, tol=0.0)
    timed = PararealODEBlock(field, 0.0, 1.0, num_slices=4, max_iters=2, tol=0.0)
    timed.time_group = one_rank_group
    with torch.no_grad():
        assert torch.equal(timed(x), one(x))
    assert timed.stats.forward_residuals == pytest.approx(one.stats.forward_residuals, rel=1e-12)
    # one all-reduce of every residual with U_N, the wait for sends
    assert _comm_calls(timed) == 2
    # a tolerance needs the residual after the sweep and after each iteration: 3 all-reduces
    stopped = PararealODEBlock(field, 0.0, 1.0, num_slices=4, max_iters=2, tol=1e-30)
    stopped.time_group = one_rank_group
    with torch.no_grad():
        stopped(x)
    assert _comm_calls(stopped) == 5


def test_fixed_k_names_the_first_non_finite_state(one_rank_group):
    x = torch.ones(2, 2, dtype=F64)
    block = PararealODEBlock(Blowup(0.5), 0.0, 1.0, num_slices=4, max_iters=2, tol=0.0)
    block.time_group = one_rank_group
    with pytest.raises(FloatingPointError, match=BLOWUP_AT_HALF):
        block(x)


def test_which_options_run_pipelined():
    assert PararealOptions(tol=0.0).pipelined
    assert not PararealOptions(tol=1e-3).pipelined  # ranks must agree when to stop
    assert not PararealOptions(tol=0.0, fine="dopri5").pipelined  # NaN makes these raise
    assert not PararealOptions(tol=0.0, coarse="backward_euler").pipelined


def test_deferred_checks_need_a_fixed_k():
    with pytest.raises(ValueError, match="needs tol=0"):
        iterate(torch.zeros(1), lambda s, x: x, lambda n, x: x, num_slices=2, max_iters=2,
                tol=1e-3, where=str, agree_each_iteration=False)


def _two_ranks(rank: int, port: int, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2, timeout=timedelta(seconds=60))
    group = TimeGroup(dist.group.WORLD, [0, 1])
    out = {}
    torch.manual_seed(0)
    field, x = MLPVectorField(3, 8).double(), torch.randn(5, 3, dtype=F64)
    block = PararealODEBlock(field, 0.0, 1.0, num_slices=4, max_iters=2, tol=0.0)
    block.time_group = group
    with torch.no_grad():
        out["output"] = block(x).tolist()
    out["residuals"] = block.stats.forward_residuals
    # only rank 1 owns the slice that blows up; both ranks must raise the same error
    bad = PararealODEBlock(Blowup(0.5), 0.0, 1.0, num_slices=4, max_iters=2, tol=0.0)
    bad.time_group = group
    try:
        bad(torch.ones(2, 2, dtype=F64))
    except FloatingPointError as err:
        out["error"] = str(err)
    Path(path, f"{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_agree_on_residuals_and_errors(tmp_path):
    mp.start_processes(_two_ranks, (_free_port(), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    torch.manual_seed(0)
    field, x = MLPVectorField(3, 8).double(), torch.randn(5, 3, dtype=F64)
    one = PararealODEBlock(field, 0.0, 1.0, num_slices=4, max_iters=2, tol=0.0)
    with torch.no_grad():
        expected = one(x)
    for out in ranks:
        assert torch.equal(torch.tensor(out["output"], dtype=F64), expected)
        assert out["residuals"] == pytest.approx(one.stats.forward_residuals, rel=1e-12)
        assert out["error"] == ranks[0]["error"]
    with pytest.raises(FloatingPointError) as single:
        PararealODEBlock(Blowup(0.5), 0.0, 1.0, num_slices=4, max_iters=2, tol=0.0)(
            torch.ones(2, 2, dtype=F64))
    assert ranks[0]["error"] == str(single.value)
