"""The parareal neural CDE against ``torchcde.cdeint`` as the series grows: forward passes and
training steps at L = 256 ... 4096, on 1 process and on 2 ranks.

Run from the repository root (about 15 minutes on a quiet 2-core machine):

    python benchmarks/ncde_length.py [--lengths 256 512 1024 2048 4096] [--pairs 5]
        [--task acsf1] [--slices N] [--no-memory]

Model: configs/TASK/ncde.yaml's ``ncde`` (``torchcde.cdeint``) and configs/TASK/ncde_parareal.yaml's
``ncde_parareal`` (its field, path, coarse propagator and options, batch size; tol 1e-3), with
the same weights (seeded initialisation) and a head of 10 classes (ACSF1's). Data: a seeded
Gaussian random walk of L observations per series, z-normalised per series, one channel (ACSF1's
shape; time is the path's second channel), padded to L + 1 by repeating the last observation as
the ACSF1 config pads 1460 -> 1461, so the solve takes L observation steps and N chunks of L / N
each. N rule (unless ``--slices``): N = 2^floor(log2(L / 2) / 2), the largest power of two
with 2 N^2 <= L (8, 16, 16, 32, 32: chunks of 32 to 128 observations). An iteration costs a
batched fine solve of L / N steps on N x batch rows and a chain of N coarse steps (plus a
message per rank boundary on 2 ranks); with the zoo's small field a step costs mostly overhead
until the rows grow, so the optimum lies near N = sqrt(L) but below it, where the rows stay
few: at L = 4096 (one thread, cold forward, contended machine) N = 32, 64, 128 took 0.54,
0.60, 0.79 s.

Cases: a forward pass (no graph) and a training step (forward, cross-entropy on seeded labels,
backward). Before every call every weight moves by +lr or back by -lr (the config's lr, a sign
per weight drawn once: an Adam-sized step), so a warm start always begins from boundaries of
slightly different weights, as in training. Candidates, alternating in rounds (one warm-up round,
then ``--pairs`` rounds, one call each):

- ``cdeint`` at 1 and at 2 threads (the baseline: the faster of the two in each round);
- the parareal twin on 1 process with 2 threads, cold (the coarse sweep) and warm (the
  per-sample cache of the previous call's boundaries);
- the same on 2 ranks x 1 thread (gloo; a call lasts until its slower rank is done).

Per length: seconds (median, min–max), speed-up over the best cdeint per round, K of each
parareal call, the relative error of the logits (forward) and of the gradient of all
parameters (training) against cdeint at the same weights, and peak RSS of the training step in
a fresh process (cdeint at 1 thread, the warm twin on 1 process, and per rank of 2).

Writes docs/benchmarks/ncde_length.{json,md,png}.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import _common
import torch
import torch.distributed as dist
import yaml
from torch import nn

from pnode_zoo.distributed import create_groups
from pnode_zoo.models import create_model

NAME = "ncde_length"
SCRIPT = Path(__file__).resolve()
LENGTHS = [256, 512, 1024, 2048, 4096]
CLASSES, TOL = 10, 1e-3
CASES = ("forward", "train")
#: (candidate, model, threads); threads 0: 2 ranks x 1 thread
CANDIDATES = [("cdeint@1", "plain", 1), ("cdeint@2", "plain", 2),
              ("cold@1p", "cold", 2), ("warm@1p", "warm", 2),
              ("cold@2r", "cold", 0), ("warm@2r", "warm", 0)]
PARAREAL = [name for name, model, _ in CANDIDATES if model != "plain"]
LABELS = {"cold@1p": "1 process, cold", "warm@1p": "1 process, warm",
          "cold@2r": "2 ranks, cold", "warm@2r": "2 ranks, warm"}


def default_slices(length: int) -> int:
    """N for a series of ``length`` observation steps: the largest power of two with
    2 N^2 <= length (at least 2)."""
    return max(2, 2 ** ((int(math.log2(length)) - 1) // 2))


def task_models(task: str) -> tuple[dict, dict, int, float]:
    """The plain and parareal arch_args of configs/TASK, the batch size and the lr, with a
    plain linear head on the final state: a boundaries readout's N would follow the chunks
    each benchmark sets, a BatchNorm would scale the errors by the batch's spread, and the
    head costs nothing next to the solve."""
    plain, twin = (yaml.safe_load((_common.ROOT / f"configs/{task}/{name}.yaml").read_text())
                   for name in ("ncde", "ncde_parareal"))
    plain_args, twin_args = ({k: v for k, v in config["model"]["init_args"]["arch_args"].items()
                              if k not in ("readout", "readout_chunks", "head_norm")}
                             for config in (plain, twin))
    return (plain_args, twin_args, int(twin["data"]["init_args"]["batch_size"]),
            float(twin["model"]["init_args"]["lr"]))


def walk(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Series [batch, 1, length + 1]: a Gaussian random walk of ``length`` observations,
    z-normalised per series, the last observation repeated once."""
    steps = torch.randn(batch, length, generator=torch.Generator().manual_seed(seed))
    x = steps.cumsum(dim=1)
    x = (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True)
    return torch.cat([x, x[:, -1:]], dim=1)[:, None]


def build(task: str, length: int, slices: int, seed: int = 0) -> dict[str, nn.Module]:
    """``plain`` (cdeint), ``cold`` and ``warm`` (the parareal twin without and with its warm
    start) on series of ``length`` steps in ``slices`` chunks, with one set of weights."""
    plain_args, twin_args, _, _ = task_models(task)
    shape = {"num_classes": CLASSES, "input_shape": (1, length + 1)}
    parareal = {**twin_args.get("parareal", {}), "num_slices": slices, "tol": TOL}
    torch.manual_seed(seed)
    models = {"plain": create_model("ncde", **shape, **plain_args)}
    for name, warm in (("cold", False), ("warm", True)):
        models[name] = create_model("ncde_parareal", **shape, **{
            **twin_args, "parareal": {**parareal, "warm_start": warm}})
        models[name].load_state_dict(models["plain"].state_dict())
    return models


class Call:
    """One call of a model: a forward pass without a graph, or a training step (forward,
    cross-entropy, backward). Every call first moves each weight by +step or back by -step, so
    consecutive calls see weights one Adam-sized step apart.

    Args:
        model: ``build``'s model.
        case: "forward" or "train".
        x: series [batch, 1, length + 1].
        y: labels [batch].
        step: the move of every weight (the config's lr).
        index: the samples' keys (the warm start's cache), or None.
    """

    def __init__(self, model: nn.Module, case: str, x: torch.Tensor, y: torch.Tensor,
                 step: float, index: torch.Tensor | None = None) -> None:
        self.model, self.case, self.x, self.y, self.index = model, case, x, y, index
        signs = torch.Generator().manual_seed(1)
        self.moves = [step * torch.randn(p.shape, generator=signs).sign()
                      for p in model.parameters()]
        self.sign = 1.0
        self.output: torch.Tensor | None = None

    def move(self) -> None:
        """Move every weight by one step, alternately forward and back."""
        with torch.no_grad():
            for p, d in zip(self.model.parameters(), self.moves, strict=True):
                p.add_(d, alpha=self.sign)
        self.sign = -self.sign

    def __call__(self) -> None:
        self.move()
        kwargs = {} if self.index is None else {"index": self.index}
        if self.case == "forward":
            with torch.no_grad():
                self.output = self.model(self.x, **kwargs)
            return
        for p in self.model.parameters():
            p.grad = None
        output = self.model(self.x, **kwargs)
        nn.functional.cross_entropy(output, self.y).backward()
        self.output = output.detach()

    def gradient(self) -> torch.Tensor:
        """The last training step's gradient of all parameters, flat."""
        return torch.cat([p.grad.flatten() for p in self.model.parameters()])


def seconds(fn: Call, threads: int) -> float:
    """Wall seconds of one call with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    torch.set_num_threads(1)
    return elapsed


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def calls(models: dict[str, nn.Module], case: str, x: torch.Tensor, step: float,
          group=None, names: list[str] | None = None,
          candidates: list[tuple[str, str, int]] = CANDIDATES) -> dict[str, Call]:
    """A ``Call`` per candidate in ``names`` (None: all), each on its own copy of its model
    (so each keeps its own weights' parity and warm-start cache); the 2-rank ones on ``group``.
    """
    y = torch.randint(0, CLASSES, (x.shape[0],), generator=torch.Generator().manual_seed(2))
    index = torch.arange(x.shape[0])
    out = {}
    for name, kind, threads in candidates:
        if names is None or name in names:
            model = copy.deepcopy(models[kind])
            if threads == 0:
                model.block.time_group = group
            out[name] = Call(model, case, x, y, step, index if kind == "warm" else None)
    return out


def at_initial_weights(fn: Call) -> None:
    """One call at the initial weights (after one at the moved weights if needed, so that a
    warm start still begins from boundaries of other weights)."""
    if fn.sign > 0:
        fn()
    fn()


def world(rank: int, spec: dict) -> dict:
    """Every length and case: alternating rounds of the candidates (rank 1 joins the 2-rank
    ones and waits at a barrier otherwise), then one call of each at the initial weights for
    the errors against cdeint."""
    group = create_groups(2)[0]
    _, _, batch, lr = task_models(spec["task"])
    two_ranks = [name for name, _, threads in CANDIDATES if threads == 0]
    out = {}
    for length, slices in zip(spec["lengths"], spec["slices"], strict=True):
        x = walk(batch, length)
        models = build(spec["task"], length, slices)
        row: dict = {"N": slices}
        for case in CASES:
            fns = calls(models, case, x, lr, group, None if rank == 0 else two_ranks)
            times: dict[str, list[float]] = {name: [] for name in fns}
            iters: dict[str, list[int]] = {name: [] for name in fns if name in PARAREAL}
            for i in range(spec["pairs"] + 1):  # round 0 warms up
                for name, _, threads in CANDIDATES:
                    dist.barrier()
                    if name in fns:
                        elapsed = seconds(fns[name], max(threads, 1))
                        if i > 0:
                            times[name].append(elapsed)
                            if name in iters:
                                iters[name].append(fns[name].model.block.stats.forward_iters)
            dist.barrier()
            for name in ("cdeint@1", *PARAREAL):  # the same order on both ranks
                if name in fns:
                    at_initial_weights(fns[name])
            row[case] = {"times": times, "K": iters,
                         "errors": errors(fns, case) if rank == 0 else {}}
            print(f"rank {rank}: L = {length}, {case}: " + ", ".join(
                f"{name} {_common.spread(t)['median']:.3f} s" for name, t in times.items()),
                flush=True)
            dist.barrier()
        out[str(length)] = row
    return out


def errors(fns: dict[str, Call], case: str) -> dict[str, float]:
    """Relative errors of each parareal candidate's last call against cdeint's, all at the
    initial weights: the logits (forward) or the gradient of all parameters (training)."""
    reference = fns["cdeint@1"]
    return {name: relative(fns[name].output, reference.output) if case == "forward"
            else relative(fns[name].gradient(), reference.gradient()) for name in PARAREAL}


# --- peak memory, one fresh process per point ----------------------------------------------

def rss_child(payload: dict) -> dict:
    """Peak RSS of two forward passes, then of two training steps (the high-water mark after
    each), in this fresh process, or on each of 2 spawned ranks (the hungrier one).

    Args:
        payload: ``task``, ``length``, ``slices``, ``kind`` ("plain" or "warm"), ``ranks``.
    """
    torch.set_num_threads(1)
    if payload["ranks"] == 2:
        per_rank = _common.run_ranks(_rss_rank, (payload,), start_method="spawn")
        return max(per_rank, key=lambda r: r["train"] - r["before"])
    return _rss_measure(payload)


def _rss_rank(rank: int, payload: dict) -> dict:
    return _rss_measure(payload, create_groups(2)[0])


def _rss_measure(payload: dict, group=None) -> dict:
    models = build(payload["task"], payload["length"], payload["slices"])
    model = models[payload["kind"]]
    if group is not None:
        model.block.time_group = group
    _, _, batch, lr = task_models(payload["task"])
    x = walk(batch, payload["length"])
    out = {"before": _common.current_rss_bytes()}
    for case in CASES:
        fn = Call(model, case, x, torch.zeros(batch, dtype=torch.long), lr,
                  torch.arange(batch) if payload["kind"] == "warm" else None)
        fn()
        fn()
        out[case] = _common.peak_rss_bytes()
    return out


# --- results -------------------------------------------------------------------------------

def summarise(ranks_out: list[dict], memory: dict) -> dict:
    """Per length and case: seconds, speed-ups per round over the best cdeint, K, errors."""
    rank0, rank1 = ranks_out
    result = {}
    for length, row in rank0.items():
        out: dict = {"N": row["N"]}
        for case in CASES:
            times = dict(row[case]["times"])
            for name in rank1[length][case]["times"]:  # a 2-rank call lasts until both are done
                times[name] = [max(a, b) for a, b in zip(
                    times[name], rank1[length][case]["times"][name], strict=True)]
            times["cdeint@best"] = [min(a, b) for a, b in
                                    zip(times["cdeint@1"], times["cdeint@2"], strict=True)]
            out[case] = {
                "seconds": {name: _common.spread(t) for name, t in times.items()},
                "speedup": {name: _common.spread([b / a for a, b in zip(
                    times[name], times["cdeint@best"], strict=True)]) for name in PARAREAL},
                "K": {name: _common.spread(k) for name, k in row[case]["K"].items()},
                "errors": row[case]["errors"],
            }
        out["memory"] = memory.get(length, {})
        result[length] = out
    return result


def markdown(env: dict, spec: dict, results: dict) -> str:
    plain_args, twin_args, batch, lr = task_models(spec["task"])
    parareal = twin_args.get("parareal", {})
    lines = [
        "# Parareal neural CDE against torchcde.cdeint as the series grows", "",
        _common.header(env), "",
        f"Models: configs/{spec['task']}/ncde.yaml (`torchcde.cdeint`) and ncde_parareal.yaml "
        f"(`ncde_parareal`: arch_args `{json.dumps(twin_args)}`), tol {TOL:g}, N chunks by the "
        "rule N = 2^floor(log2(L/2)/2) (chunks of at least 2N observations)"
        + (" (overridden by --slices)" if spec["fixed"] else "")
        + f", same weights, head of {CLASSES} classes; batch {batch}, float32. Series: a seeded "
        "Gaussian random walk of L observations, z-normalised, 1 channel (+ time), padded to "
        "L + 1 by repeating the last (L steps, L / N a chunk); after the normalisation a "
        "walk's steps shrink as 1/sqrt(L), so a longer walk is smoother per observation and "
        "the coarse step over a chunk more accurate than on a rough real series such as ACSF1 "
        "(whose K: [ncde_cost_model.md](ncde_cost_model.md)). Before every call each weight "
        f"moves by ±{lr:g} (the config's lr, alternately forward and back), so *warm* (the "
        "per-sample cache) starts from boundaries of weights one Adam-sized step away, as in "
        "training; *cold* starts from the coarse sweep. Forward: no graph; training step: "
        "forward, cross-entropy, backward. Speed-up = the faster cdeint (1 or 2 threads) of a "
        "round over the candidate in that round: median (min–max) of "
        f"{spec['pairs']} rounds after a warm-up; 1 process runs 2 threads, 2 ranks 1 thread "
        "each (gloo; a call lasts until its slower rank is done). K: median (min–max) over "
        "the rounds. Error: relative, against cdeint at the same weights (forward: logits; "
        f"training: the gradient of all parameters). Parareal options: `{json.dumps(parareal)}`"
        " with num_slices and tol as stated.", "",
    ]
    for case, title in (("forward", "Forward pass"), ("train", "Training step")):
        lines += [f"## {title}", "",
                  "| L | N | cdeint s (best) | " + " | ".join(
                      f"{LABELS[n]}: speed-up" for n in PARAREAL)
                  + " | K cold (1 p; 2 r) | K warm (1 p; 2 r) | largest error |"
                  + (" peak RSS MiB: cdeint / twin / per rank of 2 |" if case == "train" else
                     ""), "|---|---|---|" + "---|" * len(PARAREAL) + "---|---|---|"
                  + ("---|" if case == "train" else "")]
        for length, r in results.items():
            c = r[case]
            k = {name: f"{c['K'][name]['median']:g}" for name in PARAREAL}
            cells = [_common.fmt_spread(c["speedup"][n]).replace(" ", "× ", 1)
                     for n in PARAREAL]
            line = (f"| {length} | {r['N']} | {c['seconds']['cdeint@best']['median']:.3f} | "
                    + " | ".join(cells) + f" | {k['cold@1p']}; {k['cold@2r']} | "
                    f"{k['warm@1p']}; {k['warm@2r']} | {max(c['errors'].values()):.1e} |")
            if case == "train":
                m = r["memory"]
                line += (" " + " / ".join(_common.mib(m[kind]["train"] - m[kind]["before"])
                                          for kind in ("plain", "warm", "warm@2r")) + " |"
                         if m else " – |")
            lines.append(line)
        lines.append("")
    lines += [
        "Peak RSS: what two training steps add to a fresh process (getrusage max RSS minus the "
        "RSS before them, models and data built), 1 thread; per rank of 2: the hungrier rank. "
        "Seconds of every candidate: the JSON file.", "",
        f"![speed-up against length]({NAME}.png)", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = [int(length) for length in results]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, case in zip(axes, CASES, strict=True):
        for name, style in zip(PARAREAL, ("o--", "s--", "o-", "s-"), strict=True):
            ax.loglog(lengths, [r[case]["speedup"][name]["median"] for r in results.values()],
                      style, ms=4, label=LABELS[name], base=2)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xlabel="series length L (observation steps)",
               ylabel="speed-up over cdeint (best of 1, 2 threads)",
               title="Forward pass" if case == "forward" else "Training step")
    _common.save_figure(fig, axes, path)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS,
                        help="observation steps L of the series")
    parser.add_argument("--slices", type=int, help="N for every length (default: the rule)")
    parser.add_argument("--task", default="acsf1", help="configs/TASK/ncde*.yaml")
    parser.add_argument("--pairs", type=int, default=5, help="measured rounds after a warm-up")
    args = _common.parse_or_run_child(parser, rss_child)
    if args is None:
        return
    slices = [args.slices or default_slices(length) for length in args.lengths]
    for length, n in zip(args.lengths, slices, strict=True):
        if n < 2 or n % 2 or length % n:
            parser.error(f"N = {n} must be even (2 ranks) and divide every length L = {length}; "
                         "choose --slices or --lengths accordingly")
    if not (_common.ROOT / f"configs/{args.task}/ncde_parareal.yaml").exists():
        parser.error(f"--task: no configs/{args.task}/ncde_parareal.yaml")
    env = _common.environment("cdeint: 1 and 2 threads; parareal: 1 process x 2 threads, or 2 "
                              "ranks x 1 thread (the other rank idle at a barrier while 1 "
                              "process runs)", args.allow_dirty)
    tic = time.perf_counter()
    spec = {"task": args.task, "lengths": args.lengths, "slices": slices, "pairs": args.pairs,
            "fixed": args.slices is not None}
    ranks_out = _common.run_ranks(world, (spec,))
    memory = {} if args.no_memory else {
        str(length): {
            kind if ranks == 1 else f"{kind}@2r": _common.run_fresh(SCRIPT, {
                "task": args.task, "length": length, "slices": n, "kind": kind, "ranks": ranks})
            for kind, ranks in (("plain", 1), ("warm", 1), ("warm", 2))}
        for length, n in zip(args.lengths, slices, strict=True)}
    results = summarise(ranks_out, memory)
    text = markdown(env, spec, results)
    _common.write_results(NAME, {"environment": env, "spec": spec, "classes": CLASSES,
                                 "tol": TOL, "seconds": time.perf_counter() - tic,
                                 "results": results, "ranks": ranks_out}, text)
    plot(results, _common.OUT_DIR / f"{NAME}.png")
    print(text)


if __name__ == "__main__":
    main()
