"""The benchmarks' reference problem: an MLP vector field, a linear head, an RK4 fine solve,
solved by parareal (several gradients) or by torchdiffeq; and one call of it, timed or not."""

from __future__ import annotations

import dataclasses

import _common  # noqa: F401 - puts the working tree first on sys.path
import torch
from torch import nn

from pnode_zoo.ode import ODEBlock, PararealODEBlock
from pnode_zoo.ode.vector_fields import MLPVectorField


@dataclasses.dataclass(frozen=True)
class Setup:
    """One configuration: state, batch, width, the slices and steps, K and the tolerance.

    Args:
        dim: state size D.
        batch: samples per call.
        hidden: width of the field's 2 hidden tanh layers.
        slices: N.
        fine_steps: RK4 steps per slice of F (torchdiffeq: N x fine_steps in all).
        coarse_steps: RK4 steps per slice of G.
        iters: cap on K (None: N).
        t1: the time horizon [0, t1].
        tol: parareal's stopping tolerance (0: a fixed K).
        micro_batches: ``backward_micro_batches`` of ``parareal_fine_adjoint``.
    """

    dim: int = 64
    batch: int = 64
    hidden: int = 128
    slices: int = 2
    fine_steps: int = 32
    coarse_steps: int = 1
    iters: int | None = 1
    t1: float = 1.0
    tol: float = 0.0
    micro_batches: int = 1

    def model(self, kind: str) -> nn.Sequential:
        """block -> linear head, the same weights for every kind: ``odeint``,
        ``odeint_adjoint``, ``parareal``/``parareal_kept`` (unrolled, graphs kept),
        ``parareal_recompute`` (unrolled, re-runs), ``parareal_fine_adjoint`` (re-runs)."""
        torch.manual_seed(0)
        field, head = MLPVectorField(self.dim, self.hidden), nn.Linear(self.dim, 1)
        steps = self.slices * self.fine_steps
        if kind.startswith("odeint"):
            block = ODEBlock(field, 0.0, self.t1, "rk4", steps,
                             adjoint=kind == "odeint_adjoint")
        else:
            block = PararealODEBlock(
                field, 0.0, self.t1, num_slices=self.slices, coarse="rk4",
                coarse_steps=self.coarse_steps, fine="rk4", fine_steps=self.fine_steps,
                max_iters=self.iters, tol=self.tol,
                recompute=kind in ("parareal_recompute", "parareal_fine_adjoint"),
                backward="fine_adjoint" if kind == "parareal_fine_adjoint" else "unrolled",
                backward_micro_batches=self.micro_batches if kind == "parareal_fine_adjoint"
                else 1,
            )
        return nn.Sequential(block, head)

    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and regression targets, the same every time."""
        g = torch.Generator().manual_seed(1)
        return (torch.randn(self.batch, self.dim, generator=g),
                torch.randn(self.batch, 1, generator=g))


class Step:
    """One call of a case: a forward pass without a graph (``"forward"``), or a training step
    (``"train"``: forward, mean-squared loss, backward, SGD step with learning rate 0, so every
    call sees the same weights); keeps the last output, and the parameters their gradients.

    Args:
        model: what ``Setup.model`` built.
        case: ``"forward"`` or ``"train"``.
        x: inputs.
        y: targets.
    """

    def __init__(self, model: nn.Module, case: str, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.case, self.x, self.y = model, case, x, y
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        self.output: torch.Tensor | None = None

    def __call__(self) -> None:
        if self.case == "forward":
            with torch.no_grad():
                self.output = self.model(self.x)
            return
        self.optimizer.zero_grad(set_to_none=True)
        output = self.model(self.x)
        nn.functional.mse_loss(output, self.y).backward()
        self.optimizer.step()
        self.output = output.detach()

    def gradient(self) -> torch.Tensor | None:
        """The last training step's gradient of all parameters, flat (None for a forward)."""
        if self.case == "forward":
            return None
        return torch.cat([p.grad.flatten() for p in self.model.parameters()])
