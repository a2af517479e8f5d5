"""The time group keeps every tensor a collective touches on its device, as NCCL requires.

A one-rank gloo group runs the block's whole communication path (the same calls a CUDA/NCCL
run makes) with a spy on torch.distributed. On the CPU that cannot tell the group's device from
a tensor made on the CPU by mistake, so every method of a two-rank view also runs on the
``meta`` device, with torch.distributed replaced by spies that check each tensor's device: a
buffer made on the CPU (the bug NCCL would reject) fails there. The device choice and the
clock (synchronising the device only when asked) are checked as NCCL would see them.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from pnode_zoo.distributed.communicator import TimeGroup, clock, synchronised_timers
from pnode_zoo.ode import MLPVectorField, PararealODEBlock

COLLECTIVES = ("send", "recv", "all_reduce", "broadcast", "all_gather")


@pytest.fixture
def one_rank_world():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_collectives_see_only_tensors_on_the_group_device(one_rank_world, monkeypatch):
    seen: list[tuple[str, torch.device]] = []
    for name in COLLECTIVES:
        original = getattr(dist, name)

        def spy(tensor, *args, _name=name, _original=original, **kwargs):
            tensors = list(tensor) if isinstance(tensor, list) else [tensor]
            tensors += [a for a in args if torch.is_tensor(a)]
            seen.extend((_name, t.device) for t in tensors)
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(dist, name, spy)
    group = TimeGroup(dist.group.WORLD, [0])
    assert group.device == torch.device("cpu")  # gloo: the CPU
    block = PararealODEBlock(MLPVectorField(3).double(), 0.0, 1.0, num_slices=2, tol=1e-6,
                             backward="unrolled", return_trajectory=True)
    block.time_group = group
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    block(x).sum().backward()
    block.return_trajectory = False  # U_N alone: broadcast from the last rank
    block(x).sum().backward()
    names = {name for name, _ in seen}
    assert {"all_reduce", "broadcast", "all_gather"} <= names  # residuals and grads, U_N, U
    assert {device for _, device in seen} == {group.device}
    assert block.stats.timeline and block.stats.time_comm > 0


def test_nccl_groups_live_on_the_current_cuda_device(monkeypatch):
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    group = TimeGroup(object(), [0, 1])
    assert group.device == torch.device("cuda", 3)
    assert group.reversed().device == group.device and group.reversed().index == 0


def test_the_clock_waits_for_the_device_only_when_asked(monkeypatch):
    synchronised = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronised.append(device))
    clock(torch.device("cpu"))
    clock(torch.device("cuda", 0))
    assert synchronised == []  # the default: no host synchronisation from a timer
    with synchronised_timers():
        clock(torch.device("cpu"))
        clock(torch.device("cuda", 0))
    clock(torch.device("cuda", 0))
    assert synchronised == [torch.device("cuda", 0)]


class _Done:
    def wait(self) -> None:
        pass


def test_every_method_hands_torch_distributed_tensors_on_the_group_device(monkeypatch):
    meta = torch.device("meta")
    seen: list[tuple[str, torch.device]] = []

    def spy(name):
        def call(tensor, *args, **kwargs):
            tensors = list(tensor) if isinstance(tensor, list) else [tensor]
            tensors += [a for a in args if torch.is_tensor(a)]
            seen.extend((name, t.device) for t in tensors)
            return _Done()
        return call

    for name in ("isend", "recv", "all_reduce", "broadcast", "all_gather"):
        monkeypatch.setattr(dist, name, spy(name))
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    # meta tensors hold no values: their results read as zeros
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist",
                        lambda t: [0.0] * t.numel() if t.is_meta else tolist(t))
    group = TimeGroup(object(), [0, 1], device=meta)
    state = torch.zeros(4, 3, device=meta)
    group.send_next(state)
    group.wait_sends()
    assert group.recv_prev(state).device == meta
    group.max(0.5)
    group.max_each([0.5, float("nan")])
    group.sum_([state, torch.zeros(2, device=meta)], maxima=[1.0], maxima_dtype=torch.float32)
    group.sum_([state])
    assert group.broadcast(state, 1).device == meta
    assert group.all_gather(state).device == meta
    assert {name for name, _ in seen} == {"isend", "recv", "all_reduce", "broadcast",
                                          "all_gather"}
    assert [(name, device) for name, device in seen if device != meta] == []
