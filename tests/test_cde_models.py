"""Neural CDE classifiers (models/cde.py) against torchcde called directly, and the long-series
data they read (ACSF1, OSULeaf, JapaneseVowels, bundled with sktime)."""

import numpy as np
import pytest
import torch
import torchcde

from pnode_zoo.data import UCRDataModule
from pnode_zoo.data.ucr import pad_to
from pnode_zoo.models import create_model
from pnode_zoo.models.cde import path_coefficients
from pnode_zoo.tasks import Classifier


def reference_logits(model, x: torch.Tensor, interpolation: str, adjoint: bool = False,
                     chunks: int = 0):
    """The model's parameters, but the path built here and solved by torchcde.cdeint; with
    ``chunks`` N the head reads z at the boundaries of N equal chunks, side by side."""
    batch, _, length = x.shape
    time = torch.linspace(0, 1, length, dtype=x.dtype).expand(batch, length)[..., None]
    path = torch.cat([time, x.transpose(1, 2)], dim=-1)
    if interpolation == "hermite":
        spline = torchcde.CubicSpline(
            torchcde.hermite_cubic_coefficients_with_backward_differences(path))
    else:
        spline = torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(path))
    z0 = model.initial(path[:, 0])
    grid = torch.arange(length, dtype=x.dtype)
    z = torchcde.cdeint(spline, model.block.func, z0, grid, method="rk4", adjoint=adjoint,
                        options={"step_size": 1.0})
    return model.head(z[:, ::(length - 1) // chunks].flatten(1) if chunks else z[:, -1])


@pytest.mark.parametrize("interpolation", ["hermite", "linear"])
def test_ncde_is_cdeint_on_the_observation_grid(interpolation):
    torch.manual_seed(0)
    model = create_model("ncde", num_classes=3, input_shape=(2, 40), hidden=8, width=16,
                         interpolation=interpolation).double()
    x = torch.randn(5, 2, 40, dtype=torch.float64).cumsum(-1) / 5
    logits = model(x)
    assert logits.shape == (5, 3)
    assert model.nfe == 4 * 39 + 1  # 3/8-rule RK4 per observation step, and torchcde's check
    assert torch.allclose(logits, reference_logits(model, x, interpolation), rtol=1e-12,
                          atol=1e-12)


def test_ncde_gradient_is_the_solvers_and_the_adjoint_approximates_it():
    torch.manual_seed(1)
    phase = torch.rand(3, 1, 1, dtype=torch.float64) * 6
    x = torch.sin(torch.linspace(0, 3, 30, dtype=torch.float64) + phase)  # smooth: RK4 is exact
    model = create_model("ncde", num_classes=2, input_shape=(1, 30), hidden=6, width=8).double()
    adjoint = create_model("ncde", num_classes=2, input_shape=(1, 30), hidden=6, width=8,
                           adjoint=True).double()
    adjoint.load_state_dict(model.state_dict())
    grads = []
    for net, logits in ((model, model(x)), (model, reference_logits(model, x, "hermite")),
                        (adjoint, adjoint(x))):
        net.zero_grad()
        logits.square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-12, atol=1e-12)
    # the continuous adjoint is a different discretisation: close, not equal
    error = (grads[2] - grads[0]).norm() / grads[0].norm()
    assert 0 < error < 1e-3


def test_time_channel_off_reads_the_series_channels_only():
    model = create_model("ncde", num_classes=4, input_shape=(12, 29), time_channel=False)
    assert model.block.func.channels == 12
    assert model(torch.randn(2, 12, 29)).shape == (2, 4)
    assert create_model("ncde", input_shape=(12, 29)).block.func.channels == 13


def test_bad_options_and_inputs_say_what_to_change():
    with pytest.raises(ValueError, match="interpolation must be one of hermite, linear"):
        create_model("ncde", interpolation="cubic")
    with pytest.raises(ValueError, match="hidden, width and channels must be at least 1"):
        create_model("ncde", hidden=0)
    with pytest.raises(ValueError, match=r"series \[batch, channels, length >= 2\]"):
        create_model("ncde")(torch.randn(4, 150))


def test_padding_by_the_last_observation_repeats_it():
    series = [np.arange(6.0).reshape(2, 3), np.ones((2, 5))]
    padded = pad_to(series, 5, "last")
    assert padded[0].tolist() == [[0, 1, 2, 2, 2], [3, 4, 5, 5, 5]]
    assert np.array_equal(padded[1], series[1])
    assert pad_to(series, 5)[0, :, 3:].tolist() == [[0, 0], [0, 0]]


def test_long_series_sets_load_with_their_shapes():
    shapes = {"ACSF1": ((1, 1460), 10, 100, 100), "OSULeaf": ((1, 427), 6, 200, 242)}
    for name, (shape, classes, n_train, n_test) in shapes.items():
        data = UCRDataModule(name)
        data.setup("fit")
        assert data.input_shape == shape and data.num_classes == classes
        assert len(data.splits["train"]) + len(data.splits["val"]) == n_train
        assert len(data.splits["test"]) == n_test


def test_japanese_vowels_padded_with_last_values_and_indices_unique_over_splits():
    data = UCRDataModule("JapaneseVowels", pad="last", with_index=True)
    data.setup("fit")
    assert data.input_shape == (12, 29) and data.num_classes == 9
    lengths = [one.shape[1] for one in data.test_series]
    inputs, _, index = data.splits["test"].tensors
    short = int(np.argmin(lengths))
    assert lengths[short] < 29
    assert torch.all(inputs[short, :, lengths[short]:] == inputs[short, :, lengths[short] - 1:
                                                                   lengths[short]])
    assert index.tolist() == [270 + i for i in range(370)]  # after the 270 training series
    keys = [data.splits[split].tensors[2] for split in ("train", "val")]
    assert torch.equal(keys[0], torch.as_tensor(data.indices["train"]))
    assert torch.equal(keys[1], torch.as_tensor(data.indices["val"]))
    everything = torch.cat([*keys, index])
    assert len(everything.unique()) == len(everything) == 270 + 370
    batch = next(iter(data.train_dataloader()))
    assert len(batch) == 3 and batch[2].dtype == torch.long


def test_classifier_steps_on_batches_with_and_without_index():
    x, labels = torch.randn(4, 1, 20), torch.tensor([0, 1, 0, 1])
    index = torch.arange(4)
    for arch in ("ncde", "resnet1d"):
        task = Classifier(arch, {"hidden": 4, "width": 8} if arch == "ncde" else None,
                          num_classes=2, input_shape=(1, 20))
        assert task.takes_index == (arch == "ncde")
        assert torch.equal(task.logits((x, labels, index)), task.logits((x, labels)))


def twins(seed: int = 0, readout: str = "final", **options):
    """ncde and ncde_parareal (8 chunks, ``options``) with the same float64 parameters, on
    series of 2 channels and 41 observations, the head reading ``readout``."""
    torch.manual_seed(seed)
    shape = {"num_classes": 3, "input_shape": (2, 41), "hidden": 8, "width": 16,
             "readout": readout}
    chunks = {"readout_chunks": 8} if readout == "boundaries" else {}
    plain = create_model("ncde", **shape, **chunks).double()
    twin = create_model("ncde_parareal", **shape, **chunks,
                        parareal={"num_slices": 8, **options}).double()
    twin.load_state_dict(plain.state_dict())
    return plain, twin


def logits_and_gradients(models, x: torch.Tensor):
    """Each model's logits of ``x`` and its parameters' gradient of their sum of squares."""
    outputs = []
    for model in models:
        logits = model(x)
        logits.square().sum().backward()
        outputs.append((logits, torch.cat([p.grad.flatten() for p in model.parameters()])))
    return outputs


def test_parareal_twin_at_k_equal_n_is_the_plain_model_values_and_gradients():
    plain, twin = twins(tol=0.0)
    x = torch.randn(5, 2, 41, dtype=torch.float64).cumsum(-1) / 5
    outputs = logits_and_gradients((plain, twin), x)
    assert twin.block.stats.forward_iters == 8
    assert torch.allclose(outputs[0][0], outputs[1][0], rtol=1e-10, atol=1e-12)
    assert torch.allclose(outputs[0][1], outputs[1][1], rtol=1e-9, atol=1e-12)


def test_boundaries_readout_is_the_same_on_both_twins_and_torchcde():
    plain, twin = twins(seed=2, readout="boundaries", tol=0.0)
    x = torch.randn(5, 2, 41, dtype=torch.float64).cumsum(-1) / 5
    reference = reference_logits(plain, x, "hermite", chunks=8)
    outputs = logits_and_gradients((plain, twin), x)
    assert twin.block.stats.forward_iters == 8
    assert torch.allclose(outputs[0][0], reference, rtol=1e-12, atol=1e-12)
    assert torch.allclose(outputs[1][0], reference, rtol=1e-10, atol=1e-12)
    assert torch.allclose(outputs[0][1], outputs[1][1], rtol=1e-9, atol=1e-12)
    _, warm = twins(seed=2, readout="boundaries", tol=0.0, warm_start=True)
    for _ in range(2):  # a cache miss, then a hit: the same boundaries either way
        assert torch.allclose(warm(x, index=torch.arange(5)), reference, rtol=1e-10,
                              atol=1e-12)
    assert warm.block.stats.cache_hit_rate == 1.0


def test_head_norm_standardises_the_features_on_both_twins():
    torch.manual_seed(3)
    shape = {"num_classes": 3, "input_shape": (1, 41), "hidden": 8, "width": 16,
             "readout": "boundaries", "head_norm": True}
    plain = create_model("ncde", **shape, readout_chunks=4).double()
    twin = create_model("ncde_parareal", **shape, parareal={"num_slices": 4, "tol": 0.0}).double()
    twin.load_state_dict(plain.state_dict())
    x = torch.randn(6, 1, 41, dtype=torch.float64).cumsum(-1) / 5
    features = plain.block(path_coefficients(x, True, "hermite"),
                           plain.initial(torch.cat([torch.zeros(6, 1, dtype=x.dtype),
                                                    x[:, :, 0]], dim=1)), 4)
    features = features.transpose(0, 1).flatten(1)
    standard = (features - features.mean(0)) / (features.var(0, unbiased=False) + 1e-5).sqrt()
    expected = plain.head[1](standard)
    for model in (plain, twin):
        assert torch.allclose(model(x), expected, rtol=1e-9, atol=1e-10)


def test_boundaries_readout_refuses_a_missing_or_foreign_chunk_count():
    with pytest.raises(ValueError, match="readout: boundaries needs readout_chunks"):
        create_model("ncde", input_shape=(1, 41), readout="boundaries")
    with pytest.raises(ValueError, match=r"readout_chunks \(4\) must equal parareal.num_slices"):
        create_model("ncde_parareal", input_shape=(1, 41), readout="boundaries",
                     readout_chunks=4, parareal={"num_slices": 8})
    with pytest.raises(ValueError, match="readout must be one of final, boundaries"):
        create_model("ncde", input_shape=(1, 41), readout="mean")


def test_parareal_twin_warm_start_from_the_samples_cache():
    plain, twin = twins(tol=1e-6, warm_start=True)
    x = torch.randn(6, 2, 41, dtype=torch.float64).cumsum(-1) / 5
    index = torch.tensor([3, 1, 4, 10, 5, 9])
    reference = plain(x)
    with torch.no_grad():
        twin(x[:3], index=index[:3])  # half the samples seen before
        cold = twin(x, index=index)
        half = (twin.block.stats.forward_iters, twin.block.stats.cache_hit_rate)
        warm = twin(x, index=index)
    assert half[1] == 0.5 and twin.block.stats.cache_hit_rate == 1.0
    assert twin.block.stats.forward_iters < half[0]
    for logits in (cold, warm):
        assert torch.allclose(logits, reference, rtol=1e-4, atol=1e-6)


def test_input_scale_scales_the_values_not_time():
    torch.manual_seed(0)
    scaled = create_model("ncde", num_classes=2, input_shape=(1, 20), input_scale=0.1)
    plain = create_model("ncde", num_classes=2, input_shape=(1, 20))
    plain.load_state_dict(scaled.state_dict())
    x = torch.randn(3, 1, 20)
    assert torch.allclose(scaled(x), plain(0.1 * x), atol=1e-6)
    with pytest.raises(ValueError, match="input_scale must be a positive number"):
        create_model("ncde", input_scale=0.0)


def test_parareal_twin_needs_chunks_of_whole_steps():
    with pytest.raises(ValueError, match="divides length - 1 = 149"):
        create_model("ncde_parareal", input_shape=(1, 150), parareal={"num_slices": 4})
    with pytest.raises(ValueError, match="coarse_field must be one of"):
        create_model("ncde_parareal", input_shape=(1, 149), coarse_field="midpoint")


def test_data_length_pads_to_it_and_refuses_a_shorter_one():
    data = UCRDataModule("OSULeaf", pad="last", length=433)
    data.setup("fit")
    inputs = data.splits["test"].tensors[0]
    assert data.input_shape == (1, 433) and inputs.shape[-1] == 433
    assert torch.equal(inputs[:, :, 427:], inputs[:, :, 426:427].expand(-1, -1, 6))
    with pytest.raises(ValueError, match="data.length must be at least the longest series"):
        UCRDataModule("OSULeaf", length=400)
    with pytest.raises(ValueError, match="data.pad must be 'zeros' or 'last'"):
        UCRDataModule("OSULeaf", pad="edge")


def test_steps_per_observation_refine_the_grid_of_both_twins():
    plain, _ = twins()
    torch.manual_seed(0)
    shape = {"num_classes": 3, "input_shape": (2, 41), "hidden": 8, "width": 16,
             "steps_per_observation": 3}
    fine = create_model("ncde", **shape).double()
    twin = create_model("ncde_parareal", **shape, parareal={"num_slices": 8, "tol": 0.0}).double()
    fine.load_state_dict(plain.state_dict())
    twin.load_state_dict(plain.state_dict())
    x = torch.randn(4, 2, 41, dtype=torch.float64).cumsum(-1) / 5
    logits = fine(x)
    assert fine.nfe == 4 * 3 * 40 + 1
    path = torchcde.CubicSpline(torchcde.hermite_cubic_coefficients_with_backward_differences(
        torch.cat([torch.linspace(0, 1, 41, dtype=torch.float64).expand(4, 41)[..., None],
                   x.transpose(1, 2)], dim=-1)))
    z = torchcde.cdeint(path, fine.block.func, fine.initial(path.evaluate(0.0)), path.interval,
                        method="rk4", adjoint=False, options={"step_size": 1 / 3})
    assert torch.allclose(logits, fine.head(z[:, -1]), rtol=1e-12, atol=1e-12)
    assert torch.allclose(twin(x), logits, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(plain(x), logits, rtol=1e-6)
