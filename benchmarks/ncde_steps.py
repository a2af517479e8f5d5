"""Training steps of the parareal neural CDE against the plain one, on the configs' tasks.

Run from the repository root (about five minutes on one core, plus the checks):

    python benchmarks/ncde_steps.py [--epochs 3] [--tasks acsf1 osuleaf] [--check-every 5]
        [--max-steps N] [--out DIR]

Writes docs/benchmarks/ncde_steps.{json,md} (``--out``: elsewhere). For each task,
configs/TASK/ncde.yaml (plain, ``torchcde.cdeint``) and configs/TASK/ncde_parareal.yaml (warm
start on) and the same twin with ``warm_start`` off start from the same weights and take AdamW
steps (the configs' lr, no schedule) on the same batches of the configs' data, one after
another per batch, one thread, in an order that rotates every step (plain, warm, cold; then
warm, cold, plain; ...) so that no model always runs first. Per step: wall seconds of forward +
backward + optimiser step, the twin's K and cache hit rate. Timings on a shared machine are
noisy: medians are reported.

Checks, on every ``--check-every``-th step and the last (outside the timed part), for each twin:
- output: the block's output of the step (z at the end, or at the chunk boundaries) against
  ``torchcde.cdeint`` on the batch at the twin's own weights of that step, judged as ``tol``
  is: max over boundaries n of |z_n - z*_n| / |z*_n| (2-norms over the batch's states),
  reported as a multiple of ``tol``;
- gradient: that the step's gradient is the exact one of what the step computed. On a float64
  copy of the twin before the step, on the batch's first ``GRAD_SAMPLES`` series, with the
  step's K (``max_iters=K, tol=0``) and, for a warm start, the step's start held fixed (the
  block's forward at K = 0 with the cache's entries gives it; the gradient treats the start as
  a constant): the directional derivative of the loss along a random unit direction of the
  field's parameters by the block's backward against a central finite difference, as a
  relative error. The copy's field has its ReLUs replaced by ``Softplus(beta=20)``: a finite
  difference over thousands of steps crosses ReLU kinks (on ACSF1 even the plain ``cdeint``
  model's autograd gradient differs from one by 4e-4 at any step from 1e-4 to 1e-6, by 1e-9
  with the smooth field), and what is checked is the block's gradient of its computation, for
  any field. ``start moved``: the same against the finite difference that recomputes the warm
  start with the shifted weights too (what the detached start leaves out).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import _common
import torch
import yaml

from pnode_zoo.data import UCRDataModule
from pnode_zoo.models import create_model

NAME = "ncde_steps"
MODELS = ("plain", "warm", "cold")
#: series of a checked step's batch that the gradient check runs on (float64, up to 6 solves)
GRAD_SAMPLES = 4


def build(task: str) -> tuple[UCRDataModule, dict[str, torch.nn.Module], float]:
    """The task's data and the three models with one set of initial weights; the lr."""
    configs = {name: yaml.safe_load((_common.ROOT / f"configs/{task}/{name}.yaml").read_text())
               for name in ("ncde", "ncde_parareal")}
    data = UCRDataModule(**configs["ncde_parareal"]["data"]["init_args"])
    data.setup("fit")
    shape = {"num_classes": data.num_classes, "input_shape": data.input_shape}
    plain_args = configs["ncde"]["model"]["init_args"]["arch_args"]
    twin_args = configs["ncde_parareal"]["model"]["init_args"]["arch_args"]
    cold_args = {**twin_args, "parareal": {**twin_args["parareal"], "warm_start": False}}
    torch.manual_seed(0)
    models = {"plain": create_model("ncde", **shape, **plain_args),
              "warm": create_model("ncde_parareal", **shape, **twin_args),
              "cold": create_model("ncde_parareal", **shape, **cold_args)}
    for name in ("warm", "cold"):
        models[name].load_state_dict(models["plain"].state_dict())
    return data, models, configs["ncde"]["model"]["init_args"]["lr"]


def with_block_output(model: torch.nn.Module,
                       call: Callable[[], float]) -> tuple[float, torch.Tensor]:
    """``call()``'s result and what ``model.block`` returned during it (detached)."""
    seen: list[torch.Tensor] = []
    hook = model.block.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    try:
        result = call()
    finally:
        hook.remove()
    return result, seen[-1]


def train_step(model: torch.nn.Module, optimiser: torch.optim.Optimizer,
               batch: Sequence[torch.Tensor], keyed: bool) -> float:
    """Forward, backward and optimiser step on (series, labels, index); its wall seconds.

    Args:
        keyed: pass the index (a twin's warm-start keys) to the model.
    """
    x, y, index = batch
    start = time.perf_counter()
    logits = model(x, index=index) if keyed else model(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    optimiser.step()
    optimiser.zero_grad()
    return time.perf_counter() - start


def output_error(twin_out: torch.Tensor, reference: torch.nn.Module, x: torch.Tensor) -> float:
    """max_n |z_n - z*_n| / |z*_n| of the twin's block output against ``reference``'s
    (``torchcde.cdeint``, the twin's weights loaded) on ``x``: rows are boundaries."""
    with torch.no_grad():
        serial = with_block_output(reference, lambda: float(reference(x).sum()))[1]
    rows = (-1, *serial.shape[-2:])
    diff = (twin_out.reshape(rows) - serial.reshape(rows)).flatten(1).norm(dim=1)
    return float((diff / serial.reshape(rows).flatten(1).norm(dim=1)).max())


def gradient_check(before: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   index: torch.Tensor, iters: int, hit_rate: float | None,
                   step: float = 1e-4) -> dict[str, float]:
    """Relative errors of the block's directional derivative (see the module doc).

    Args:
        before: a copy of the twin as it was before the step (consumed).
        x, y, index: the series, labels and keys to check on.
        iters: the step's forward K.
        hit_rate: the step's cache hit rate: a start from the cache when above 0.
        step: the finite difference's step along the unit direction.
    """
    net = before.double()
    block, options = net.block, net.block.options
    for module in list(block.func.modules()):  # smooth, for the finite difference
        for name, child in module.named_children():
            if isinstance(child, torch.nn.ReLU):
                setattr(module, name, torch.nn.Softplus(beta=20.0))
    x = x.double()
    fixed_start = bool(options.warm_start and hit_rate)
    moved = None
    if fixed_start:  # the cache's float32 entries, as float64 ones (another dtype misses)
        rows = torch.empty(block.num_slices, len(index), block.func.hidden)
        found, values = block.cache.lookup(index, rows)
        block.cache.clear()
        if values is not None:
            block.cache.store(index[found], values.double())
        block.options = dataclasses.replace(options, max_iters=iters, tol=0.0)
        moved = copy.deepcopy(net)
        block.options = dataclasses.replace(options, max_iters=0, tol=0.0)
        with torch.no_grad():  # K = 0 returns the start, kept as the block's previous states
            net(x, index=index)
    block.options = dataclasses.replace(options, max_iters=iters, tol=0.0,
                                        warm_start=fixed_start)
    generator = torch.Generator().manual_seed(0)
    direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype)
                 for p in block.func.parameters()]
    norm = torch.sqrt(sum(d.square().sum() for d in direction))
    direction = [d / norm for d in direction]

    def loss(model: torch.nn.Module, shift: float, keyed: bool) -> torch.Tensor:
        model = copy.deepcopy(model)
        with torch.no_grad():
            for p, d in zip(model.block.func.parameters(), direction, strict=True):
                p.add_(shift * d)
        logits = model(x, index=index) if keyed else model(x)
        return torch.nn.functional.cross_entropy(logits, y), model

    value, model = loss(net, 0.0, False)
    value.backward()
    derivative = float(sum((p.grad * d).sum()
                           for p, d in zip(model.block.func.parameters(), direction,
                                           strict=True)))

    def relative(model: torch.nn.Module, keyed: bool) -> float:
        with torch.no_grad():
            plus, minus = (float(loss(model, s, keyed)[0]) for s in (step, -step))
        difference = (plus - minus) / (2 * step)
        return abs(derivative - difference) / abs(difference)

    out = {"grad_rel_error": relative(net, False)}
    if moved is not None:
        out["grad_rel_error_start_moved"] = relative(moved, True)
    return out


def run_task(task: str, epochs: int, check_every: int, max_steps: int | None) -> dict:
    data, models, lr = build(task)
    reference = copy.deepcopy(models["plain"])  # cdeint at the twins' weights, for the checks
    optimisers = {name: torch.optim.AdamW(m.parameters(), lr=lr) for name, m in models.items()}
    total = epochs * len(data.train_dataloader())
    total = total if max_steps is None else min(total, max_steps)
    steps: list[dict] = []
    for epoch in range(epochs):
        for batch in data.train_dataloader():
            x, y, index = batch
            if len(steps) == total:
                break
            turn = len(steps) % len(MODELS)
            check = (len(steps) + 1) % check_every == 0 or len(steps) + 1 == total
            step: dict = {"epoch": epoch, "order": [*MODELS[turn:], *MODELS[:turn]]}
            for name in step["order"]:
                model, keyed = models[name], name != "plain"
                before = copy.deepcopy(model) if check and keyed else None
                call = functools.partial(train_step, model, optimisers[name], batch, keyed)
                if before is None:
                    step[f"{name}_seconds"] = call()
                else:
                    step[f"{name}_seconds"], twin_out = with_block_output(model, call)
                if name == "plain":
                    continue
                stats = model.block.stats
                step[f"{name}_K"] = stats.forward_iters
                step[f"{name}_hit"] = stats.cache_hit_rate
                if before is not None:
                    reference.load_state_dict(before.state_dict())
                    step[f"{name}_error_over_tol"] = output_error(twin_out, reference, x) / (
                        stats.tol)
                    step.update({f"{name}_{key}": value for key, value in gradient_check(
                        before, x[:GRAD_SAMPLES], y[:GRAD_SAMPLES], index[:GRAD_SAMPLES],
                        stats.forward_iters, stats.cache_hit_rate).items()})
            steps.append(step)
    return {"task": task, "length": data.length, "steps": steps, "summary": summarise(steps)}


def summarise(steps: list[dict]) -> dict:
    """Medians of seconds and K (after the first epoch where there is one), the checks' worst."""
    later = [s for s in steps if s["epoch"] > 0] or steps
    checked = [s for s in steps if "warm_error_over_tol" in s]
    summary: dict = {f"{name}_seconds": statistics.median(s[f"{name}_seconds"] for s in later)
                     for name in MODELS}
    summary["checked_steps"] = len(checked)
    for name in ("warm", "cold"):
        summary[f"{name}_K_first_epoch"] = statistics.median(
            s[f"{name}_K"] for s in steps if s["epoch"] == 0)
        summary[f"{name}_K_later"] = statistics.median(s[f"{name}_K"] for s in later)
        summary[f"{name}_K_median"] = statistics.median(s[f"{name}_K"] for s in steps)
        summary[f"{name}_K_max"] = max(s[f"{name}_K"] for s in steps)
        for key in ("error_over_tol", "grad_rel_error", "grad_rel_error_start_moved"):
            values = [s[f"{name}_{key}"] for s in checked if f"{name}_{key}" in s]
            summary[f"{name}_{key}_max"] = max(values) if values else None
    hits = [s["warm_hit"] for s in later if s["warm_hit"] is not None]
    summary["warm_hit_rate"] = statistics.mean(hits) if hits else None
    return summary


def _worst(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(result: dict) -> str:
    lines = [
        "# Parareal neural CDE against torchcde.cdeint: training steps", "",
        _common.header(result["environment"]), "",
        f"{result['epochs']} epochs of AdamW steps from the same weights, batch 16, the three "
        "models' order rotating every step; seconds are medians over the steps after the first "
        "epoch, K the median over all steps (in brackets: over the first epoch, when every "
        "series is new to the cache; over the later ones; the most any step took). Checked "
        f"steps: those whose number is a multiple of {result['check_every']}, and the last. "
        "Error / tol: the twin's block output against cdeint at the twin's weights of that "
        "step, max over boundaries of the relative error (as tol judges), over tol, worst "
        "checked step. Gradient: the step's "
        "directional derivative (float64, the step's K and start, the field's ReLUs smoothed "
        "to Softplus(20)) against a central finite difference, worst relative error; start "
        "moved: against the finite difference that "
        "also moves the warm start with the weights (the start is a constant to the "
        "gradient).", "",
        "| task | length | plain s/step | warm s/step | cold s/step | speed-up warm; cold | "
        "K warm (epoch 0; later; max) | K cold (epoch 0; later; max) | warm hit rate | "
        "checked | error / tol warm; cold | gradient rel. error warm; cold | start moved |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in result["tasks"]:
        s = task["summary"]
        lines.append(
            f"| {task['task']} | {task['length']} | {s['plain_seconds']:.3f} | "
            f"{s['warm_seconds']:.3f} | {s['cold_seconds']:.3f} | "
            f"{s['plain_seconds'] / s['warm_seconds']:.2f}x; "
            f"{s['plain_seconds'] / s['cold_seconds']:.2f}x | "
            + " | ".join(f"{s[f'{n}_K_median']:g} ({s[f'{n}_K_first_epoch']:g}; "
                         f"{s[f'{n}_K_later']:g}; {s[f'{n}_K_max']:g})" for n in ("warm", "cold"))
            + f" | {_worst(s['warm_hit_rate'], '.2f')} | {s['checked_steps']} | "
            f"{_worst(s['warm_error_over_tol_max'], '.2g')}; "
            f"{_worst(s['cold_error_over_tol_max'], '.2g')} | "
            f"{_worst(s['warm_grad_rel_error_max'], '.1e')}; "
            f"{_worst(s['cold_grad_rel_error_max'], '.1e')} | "
            f"{_worst(s['warm_grad_rel_error_start_moved_max'], '.1e')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=["acsf1", "osuleaf"])
    parser.add_argument("--check-every", type=int, default=5,
                        help="check the twins' output and gradient on every n-th step (and the "
                        "last)")
    parser.add_argument("--max-steps", type=int, help="stop each task after this many steps "
                        "(a trial run)")
    parser.add_argument("--out", help="write the results into this folder instead of "
                        "docs/benchmarks")
    args = parser.parse_args()
    if args.check_every < 1 or (args.max_steps is not None and args.max_steps < 1):
        parser.error("--check-every and --max-steps must be at least 1")
    if args.out:
        _common.OUT_DIR = Path(args.out)
    env = _common.environment("1 thread", args.allow_dirty)
    torch.set_num_threads(1)
    result = {"environment": env, "epochs": args.epochs, "check_every": args.check_every,
              "tasks": [run_task(task, args.epochs, args.check_every, args.max_steps)
                        for task in args.tasks]}
    print(_common.write_results(NAME, result, markdown(result)).read_text())


if __name__ == "__main__":
    main()
