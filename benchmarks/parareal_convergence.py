"""Parareal convergence, observed orders and the modelled critical-path speedup.

Run from the repository root:

    python benchmarks/parareal_convergence.py

Writes docs/benchmarks/parareal_convergence.{json,md,png}. Errors are measured against the
serial fine solve (the fine propagator applied slice after slice, or torchdiffeq for the
strong-scaling study); speedups are modelled from the block's own counters, never timed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import _common
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import nn
from torchdiffeq import odeint

from pnode_zoo.ode.methods import METHODS
from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.propagators import Work
from pnode_zoo.ode.vector_fields import MLPVectorField

NAME = "parareal_convergence"
F64 = torch.float64


class Linear(nn.Module):
    """f(t, x) = A x."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x @ self.a.T


def rotation() -> torch.Tensor:
    return torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=F64)


def stiff() -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0], [0.3, 0.2, 2.0]]))
    return (q @ torch.diag(torch.tensor([-1000.0, -1.0, -0.5])) @ q.T).to(F64)


def mlp(dim: int = 4) -> nn.Module:
    torch.manual_seed(1)
    return MLPVectorField(dim, hidden=32, layers=2).to(F64)


# (problem, field, x0, t1, num_slices, [(coarse, coarse_steps, fine, fine_steps), ...])
def problems() -> list[tuple[str, nn.Module, torch.Tensor, float, int, list]]:
    torch.manual_seed(0)
    return [
        ("linear (damped rotation)", Linear(rotation()), torch.randn(4, 2, dtype=F64), 2.0, 16,
         [("euler", 1, "rk4", 8), ("midpoint", 1, "rk4", 8)]),
        ("MLP field (dim 4, 2x32 tanh)", mlp(), torch.randn(4, 4, dtype=F64), 2.0, 16,
         [("euler", 1, "rk4", 8), ("midpoint", 1, "rk4", 8)]),
        ("stiff linear (eigenvalues -1000, -1, -0.5)", Linear(stiff()),
         torch.randn(4, 3, dtype=F64), 1.0, 16,
         [("euler", 1, "trapezoid", 20), ("backward_euler", 1, "trapezoid", 20)]),
    ]


def serial_fine(block: PararealODEBlock, x0: torch.Tensor) -> torch.Tensor:
    """The serial fine solve: F applied slice after slice, states at all boundaries."""
    n_slices, span = block.num_slices, (block.t1 - block.t0) / block.num_slices
    per_slice = isinstance(block.func, nn.ModuleList)
    fine, states = block.options.propagator("fine"), [x0]
    length = torch.tensor([span], dtype=x0.dtype)
    for n in range(n_slices):
        start = torch.tensor([block.t0 + n * span], dtype=x0.dtype)
        field = block.func[n] if per_slice else block.func
        states.append(fine(lambda t, x, f=field: f(t[0], x), start, length, states[-1], Work()))
    return torch.stack(states)


def relative_error(states: torch.Tensor, ref: torch.Tensor) -> float:
    return ((states - ref).flatten(1).norm(dim=1).max() / ref.flatten(1).norm(dim=1).max()).item()


def convergence() -> list[dict]:
    """Error against the serial fine solve after k = 0..N iterations."""
    rows = []
    for name, field, x0, t1, n, pairs in problems():
        for coarse, coarse_steps, fine, fine_steps in pairs:
            setup = {"coarse": coarse, "coarse_steps": coarse_steps, "fine": fine,
                     "fine_steps": fine_steps, "tol": 0.0, "return_trajectory": True}
            errors = []
            with torch.no_grad():
                ref = serial_fine(PararealODEBlock(field, 0.0, t1, num_slices=n, **setup), x0)
                for k in range(n + 1):
                    block = PararealODEBlock(field, 0.0, t1, num_slices=n, max_iters=k, **setup)
                    try:
                        errors.append(relative_error(block(x0), ref))
                    except FloatingPointError:
                        errors.append(math.inf)
            rows.append({
                "problem": name, "coarse": f"{coarse} x{coarse_steps}",
                "fine": f"{fine} x{fine_steps}", "num_slices": n, "t1": t1, "errors": errors,
            })
    return rows


def orders() -> list[dict]:
    """Observed order of the error in the coarse step h_G (N, T fixed): theory p(k+1)."""
    rows = []
    cases = [
        ("linear (damped rotation)", Linear(rotation()), torch.tensor([[1.0, 0.5]], dtype=F64)),
        ("MLP field (dim 4, 2x32 tanh)", mlp(), torch.ones(1, 4, dtype=F64)),
    ]
    n, t1, fine_steps = 8, 2.0, 32
    for name, field, x0 in cases:
        for coarse, iters, steps in [("euler", 4, [4, 8, 16, 32]), ("midpoint", 3, [2, 4, 8, 16])]:
            for k in range(iters):
                errors = []
                with torch.no_grad():
                    for m in steps:
                        block = PararealODEBlock(
                            field, 0.0, t1, num_slices=n, coarse=coarse, coarse_steps=m,
                            fine_steps=fine_steps, max_iters=k, tol=0.0, return_trajectory=True,
                        )
                        errors.append(relative_error(block(x0), serial_fine(block, x0)))
                # the finest pair of coarse steps whose errors are still above rounding level
                pairs = [(a, b) for a, b in zip(errors[:-1], errors[1:], strict=True) if b > 1e-12]
                rows.append({
                    "problem": name, "coarse": coarse, "k": k, "coarse_steps": steps,
                    "errors": errors,
                    "observed": math.log2(pairs[-1][0] / pairs[-1][1]) if pairs else None,
                    "theory": METHODS[coarse].order * (k + 1),
                })
    return rows


def speedups(tol: float = 1e-8, total_fine_steps: int = 8192) -> list[dict]:
    """Strong scaling, N = P: one fixed serial fine solve split into N slices, one per rank."""
    field, t1 = mlp(), 4.0
    x0 = torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        step = t1 / total_fine_steps
        ref = odeint(field, x0, torch.tensor([0.0, t1], dtype=F64), method="rk4",
                     options={"step_size": step})[-1]
    rows = []
    for p in [2**i for i in range(1, 11)]:
        block = PararealODEBlock(
            field, 0.0, t1, num_slices=p, coarse="euler", coarse_steps=1, fine="rk4",
            fine_steps=total_fine_steps // p, tol=tol,
        )
        with torch.no_grad():
            out = block(x0)
        stats, k = block.stats, block.stats.forward_iters
        r = 1 / (4 * (total_fine_steps // p))  # one Euler evaluation vs 4 per rk4 step
        rows.append({
            "P": p, "N": p, "K": k, "r": r,
            "relative_error": ((out - ref).norm() / ref.norm()).item(),
            "modelled_speedup": stats.modelled_speedup(p),
            "classic_formula": p / ((k + 1) * p * r + k),
            "pipelined_formula": p / (p * r + k * (1 + r)),
            "bound_N_over_K": p / max(k, 1),
            "critical_path_nfe": stats.critical_path_nfe(p),
            "serial_nfe": stats.serial_fine_nfe(),
        })
    return rows


def gradients(n: int = 8) -> list[dict]:
    """What each gradient mode differentiates, and its error, after K = 0..N iterations."""
    field, t1 = mlp(), 2.0
    x0 = torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(3))
    params = list(field.parameters())

    def run(k: int, **options) -> tuple[torch.Tensor, torch.Tensor]:
        block = PararealODEBlock(field, 0.0, t1, num_slices=n, fine_steps=8, max_iters=k,
                                 tol=0.0, **options)
        x = x0.clone().requires_grad_()
        out = block(x)
        grads = torch.autograd.grad(out.square().sum(), [x, *params])
        return out.detach(), torch.cat([g.flatten() for g in grads])

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a - b).norm() / b.norm()).item()

    fine_out, fine_grad = run(n)
    rows = []
    for k in range(n + 1):
        out, unrolled = run(k, backward="unrolled")
        _, adjoint = run(k, backward="fine_adjoint")
        _, parareal = run(n, backward="parareal_adjoint", backward_max_iters=k, backward_tol=0.0)
        rows.append({
            "K": k, "output_vs_fine": rel(out, fine_out),
            "unrolled_vs_fine": rel(unrolled, fine_grad),
            "fine_adjoint_vs_fine": rel(adjoint, fine_grad),
            "fine_adjoint_vs_unrolled": rel(adjoint, unrolled),
            "parareal_adjoint_vs_fine": rel(parareal, fine_grad),
        })
    return rows


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.1e}"


def markdown(result: dict) -> str:
    env = result["machine"]
    lines = [
        "# Parareal convergence and modelled speedup",
        "",
        f"{_common.header(env)} Runtime {result['seconds']:.0f} s.",
        "",
        "## Error against the serial fine solve after k iterations",
        "",
        "Largest relative error over the slice boundaries, max_n |U^k_n - F_n| / max_n |F_n|, "
        "where F is the serial fine solve (the fine propagator slice after slice). k = 0 is "
        "the coarse sweep alone; k = N reproduces the fine solve.",
        "",
    ]
    shown = [0, 1, 2, 3, 4, 6, 8]
    lines.append("| problem | G | F | N | " + " | ".join(f"k={k}" for k in shown) + " | k=N |")
    lines.append("|---|---|---|---|" + "---|" * (len(shown) + 1))
    for row in result["convergence"]:
        errors = row["errors"]
        cells = [_fmt(errors[k]) for k in shown] + [_fmt(errors[-1])]
        lines.append(
            f"| {row['problem']} | {row['coarse']} | {row['fine']} | {row['num_slices']} | "
            + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "## Observed order in the coarse step",
        "",
        "N = 8 slices on [0, 2], F = 32 rk4 steps per slice, G = m steps of the coarse method "
        "per slice. Parareal theory (Gander & Vandewalle 2007) gives an error O(h_G^(p(k+1))) "
        "after k iterations for a coarse method of order p; observed = log2(e(m)/e(2m)) for the "
        "finest pair of m whose errors are above 1e-12 (\"rounding\": none is).",
        "",
        "| problem | G | k | errors for m = ... | observed | theory p(k+1) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["orders"]:
        errors = ", ".join(f"{m}: {e:.1e}" for m, e in zip(row["coarse_steps"], row["errors"],
                                                             strict=True))
        observed = "rounding" if row["observed"] is None else f"{row['observed']:.2f}"
        lines.append(
            f"| {row['problem']} | {row['coarse']} | {row['k']} | {errors} | {observed} | "
            f"{row['theory']} |"
        )
    tol = result["speedup_setup"]["tol"]
    lines += [
        "",
        "## Critical-path speedup (modelled)",
        "",
        f"Strong scaling with N = P: one serial fine solve (MLP field, dim 4, [0, 4], "
        f"{result['speedup_setup']['total_fine_steps']} rk4 steps in all) split into N slices, "
        f"one per rank; G = 1 Euler step per slice, so r = cost(G)/cost(F) = N/32768; the "
        f"iteration stops at a relative change below tol = {tol:g}. *Modelled* speedup = serial "
        "fine f-evaluations / f-evaluations on the critical path, from the block's counters "
        "(classic, non-pipelined schedule; prefix slices are not re-solved; communication "
        "free). Formulas (docs/TIME_PARALLEL.md, cost model) with the observed K: classic "
        "S = N/((K+1)·N·r + K), pipelined S ≈ N/(N·r + K·(1+r)). Accuracy: relative error of "
        "the parareal output against the serial fine solve (torchdiffeq rk4, same steps).",
        "",
        "| P = N | K | r | rel. error | modelled (counters) | classic formula | "
        "pipelined formula | N/K |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["speedups"]:
        lines.append(
            f"| {row['P']} | {row['K']} | 1/{round(1 / row['r'])} | {row['relative_error']:.1e} "
            f"| {row['modelled_speedup']:.2f} | {row['classic_formula']:.2f} | "
            f"{row['pipelined_formula']:.2f} | {row['bound_N_over_K']:.1f} |"
        )
    lines += [
        "",
        "## What each gradient mode differentiates",
        "",
        "MLP field (dim 4, 2x32 tanh) on [0, 2], N = 8 slices of 8 rk4 steps, G = 1 Euler step, "
        "loss = sum of the squared final state; relative 2-norm errors of the gradient to x0 "
        "and all parameters. `unrolled` is the exact gradient of the output computed with K "
        "forward iterations (its error against the fine gradient is only that of the output "
        "itself); `fine_adjoint` at K forward iterations is the fine adjoint at inexact "
        "states, the gradient of neither; `parareal_adjoint` with K *backward* iterations "
        "(forward K = N) approximates the fine gradient.",
        "",
        "| K | output vs fine | unrolled vs fine gradient | fine_adjoint vs fine gradient "
        "| fine_adjoint vs gradient of the output | parareal_adjoint (K backward) vs fine |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["gradients"]:
        lines.append(
            f"| {row['K']} | {_fmt(row['output_vs_fine'])} | {_fmt(row['unrolled_vs_fine'])} "
            f"| {_fmt(row['fine_adjoint_vs_fine'])} | {_fmt(row['fine_adjoint_vs_unrolled'])} "
            f"| {_fmt(row['parareal_adjoint_vs_fine'])} |"
        )
    lines += ["", "![convergence, orders and modelled speedup](parareal_convergence.png)", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for row in result["convergence"]:
        # k = N is exact (error 0), which a log axis cannot show
        errors = [e if math.isfinite(e) and e > 0 else float("nan") for e in row["errors"]]
        label = f"{row['problem'].split(' (')[0]}: {row['coarse']} / {row['fine']}"
        axes[0].semilogy(range(len(errors)), errors, "o-", ms=3, label=label)
    axes[0].set(xlabel="iteration k", ylabel="relative error vs serial fine",
                title="Error after k iterations (N = 16; k = N: exact)")
    axes[0].legend(fontsize=7)
    for row in result["orders"]:
        if row["problem"].startswith("linear"):
            h = [2.0 / 8 / m for m in row["coarse_steps"]]
            axes[1].loglog(h, row["errors"], "o-", ms=3,
                           label=f"{row['coarse']}, k={row['k']} (p(k+1)={row['theory']})")
    axes[1].set(xlabel="coarse step h_G", ylabel="relative error vs serial fine",
                title="Order in the coarse step (linear, N = 8)")
    axes[1].legend(fontsize=7)
    ps = [row["P"] for row in result["speedups"]]
    for key, style, label in [("modelled_speedup", "o-", "modelled (counters)"),
                              ("classic_formula", "x--", "classic formula"),
                              ("pipelined_formula", "s:", "pipelined formula"),
                              ("bound_N_over_K", "^-.", "bound N/K")]:
        axes[2].loglog(ps, [row[key] for row in result["speedups"]], style, ms=5, label=label,
                       base=2)
    axes[2].set(xlabel="ranks P = slices N", ylabel="speedup (modelled)",
                title="Critical-path speedup, strong scaling (modelled)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    torch.set_num_threads(1)  # tiny tensors; the figures are counts, not timings
    tic = time.perf_counter()
    result = {
        "machine": _common.environment("1 thread, float64", args.allow_dirty),
        "convergence": convergence(),
        "orders": orders(),
        "speedup_setup": {"tol": 1e-8, "total_fine_steps": 8192, "scaling": "strong, N = P"},
        "speedups": speedups(),
        "gradients": gradients(),
    }
    result["seconds"] = time.perf_counter() - tic
    _common.write_results(NAME, result, markdown(result))
    plot(result, _common.OUT_DIR / f"{NAME}.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
