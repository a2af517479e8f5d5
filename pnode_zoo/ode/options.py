"""``PararealOptions``: the one place where a parareal solve's options are declared and checked.

The block, ``odeint_parareal``, every parareal model of the zoo and the YAML configs
(``parareal: {...}``) take this object or a mapping of its fields, so adding an option is one
edit here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pnode_zoo.errors import UserInputError
from pnode_zoo.ode.methods import PROPAGATOR_TOLERANCES
from pnode_zoo.ode.propagators import Propagator

__all__ = ["BACKWARD_MODES", "PararealOptions"]

#: Gradient modes, each exact for what it claims (see ``PararealOptions.backward``).
BACKWARD_MODES = ("unrolled", "fine_adjoint", "parareal_adjoint")
_RENAMED = {"serial": "fine_adjoint", "parareal": "parareal_adjoint"}


@dataclass(frozen=True)
class PararealOptions:
    """Options of a parareal solve: slices, propagators, iteration limits and the gradient.

    Frozen: change one with ``dataclasses.replace(options, max_iters=3)``; every value is
    checked on construction and errors name the option.

    Args:
        num_slices: N, time slices (None: one per module of a per-slice field sequence, else 1).
        coarse: method of the coarse propagator G (a propagator's, from ``methods.METHODS``).
        coarse_steps: steps per slice of G (fixed-step and implicit methods).
        fine: method of the fine propagator F.
        fine_steps: steps per slice of F (fixed-step and implicit methods).
        rtol: relative tolerance of adaptive methods (``methods.PROPAGATOR_TOLERANCES``: far
            below ``tol``, see there why).
        atol: absolute tolerance of adaptive methods.
        newton_tol: Newton tolerance of implicit methods (None: 10 machine epsilons).
        newton_max_iters: Newton iterations allowed per implicit step.
        max_iters: cap on the forward parareal iterations K (None: N). K = N is the serial
            fine solve exactly; fewer iterations stop once the residual is below ``tol``.
        tol: relative stopping tolerance: the forward stops once the largest relative change
            of a slice-boundary state in one iteration is below it. 0 means "always run
            ``max_iters``", which with ``max_iters < N`` is a different, cheaper network than
            the fine NODE (train it with ``backward="unrolled"``); a time group then runs the
            iterations pipelined (see ``pipelined``).
        backward: what the gradient differentiates.
            ``"unrolled"``: the exact gradient of the output the forward pass computed, at any
            K (reverse mode through the K parareal iterations, fine VJPs batched across slices
            like the forward's fine solves, so it stays parallel in time).
            ``"fine_adjoint"``: the discrete adjoint of the fine solver at the forward states,
            a sequential chain of fine VJPs: the fine NODE's exact gradient when the forward has
            converged (K = N), otherwise off by about the forward's error.
            ``"parareal_adjoint"``: that same fine adjoint solved backwards in time by
            parareal, with ``backward_max_iters``/``backward_tol``; exact at N iterations.
        backward_max_iters: cap on the adjoint parareal iterations (None: N).
        backward_tol: adjoint stopping tolerance (None: ``tol``).
        backward_micro_batches: parts of the batch whose ``fine_adjoint`` chains run one
            after the other, so that on a time group a rank starts a part's adjoint as soon as
            that part's cotangent arrives while the next rank works on the next part (the chain
            pipelined across ranks, at most P·M/(M + P - 1) times faster on P ranks). The
            samples' chains are independent, so the gradient is the same for any number of
            parts (to rounding; an adaptive F steps each part on its own). 1: one chain.
        warm_start: start the forward iteration from the previous call's trajectory when its
            shape, dtype and device match, instead of the coarse sweep.
        recompute: re-run the propagators in the backward pass, keeping only the states from
            the forward pass between the passes; a fixed-step method re-runs without a graph,
            saving its step states, then rebuilds a few steps' graphs at a time (memory: the
            states and four steps' graphs); under ``unrolled`` a fixed-step F keeps the forward's
            own step states instead of re-running (memory: those of the K levels), so a
            training step costs one more fine solve than with graphs kept. False keeps the
            forward's autograd graphs instead (a faster backward; memory grows with steps and
            iterations as with torchdiffeq's backprop); only for ``backward="unrolled"``,
            whose linearisation points are the forward's own.
    """

    num_slices: int | None = None
    coarse: str = "euler"
    coarse_steps: int = 1
    fine: str = "rk4"
    fine_steps: int = 8
    rtol: float = PROPAGATOR_TOLERANCES.rtol
    atol: float = PROPAGATOR_TOLERANCES.atol
    newton_tol: float | None = None
    newton_max_iters: int = 20
    max_iters: int | None = None
    tol: float = 1e-6
    backward: str = "unrolled"
    backward_max_iters: int | None = None
    backward_tol: float | None = None
    backward_micro_batches: int = 1
    warm_start: bool = False
    recompute: bool = True

    def __post_init__(self) -> None:
        if self.num_slices is not None:
            _check_int("num_slices", self.num_slices, 1)
        for name in ("max_iters", "backward_max_iters"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 0, "None or ")
        for name in ("tol", "backward_tol"):
            value = getattr(self, name)
            if value is None and name == "backward_tol":
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value >= 0):
                raise UserInputError(f"{name} must be a number >= 0, got {value!r}")
        _check_int("backward_micro_batches", self.backward_micro_batches, 1)
        if self.backward_micro_batches > 1 and self.backward != "fine_adjoint":
            raise UserInputError(
                f"backward_micro_batches={self.backward_micro_batches} needs "
                f"backward='fine_adjoint' (the only sequential chain it pipelines), got "
                f"{self.backward!r}"
            )
        if self.backward in _RENAMED:
            raise UserInputError(
                f"backward={self.backward!r} was renamed: use {_RENAMED[self.backward]!r} "
                f"(modes: {', '.join(BACKWARD_MODES)})"
            )
        if self.backward not in BACKWARD_MODES:
            raise UserInputError(
                f"backward must be one of {', '.join(BACKWARD_MODES)}, got {self.backward!r}"
            )
        for name in ("warm_start", "recompute"):
            if not isinstance(getattr(self, name), bool):
                raise UserInputError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not self.recompute and self.backward != "unrolled":
            raise UserInputError(
                f"recompute=false needs backward='unrolled' (the {self.backward} gradient is "
                "taken at the final states, which the forward never linearised)"
            )
        self.propagator("coarse")  # checks methods, steps and tolerances
        self.propagator("fine")

    @classmethod
    def create(
        cls, options: PararealOptions | Mapping[str, Any] | None = None, **overrides: Any
    ) -> PararealOptions:
        """Options from an instance, a mapping of field names (a YAML ``parareal:`` section)
        or None (the defaults), with ``overrides`` applied on top.

        Args:
            options: the base options.
            **overrides: fields to change.
        """
        if isinstance(options, PararealOptions):
            base = dataclasses.asdict(options)
        elif options is None or isinstance(options, Mapping):
            base = dict(options or {})
        else:
            raise UserInputError(
                f"parareal options must be a mapping of option names, got {type(options).__name__}"
            )
        given = {**base, **overrides}
        known = [f.name for f in dataclasses.fields(cls)]
        for name in given:
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=3)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise UserInputError(
                    f"parareal has no option {name!r}; {hint}options: {', '.join(known)}"
                )
        return cls(**given)

    def propagator(self, which: str) -> Propagator:
        """The ``"coarse"`` or ``"fine"`` propagator these options describe."""
        return Propagator(
            getattr(self, which), getattr(self, f"{which}_steps"), self.rtol, self.atol,
            newton_tol=self.newton_tol, newton_max_iters=self.newton_max_iters, name=which,
        )

    @property
    def pipelined(self) -> bool:
        """Whether a time group runs the forward pipelined, reducing the residuals once at the
        end instead of after every iteration: a fixed K (``tol`` 0) with explicit fixed-step
        propagators, through which a non-finite state passes without raising (it is reported
        after the last iteration)."""
        fixed = all(self.propagator(p).info.kind == "fixed" for p in ("coarse", "fine"))
        return self.tol == 0 and fixed

    def as_dict(self) -> dict[str, Any]:
        """The options as a plain dict (for configs, cards and loggers)."""
        return dataclasses.asdict(self)


def _check_int(name: str, value: object, low: int, prefix: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UserInputError(f"{name} must be {prefix}an integer >= {low}, got {value!r}")
