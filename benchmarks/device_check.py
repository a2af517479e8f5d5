"""The GPU check: the parareal block's numerics on a CUDA device, and its speed there against
torchdiffeq's ``odeint`` on the same device.

Run from the repository root on a machine with a CUDA device:

    python benchmarks/device_check.py [--slices 16 64 256 1024] [--dims 64 256] [--rounds 5]

On a machine without one it says so in one line and exits 0 (nothing is written).

1. Equivalence, float64, one process: the block's forward at K = N and its gradient under every
   ``backward`` mode against torchdiffeq's serial solve on the same rk4 grid (relative error
   at most 1e-10), once without a time group and once with a time group of one rank on the
   NCCL backend (world size 1: the collectives run on CUDA tensors, the layout NCCL accepts).
2. Speed, float32: the block with its slices batched on the device (``_mlp.Setup``: MLP field,
   linear head, N slices of --fine-steps rk4 steps, one rk4 coarse step per slice, K = --iters,
   tol 0) against ``odeint`` on the same N x fine-steps grid, for the forward pass and a
   training step, alternating the two in every round after a warm-up round; each call timed
   with ``torch.cuda.Event`` pairs read once the round is done, peak device memory of one call
   from ``torch.cuda.max_memory_allocated``; the output's relative error against ``odeint``.

Writes docs/benchmarks/gpu.{json,md}. ``--device cpu`` runs the same code on the CPU (gloo
instead of NCCL, wall clocks instead of events, no peak memory) for the suite's smoke test.
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from collections.abc import Callable

import _common
import torch
import torch.distributed as dist
from _mlp import Setup, Step
from torchdiffeq import odeint

from pnode_zoo.distributed import create_groups
from pnode_zoo.ode import BACKWARD_MODES, PararealODEBlock
from pnode_zoo.ode.vector_fields import MLPVectorField

NAME = "gpu"
#: the equivalence bound of the issue: the block at K = N is the serial solve to rounding
TOLERANCE = 1e-10


# --- equivalence ------------------------------------------------------------------------------
def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(torch.finfo(b.dtype).tiny)).item()


def equivalence(device: torch.device, time_group=None) -> list[dict]:
    """The block at K = N against ``odeint`` on the same grid: the output, then the gradient
    of every backward mode (with respect to the input and the field's parameters).

    Args:
        device: where the tensors live.
        time_group: a time group for the block (None: one process without one).
    """
    slices, steps, dim = 4, 3, 8
    torch.manual_seed(0)
    field = MLPVectorField(dim, hidden=16).double().to(device)
    x0 = torch.randn(5, dim, dtype=torch.float64, device=device)
    grid = torch.linspace(0.0, 1.0, slices * steps + 1, dtype=torch.float64, device=device)

    def gradient(run: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x = x0.clone().requires_grad_()
        out = run(x)
        params = [x, *field.parameters()]
        grads = torch.autograd.grad(out.square().sum(), params)
        return out.detach(), torch.cat([g.flatten() for g in grads])

    ref_out, ref_grad = gradient(lambda x: odeint(field, x, grid, method="rk4")[-1])
    rows = []
    for mode in BACKWARD_MODES:
        block = PararealODEBlock(field, 0.0, 1.0, num_slices=slices, coarse="euler",
                                 fine="rk4", fine_steps=steps, tol=0.0, max_iters=slices,
                                 backward=mode)
        block.time_group = time_group
        out, grad = gradient(block)
        rows.append({"backward": mode, "time_group": time_group is not None,
                     "output": _relative(out, ref_out), "gradient": _relative(grad, ref_grad)})
    return rows


def nccl_world_of_one(device: torch.device) -> list[dict]:
    """``equivalence`` with a time group of one rank: NCCL on CUDA, gloo on the CPU."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1, device_id=device if device.type == "cuda" else None)
    try:
        group, _ = create_groups(1)
        return equivalence(device, group)
    finally:
        dist.destroy_process_group()


# --- speed ------------------------------------------------------------------------------------
class Stopwatch:
    """Times calls without a host synchronisation per call: CUDA events recorded around each
    call and read once the round is over; on the CPU, wall clocks.

    Args:
        device: where the timed work runs.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[tuple] = []

    def time(self, call: Callable[[], None]) -> None:
        if self.cuda:
            start, stop = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            call()
            stop.record()
            self.marks.append((start, stop))
        else:
            tic = time.perf_counter()
            call()
            self.marks.append((tic, time.perf_counter()))

    def seconds(self) -> list[float]:
        """Seconds of every timed call so far, in order (synchronises once)."""
        if self.cuda:
            torch.cuda.synchronize()
            return [start.elapsed_time(stop) / 1e3 for start, stop in self.marks]
        return [stop - tic for tic, stop in self.marks]


def peak_memory(device: torch.device, call: Callable[[], None]) -> int | None:
    """Peak device memory of one call, in bytes (None on the CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(device) - base


def speed(setup: Setup, case: str, device: torch.device, rounds: int) -> dict:
    """Parareal (slices batched on the device) against ``odeint``, alternating.

    Args:
        setup: the problem.
        case: ``"forward"`` or ``"train"``.
        device: where it runs.
        rounds: timed rounds after the warm-up one.
    """
    x, y = (t.to(device) for t in setup.data())
    steps = {kind: Step(setup.model(kind).to(device), case, x, y)
             for kind in ("parareal", "odeint")}
    watches = {kind: Stopwatch(device) for kind in steps}
    for step in steps.values():  # warm-up: kernels compiled, allocator filled
        step()
    for _ in range(rounds):
        for kind, step in steps.items():
            watches[kind].time(step)
    seconds = {kind: watch.seconds() for kind, watch in watches.items()}
    ratios = [b / a for a, b in zip(seconds["parareal"], seconds["odeint"], strict=True)]
    return {
        "slices": setup.slices, "dim": setup.dim, "case": case,
        "seconds": {kind: statistics.median(s) for kind, s in seconds.items()},
        "speedup": _common.spread(ratios),
        "peak_bytes": {kind: peak_memory(device, step) for kind, step in steps.items()},
        "error": _relative(steps["parareal"].output, steps["odeint"].output),
    }


# --- the table --------------------------------------------------------------------------------
def markdown(env: dict, device_name: str, checks: list[dict], rows: list[dict],
             setup: Setup) -> str:
    def mib(value: int | None) -> str:
        return "–" if value is None else f"{value / 2**20:.1f}"

    lines = [
        "# The parareal block on a GPU", "", _common.header(env), "", f"Device: {device_name}.",
        "", "## Equivalence (float64; relative error against torchdiffeq's serial rk4 solve)",
        "", "| backward | time group | output | gradient |", "|---|---|---|---|",
    ]
    lines += [
        f"| {c['backward']} | {'1 rank' if c['time_group'] else 'none'} | {c['output']:.1e} "
        f"| {c['gradient']:.1e} |" for c in checks
    ]
    lines += [
        "", "## Speed (float32; parareal with its slices batched on the device, against "
        "`odeint` on the same grid)", "",
        f"MLP field (hidden {setup.hidden}) + linear head, batch {setup.batch}; {setup.fine_steps}"
        f" rk4 steps per slice, one rk4 coarse step per slice, K = {setup.iters} (tol 0). "
        f"Speed-up: `odeint` seconds over parareal seconds per round, median (min–max).", "",
        "| case | slices | state | odeint ms | parareal ms | speed-up | peak MiB odeint | "
        "peak MiB parareal | rel. error |", "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['case']} | {r['slices']} | {r['dim']} | {r['seconds']['odeint'] * 1e3:.2f} | "
        f"{r['seconds']['parareal'] * 1e3:.2f} | {_common.fmt_spread(r['speedup'])} | "
        f"{mib(r['peak_bytes']['odeint'])} | {mib(r['peak_bytes']['parareal'])} | "
        f"{r['error']:.1e} |" for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--slices", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--fine-steps", type=int, default=4)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("device_check: no CUDA device on this machine; nothing checked, nothing written.")
        return 0
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    env = _common.environment(f"one process, {device_name}", args.allow_dirty)
    checks = equivalence(device) + nccl_world_of_one(device)
    worst = max(max(c["output"], c["gradient"]) for c in checks)
    rows = []
    for dim in args.dims:
        for slices in args.slices:
            setup = Setup(dim=dim, batch=args.batch, slices=slices, fine_steps=args.fine_steps,
                          iters=args.iters, tol=0.0)
            rows += [speed(setup, case, device, args.rounds) for case in ("forward", "train")]
    result = {"environment": env, "device": device_name, "equivalence": checks,
              "tolerance": TOLERANCE, "speed": rows, "arguments": vars(args)}
    path = _common.write_results(NAME, result, markdown(env, device_name, checks, rows, setup))
    print(f"device_check: wrote {path}; worst equivalence error {worst:.1e}")
    if worst > TOLERANCE:
        print(f"device_check: equivalence error {worst:.1e} exceeds {TOLERANCE:.0e}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
