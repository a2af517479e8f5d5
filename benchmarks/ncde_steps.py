"""Training steps of the parareal neural CDE against the plain one, on the configs' tasks.

Run from the repository root (about five minutes on one core):

    python benchmarks/ncde_steps.py [--epochs 3] [--tasks acsf1 osuleaf]

Writes docs/benchmarks/ncde_steps.{json,md}. For each task, configs/TASK/ncde.yaml (plain,
``torchcde.cdeint``) and configs/TASK/ncde_parareal.yaml (warm start on) and the same twin with
``warm_start`` off start from the same weights and take AdamW steps (the configs' lr, no
schedule) on the same batches of the configs' data, one after another per batch, one thread.
Per step: wall seconds of forward + backward + optimiser step, the twin's K and cache hit rate.
After the last step, the twins' outputs on one batch against the plain solve at their weights.
Timings on a shared machine are noisy: the three models alternate step by step, and medians are
reported.
"""

from __future__ import annotations

import statistics
import time

import _common
import torch
import yaml

from pnode_zoo.data import UCRDataModule
from pnode_zoo.models import create_model

NAME = "ncde_steps"
MODELS = ("plain", "warm", "cold")


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


def run_task(task: str, epochs: int) -> dict:
    data, models, lr = build(task)
    optimisers = {name: torch.optim.AdamW(m.parameters(), lr=lr) for name, m in models.items()}
    steps: list[dict] = []
    for epoch in range(epochs):
        for x, y, index in data.train_dataloader():
            step: dict = {"epoch": epoch}
            for name, model in models.items():
                start = time.perf_counter()
                logits = model(x) if name == "plain" else model(x, index=index)
                torch.nn.functional.cross_entropy(logits, y).backward()
                optimisers[name].step()
                optimisers[name].zero_grad()
                step[f"{name}_seconds"] = time.perf_counter() - start
                if name != "plain":
                    stats = model.block.stats
                    step[f"{name}_K"] = stats.forward_iters
                    step[f"{name}_hit"] = stats.cache_hit_rate
            steps.append(step)
    x, _, index = next(iter(data.train_dataloader()))
    errors = {}
    with torch.no_grad():
        for name in ("warm", "cold"):
            models["plain"].load_state_dict(models[name].state_dict())
            serial = models["plain"](x)
            errors[name] = float((models[name](x, index=index) - serial).norm() / serial.norm())
    later = [s for s in steps if s["epoch"] > 0]
    summary = {f"{name}_seconds": statistics.median(s[f"{name}_seconds"] for s in later)
               for name in MODELS}
    for name in ("warm", "cold"):
        summary[f"{name}_K_first_epoch"] = statistics.median(
            s[f"{name}_K"] for s in steps if s["epoch"] == 0)
        summary[f"{name}_K_later"] = statistics.median(s[f"{name}_K"] for s in later)
        summary[f"{name}_error"] = errors[name]
    return {"task": task, "length": data.length, "steps": steps, "summary": summary}


def markdown(result: dict) -> str:
    lines = [
        "# Parareal neural CDE against torchcde.cdeint: training steps", "",
        _common.header(result["environment"]), "",
        f"{result['epochs']} epochs of AdamW steps from the same weights, batch 16; seconds and K "
        "are medians over the steps after the first epoch (K also over the first epoch, when "
        "every series is new to the cache); error: the twin's logits against the plain solve "
        "at the twin's final weights, relative.", "",
        "| task | length | plain s/step | warm s/step | cold s/step | speed-up warm | "
        "speed-up cold | K warm (epoch 0; later) | K cold (epoch 0; later) | error warm | "
        "error cold |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in result["tasks"]:
        s = task["summary"]
        lines.append(
            f"| {task['task']} | {task['length']} | {s['plain_seconds']:.3f} | "
            f"{s['warm_seconds']:.3f} | {s['cold_seconds']:.3f} | "
            f"{s['plain_seconds'] / s['warm_seconds']:.2f}x | "
            f"{s['plain_seconds'] / s['cold_seconds']:.2f}x | "
            f"{s['warm_K_first_epoch']:g}; {s['warm_K_later']:g} | "
            f"{s['cold_K_first_epoch']:g}; {s['cold_K_later']:g} | "
            f"{s['warm_error']:.1e} | {s['cold_error']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=["acsf1", "osuleaf"])
    args = parser.parse_args()
    env = _common.environment("1 thread", args.allow_dirty)
    torch.set_num_threads(1)
    result = {"environment": env, "epochs": args.epochs,
              "tasks": [run_task(task, args.epochs) for task in args.tasks]}
    print(_common.write_results(NAME, result, markdown(result)).read_text())


if __name__ == "__main__":
    main()
