"""benchmarks/ncde_steps.py's checks on a toy twin: the output against cdeint at the twin's
weights, and the gradient against a finite difference, each shown able to fail."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import ncde_steps  # noqa: E402

from pnode_zoo.models import create_model  # noqa: E402

SHAPE = {"num_classes": 3, "input_shape": (2, 13)}


def twin(**parareal) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("ncde_parareal", hidden=4, width=8, **SHAPE,
                        parareal={"num_slices": 4, "tol": 1e-3, **parareal})


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, 13, generator=generator).cumsum(-1)
    return x, torch.arange(6) % 3, torch.arange(10, 16)


def test_output_error_is_small_when_converged_and_large_for_the_coarse_sweep():
    x, _, index = batch()
    reference = create_model("ncde", hidden=4, width=8, **SHAPE)
    errors = {}
    for max_iters in (0, 4):  # the coarse sweep alone; K = N, the fine solve itself
        model = twin(max_iters=max_iters, tol=0.0)
        reference.load_state_dict(model.state_dict())
        with torch.no_grad():
            out = ncde_steps.with_block_output(model, lambda m=model: float(m(x).sum()))[1]
        errors[max_iters] = ncde_steps.output_error(out, reference, x)
    assert errors[4] < 1e-5 < 1e-2 < errors[0]


def test_gradient_check_exact_for_unrolled_and_not_for_fine_adjoint_at_small_k():
    x, y, index = batch()
    results = {}
    for backward in ("unrolled", "fine_adjoint"):
        model = twin(warm_start=True, backward=backward, tol=0.0, max_iters=1)
        for _ in range(2):  # the second call starts from the cache the first filled
            torch.nn.functional.cross_entropy(model(x, index=index), y).backward()
        stats = model.block.stats
        assert stats.cache_hit_rate == 1.0 and stats.forward_iters == 1
        results[backward] = ncde_steps.gradient_check(
            copy.deepcopy(model), x, y, index, stats.forward_iters, stats.cache_hit_rate)
    assert results["unrolled"]["grad_rel_error"] < 1e-6
    # fine_adjoint is the fine solve's gradient, off by about the forward's error at K < N
    assert results["fine_adjoint"]["grad_rel_error"] > 1e-4
    # recomputing the start with the shifted weights moves the loss by more than rounding
    assert results["unrolled"]["grad_rel_error_start_moved"] > 1e-6
