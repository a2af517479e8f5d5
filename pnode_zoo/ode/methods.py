"""The zoo's ODE methods by name, in one table, and its default tolerances of adaptive solves.

``METHODS`` lists every method either solver of the zoo takes: ``ODEBlock`` (one torchdiffeq
solve) takes torchdiffeq's, a parareal propagator the explicit Runge-Kutta methods of
torchdiffeq and the implicit theta-methods of ``implicit.py``. What the zoo relies on (the
kind, the order, the tableau) is stated here and checked against torchdiffeq's behaviour in
``tests/ode/test_solver_table.py``; torchdiffeq's own table is private, so nothing imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FORECAST_TOLERANCES", "KINDS", "METHODS", "MODEL_TOLERANCES", "PROPAGATOR_TOLERANCES",
           "Method", "Tableau", "Tolerances", "method_names"]


@dataclass(frozen=True)
class Tolerances:
    """rtol/atol of an adaptive solve.

    Args:
        rtol: relative tolerance.
        atol: absolute tolerance.
    """

    rtol: float
    atol: float


#: An adaptive solve that is the network's depth (``ODEBlock``, the plain models): the
#: network only needs its output to be a smooth function of its input and weights, and a
#: looser tolerance takes fewer steps (torchdiffeq's ODE-Net example trains at 1e-3).
MODEL_TOLERANCES = Tolerances(rtol=1e-3, atol=1e-4)
#: An adaptive fine propagator inside parareal (``PararealOptions``): F is re-run from states
#: that change from one iteration to the next, and its step choice follows them, so its error
#: is noise in the residual that parareal's ``tol`` compares; it must sit far below any ``tol``
#: a user sets (1e-6 by default), hence four orders of magnitude tighter than a model's.
PROPAGATOR_TOLERANCES = Tolerances(rtol=1e-7, atol=1e-9)
#: A forecaster's adaptive solve (``trajectory_node``): its whole trajectory is the output
#: compared with the data, not a feature map that a head reads, so it is solved more tightly.
FORECAST_TOLERANCES = Tolerances(rtol=1e-5, atol=1e-6)


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta method: k_i = f(t + c_i dt, y + dt sum_j a_ij k_j),
    y' = y + dt sum_i b_i k_i.

    torchdiffeq's ``odeint`` checks its time grid on the host (7 + steps reads of a tensor's
    value per solve; on a GPU each waits for the device's queued work) and no public argument
    skips the checks. A propagator's grid is uniform in [0, 1] by construction, so the
    fixed-step methods step torchdiffeq's tableaus there, with no read of a value
    (tests/ode/test_solver_table.py checks each against torchdiffeq's solve on the same grid).

    Args:
        c: the stages' nodes.
        a: per stage, its coefficients of the earlier stages.
        b: the weights of the stages.
    """

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]


#: Kinds of method: what steps them and whether rtol/atol or a step count set their accuracy.
KINDS = {
    "fixed": "explicit Runge-Kutta, fixed steps (torchdiffeq's; a propagator steps its tableau)",
    "adaptive": "explicit Runge-Kutta with error control by rtol/atol (torchdiffeq's)",
    "implicit": "theta-method solved by Newton, fixed steps (the zoo's own, propagators only)",
    "multistep": "Adams multistep, fixed steps (torchdiffeq's, ODEBlock only: needs a history)",
    "scipy": "SciPy's solve_ivp behind torchdiffeq, error control by rtol/atol (ODEBlock only)",
}


@dataclass(frozen=True)
class Method:
    """One entry of the method table.

    Args:
        kind: a key of ``KINDS``.
        order: classical order of accuracy (None where the zoo relies on none: multistep and
            SciPy methods).
        theta: implicitness of a theta-method (1 = backward Euler, 1/2 = trapezoid).
        tableau: the coefficients of a fixed-step explicit method.
    """

    kind: str
    order: int | None
    theta: float = 0.0
    tableau: Tableau | None = None

    @property
    def fixed_grid(self) -> bool:
        """Steps on a grid the caller sets (its accuracy is the number of steps)."""
        return self.kind in ("fixed", "implicit", "multistep")

    @property
    def adaptive(self) -> bool:
        """Chooses its steps to meet rtol/atol."""
        return self.kind in ("adaptive", "scipy")

    @property
    def torchdiffeq(self) -> bool:
        """torchdiffeq's ``odeint`` knows it (``ODEBlock`` takes it)."""
        return self.kind != "implicit"

    @property
    def propagator(self) -> bool:
        """A parareal propagator takes it (one-step methods: a slice starts from one state)."""
        return self.kind in ("fixed", "adaptive", "implicit")


METHODS: dict[str, Method] = {
    "euler": Method("fixed", 1, tableau=Tableau((0.0,), ((),), (1.0,))),
    "midpoint": Method("fixed", 2, tableau=Tableau((0.0, 0.5), ((), (0.5,)), (0.0, 1.0))),
    "heun2": Method("fixed", 2, tableau=Tableau((0.0, 1.0), ((), (1.0,)), (0.5, 0.5))),
    "heun3": Method("fixed", 3, tableau=Tableau(
        (0.0, 1 / 3, 2 / 3), ((), (1 / 3,), (0.0, 2 / 3)), (0.25, 0.0, 0.75))),
    # torchdiffeq's rk4 is the 3/8 rule, not the classic RK4
    "rk4": Method("fixed", 4, tableau=Tableau(
        (0.0, 1 / 3, 2 / 3, 1.0), ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
        (0.125, 0.375, 0.375, 0.125))),
    "adaptive_heun": Method("adaptive", 2),
    "fehlberg2": Method("adaptive", 2),
    "bosh3": Method("adaptive", 3),
    "dopri5": Method("adaptive", 5),
    "dopri8": Method("adaptive", 8),
    "backward_euler": Method("implicit", 1, theta=1.0),
    "trapezoid": Method("implicit", 2, theta=0.5),
    "explicit_adams": Method("multistep", None),
    "implicit_adams": Method("multistep", None),
    "fixed_adams": Method("multistep", None),
    "scipy_solver": Method("scipy", None),
}


def method_names(propagator: bool = False) -> list[str]:
    """The names of torchdiffeq's methods (``ODEBlock``), or of a propagator's, sorted.

    Args:
        propagator: the methods a parareal propagator takes instead.
    """
    return sorted(name for name, info in METHODS.items()
                  if (info.propagator if propagator else info.torchdiffeq))
