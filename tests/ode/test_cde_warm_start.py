"""The per-sample warm start of NeuralCDEBlock: its cache's memory bound and eviction, and that
a warm start changes iterations only, never what the block computes (against torchcde.cdeint)."""

from __future__ import annotations

import pytest
import torch
from cde_helpers import F64, CDEFunc, cdeint_final, coefficients, series

from pnode_zoo.ode import NeuralCDEBlock, WarmStartCache

BATCH, LENGTH, CHANNELS, HIDDEN, SLICES, TOL = 4, 49, 3, 4, 8, 1e-7


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_cache_memory_bound_and_least_recently_used_eviction():
    entry = torch.zeros(3, 1, 8, dtype=F64)  # 3 rows of 8 float64: 192 bytes an entry
    cache = WarmStartCache(1000)

    def keys(*ks: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.tensor(ks)
        return index, entry.expand(3, len(ks), 8) + index.to(F64)[:, None]

    for key in range(3):
        cache.store(*keys(key))
    cache.lookup(torch.tensor([0]), entry)  # 0 becomes the most recently used
    cache.store(*keys(3, 4, 5))
    assert cache.capacity == 5 == len(cache) and cache.nbytes <= 1000
    found, values = cache.lookup(torch.arange(6), entry.expand(3, 6, 8))
    assert found.tolist() == [True, False, True, True, True, True]  # 1 was the oldest
    assert values[2, :, 0].tolist() == [0, 2, 3, 4, 5]
    # a batch larger than the cache keeps its last samples
    cache.store(*keys(*range(10, 19)))
    found, _ = cache.lookup(torch.arange(20), entry.expand(3, 20, 8))
    assert found.nonzero().flatten().tolist() == [14, 15, 16, 17, 18]
    assert cache.nbytes <= 1000


def test_cache_entry_of_another_shape_misses_and_resets():
    cache = WarmStartCache(10_000)
    cache.store(torch.tensor([1, 2]), torch.ones(3, 2, 4))
    found, values = cache.lookup(torch.tensor([1, 2]), torch.ones(5, 2, 4))
    assert not found.any() and values is None
    cache.store(torch.tensor([1]), torch.ones(5, 1, 4))  # the new shape replaces the old
    assert len(cache) == 1 and cache.lookup(torch.tensor([2]), torch.ones(5, 1, 4))[1] is None
    assert (cache.hits, cache.lookups) == (0, 3)


def test_zero_bytes_disables_the_cache():
    cache = WarmStartCache(0)
    cache.store(torch.tensor([1]), torch.ones(3, 1, 4))
    assert len(cache) == 0 and cache.nbytes == 0
    with pytest.raises(ValueError, match="cache_bytes must be an integer >= 0"):
        WarmStartCache(-1)


@pytest.fixture
def setup():
    func = CDEFunc(HIDDEN, CHANNELS).to(F64)
    x = series(6, LENGTH, CHANNELS)
    z0 = torch.randn(6, HIDDEN, dtype=F64)
    coeffs = coefficients(x, "cubic")
    block = NeuralCDEBlock(func, LENGTH, SLICES, tol=TOL, warm_start=True)
    return func, coeffs, z0, block


def _call(block, coeffs, z0, index):
    with torch.no_grad():
        return block(coeffs[index], z0[index], index=index)


def test_a_repeated_call_starts_from_the_cache(setup):
    func, coeffs, z0, block = setup
    index = torch.arange(BATCH)
    reference = cdeint_final(func, coeffs[index], z0[index])
    first = _call(block, coeffs, z0, index)
    cold = block.stats.forward_iters
    assert block.stats.cache_hit_rate == 0.0 and relative(first, reference) <= 10 * TOL
    second = _call(block, coeffs, z0, index)
    assert block.stats.cache_hit_rate == 1.0
    assert block.stats.forward_iters < cold and block.stats.forward_iters <= 2
    assert relative(second, reference) <= 10 * TOL
    # new weights (a training step): the old boundaries are a guess, the output is the new one
    with torch.no_grad():
        for p in func.parameters():
            p.add_(1e-6 * torch.randn_like(p))
    third = _call(block, coeffs, z0, index)
    assert block.stats.forward_iters < cold
    assert relative(third, cdeint_final(func, coeffs[index], z0[index])) <= 10 * TOL
    assert (block.cache.hits, block.cache.lookups) == (8, 12)


def test_misses_are_filled_from_the_coarse_sweep(setup):
    func, coeffs, z0, block = setup
    _call(block, coeffs, z0, torch.tensor([0, 1, 2]))
    index = torch.tensor([5, 1, 2, 4])
    out = _call(block, coeffs, z0, index)
    assert block.stats.cache_hit_rate == 0.5
    assert relative(out, cdeint_final(func, coeffs[index], z0[index])) <= 10 * TOL


def test_a_wrong_entry_costs_iterations_not_accuracy(setup):
    func, coeffs, z0, block = setup
    index = torch.arange(BATCH)
    _call(block, coeffs, z0, index)
    rows = block.cache.lookup(index, torch.zeros(SLICES, BATCH, HIDDEN, dtype=F64))[1]
    block.cache.store(index, rows + 5 * torch.randn_like(rows))  # another sample's, say
    out = _call(block, coeffs, z0, index)
    assert block.stats.cache_hit_rate == 1.0
    assert relative(out, cdeint_final(func, coeffs[index], z0[index])) <= 10 * TOL


@pytest.mark.parametrize("backward", ["unrolled", "fine_adjoint"])
def test_warm_started_gradient_at_k_equals_n_is_cdeints(setup, backward):
    func, coeffs, z0, _ = setup
    block = NeuralCDEBlock(func, LENGTH, SLICES, tol=0.0, warm_start=True, backward=backward)
    index = torch.arange(BATCH)
    _call(block, coeffs, z0, index)
    weights = torch.randn(BATCH, HIDDEN, dtype=F64)

    def grads(solve):
        func.zero_grad()
        start = z0[index].clone().requires_grad_()
        (solve(start) * weights).sum().backward()
        return [start.grad] + [p.grad.clone() for p in func.parameters()]

    got = grads(lambda start: block(coeffs[index], start, index=index))
    assert block.stats.cache_hit_rate == 1.0 and block.stats.forward_iters == SLICES
    want = grads(lambda start: cdeint_final(func, coeffs[index], start))
    for g, w in zip(got, want, strict=True):
        assert relative(g, w) <= 1e-9


def test_index_must_match_the_batch(setup):
    _, coeffs, z0, block = setup
    with pytest.raises(ValueError, match="index must hold one integer per sample"):
        block(coeffs[:2], z0[:2], index=torch.arange(3))
