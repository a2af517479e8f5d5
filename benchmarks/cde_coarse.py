"""Parareal iterations K of a neural CDE for each coarse propagator, on ACSF1 and a walk.

Run from the repository root (about ten minutes on one core):

    python benchmarks/cde_coarse.py [--seeds 2] [--batch 8] [--tasks ACSF1:1:1 walk3:0.1:1 ...]

Writes docs/benchmarks/cde_coarse.{json,md}. The model is the zoo's neural CDE at
initialisation (hidden 32, field MLP 32-64-64 with ReLU then tanh), float32, N = 20 chunks, on
the first ``--batch`` series of each task DATA:SCALE:STEPS: ACSF1 (training split,
z-normalised per series, time as a channel, padded 1460 -> 1461 by repeating the last
observation: 73 observations a chunk) or walk3 (a seeded 3-channel Gaussian random walk of 401
points: 20 a chunk); values multiplied by SCALE (the path's scale sets how expansive the CDE
is, hence K: a model-side choice); STEPS fine RK4 steps per observation (the reference is
``cdeint`` with step 1/STEPS: one step per observation is far from the exact CDE on a rough
path, and the coarse step is closer to the exact CDE than to it). Hermite cubic paths. For each
coarse field ("log_ode": depth-2 log-signature; "increment": the chunk's increment) and coarse
method (one step per chunk): K to ``tol`` from the coarse sweep (cold), the true error against
``torchcde.cdeint`` on the same grid, the error after k = 0..3 iterations, and K from the
block's warm start (the same samples' cached jumps F − G) after an Adam-sized step of the
weights (every weight moved by 1e-3). Iterations are counted, never timed; the coarse and fine
seconds of one call are recorded for scale only.
"""

from __future__ import annotations

import itertools
import statistics

import _common
import numpy as np
import torch
import torchcde
from torch import nn

from pnode_zoo.data.ucr import load_ucr_split
from pnode_zoo.ode import NeuralCDEBlock

NAME = "cde_coarse"
ACSF1, WALK, SLICES, HIDDEN, TOL = 1461, 401, 20, 32, 1e-3
FIELDS, METHODS, CURVE = ("log_ode", "increment"), ("euler", "rk4"), 4


class Field(nn.Module):
    """f(z) -> [batch, hidden, channels]: the zoo's CDE field (MLP, ReLU, tanh last)."""

    def __init__(self, hidden: int, channels: int, width: int = 64) -> None:
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.ReLU(),
                                 nn.Linear(width, hidden * channels), nn.Tanh())

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, (self.hidden, self.channels))


def acsf1_path(batch: int, scale: float) -> torch.Tensor:
    """Hermite coefficients of the first ``batch`` ACSF1 training series with time as a channel,
    values times ``scale``, [batch, 1460, 8]."""
    series, _ = load_ucr_split("ACSF1", "train")
    x = np.stack(series[:batch])[:, 0]  # univariate: [batch, 1460]
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    x = np.concatenate([x, x[:, -1:]], axis=1)  # 1461 points: N = 20 divides 1460 steps
    values = scale * torch.tensor(x, dtype=torch.float32)[..., None]
    time = torch.linspace(0, 1, ACSF1).expand(batch, ACSF1)[..., None]
    return torchcde.hermite_cubic_coefficients_with_backward_differences(
        torch.cat([time, values], dim=-1))


def walk_path(batch: int, scale: float) -> torch.Tensor:
    """A 3-channel Gaussian random walk of 401 points times ``scale`` (rough, with Levy area
    between channels, which ACSF1's one value channel and time hardly have)."""
    steps = torch.randn(batch, WALK, 3, generator=torch.Generator().manual_seed(0))
    return torchcde.hermite_cubic_coefficients_with_backward_differences(
        scale * steps.cumsum(dim=1))


DATA = {"ACSF1": (acsf1_path, ACSF1), "walk3": (walk_path, WALK)}
TASKS = ["ACSF1:1:1", "ACSF1:1:4", "ACSF1:0.1:1", "ACSF1:0.1:2", "ACSF1:0.1:4", "walk3:0.1:1",
         "walk3:0.1:4"]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def cdeint(func: nn.Module, path, z0: torch.Tensor, steps: int) -> torch.Tensor:
    return torchcde.cdeint(X=path, func=func, z0=z0, t=path.interval, method="rk4",
                           options={"step_size": 1 / steps}, adjoint=False)[:, -1]


def measure(seed: int, data: str, scale: float, steps: int, batch: int) -> list[dict]:
    make, length = DATA[data]
    coeffs = make(batch, scale)
    channels = coeffs.shape[-1] // 4
    torch.manual_seed(seed)
    func, stem = Field(HIDDEN, channels), nn.Linear(channels, HIDDEN)
    path = torchcde.CubicSpline(coeffs)
    with torch.no_grad():
        z0 = stem(path.evaluate(path.interval[0]))
        serial = cdeint(func, path, z0, steps)
        # float32 rounding, amplified by an expansive CDE: the floor of any error below
        exact = cdeint(func.double(), torchcde.CubicSpline(coeffs.double()), z0.double(), steps)
        func.float()
    rounding = relative(serial.double(), exact)
    index = torch.arange(batch)
    rows = []
    for field, method in itertools.product(FIELDS, METHODS):
        common = {"coarse_field": field, "coarse": method, "steps_per_observation": steps}
        with torch.no_grad():
            cold = NeuralCDEBlock(func, length, SLICES, tol=TOL, **common)
            out = cold(coeffs, z0)
            k_cold, error = cold.stats.forward_iters, relative(out, serial)
            seconds = {"coarse": cold.stats.time_coarse, "fine": cold.stats.time_fine}
            curve = []
            for k in range(CURVE):
                fixed = NeuralCDEBlock(func, length, SLICES, tol=0.0, max_iters=k, **common)
                curve.append(relative(fixed(coeffs, z0), serial))
            warm = NeuralCDEBlock(func, length, SLICES, tol=TOL, warm_start=True, **common)
            warm(coeffs, z0, index=index)
            saved = [p.clone() for p in func.parameters()]
            signs = torch.Generator().manual_seed(seed + 1)
            for p in func.parameters():
                p.add_(1e-3 * torch.randn(p.shape, generator=signs).sign())
            moved = cdeint(func, path, z0, steps)
            out = warm(coeffs, z0, index=index)
            k_warm, warm_error = warm.stats.forward_iters, relative(out, moved)
            for p, old in zip(func.parameters(), saved, strict=True):
                p.copy_(old)
        rows.append({"data": data, "scale": scale, "steps": steps, "seed": seed,
                     "coarse_field": field,
                     "coarse": method, "k_cold": k_cold, "error_cold": error,
                     "k_warm": k_warm, "error_warm": warm_error, "errors_at_k": curve,
                     "float32_rounding": rounding, "seconds": seconds})
        print(rows[-1], flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = [
        "# Neural CDE: parareal iterations K per coarse propagator and fine step", "",
        _common.header(result["environment"]), "",
        f"N = {SLICES} chunks (ACSF1: padded to 1461 points, 73 observations a chunk; "
        f"walk3: 401 points, 20 a chunk), tol = {TOL}, batch {result['batch']}, float32, the "
        f"zoo's CDE field untrained (hidden {HIDDEN}); medians over {result['seeds']} seeds of "
        "the initialisation (min–max of K). Scale: the factor on the (z-normalised) values: it "
        "sets how expansive the CDE is. Steps: fine RK4 steps per observation. Errors are "
        "relative to `torchcde.cdeint` on the same grid (step 1/steps) in float32; "
        "\"rounding\" is that cdeint's own distance from float64, the floor of every error. "
        "Warm: started from the boundaries cached before every weight moved by 1e-3.", "",
        "| data | scale | steps | coarse field | method | K cold | error cold | K warm | "
        "error warm | error after k = 0, 1, 2, 3 | rounding |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    tasks = dict.fromkeys((r["data"], r["scale"], r["steps"]) for r in result["rows"])
    for (data, scale, steps), field, method in itertools.product(tasks, FIELDS, METHODS):
        rows = [r for r in result["rows"] if (r["data"], r["scale"], r["steps"], r["coarse_field"],
                                              r["coarse"]) == (data, scale, steps, field, method)]

        def med(key: str, rows=rows) -> float:
            return statistics.median(r[key] for r in rows)

        def span(key: str, rows=rows) -> str:
            values = [r[key] for r in rows]
            return f"{statistics.median(values):g} ({min(values)}–{max(values)})"

        curve = [statistics.median(r["errors_at_k"][k] for r in rows) for k in range(CURVE)]
        lines.append(
            f"| {data} | {scale:g} | {steps} | {field} | {method} | {span('k_cold')} | "
            f"{med('error_cold'):.1e} | {span('k_warm')} | {med('error_warm'):.1e} | "
            + ", ".join(f"{e:.1e}" for e in curve) + f" | {med('float32_rounding'):.0e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tasks", nargs="+", default=TASKS,
                        help="DATA:SCALE:STEPS triples, DATA one of " + ", ".join(DATA))
    args = parser.parse_args()
    try:
        tasks = [(name, float(scale), int(steps))
                 for name, scale, steps in (t.split(":") for t in args.tasks)]
    except ValueError:
        parser.error(f"--tasks: give DATA:SCALE:STEPS triples, e.g. ACSF1:0.1:2, got {args.tasks}")
    if any(name not in DATA for name, _, _ in tasks):
        parser.error(f"--tasks: data must be one of {', '.join(DATA)}, got {args.tasks}")
    env = _common.environment("1 thread", args.allow_dirty)
    torch.set_num_threads(1)
    rows = [row for data, scale, steps in tasks for seed in range(args.seeds)
            for row in measure(seed, data, scale, steps, args.batch)]
    result = {"environment": env, "seeds": args.seeds,
              "batch": args.batch, "tol": TOL, "num_slices": SLICES, "rows": rows}
    print(_common.write_results(NAME, result, markdown(result)).read_text())


if __name__ == "__main__":
    main()
