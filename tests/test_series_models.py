"""Series classifiers, the small-image ResNet-18 and the trajectory NODE: shapes, nfe, registry."""

import pytest
import torch
from torch import nn

from pnode_zoo import create_model, list_models
from pnode_zoo.ode import ConcatConv, ConvVectorField


@pytest.mark.parametrize("arch", ["fcn", "resnet1d", "odenet1d", "odenet1d_parareal"])
@pytest.mark.parametrize(
    ("input_shape", "num_classes"), [((1, 150), 2), ((6, 100), 4), ((1, 24), 3)]
)
def test_series_classifiers_output_logits(arch, input_shape, num_classes):
    model = create_model(arch, num_classes=num_classes, input_shape=input_shape)
    logits = model(torch.randn(5, *input_shape))
    assert logits.shape == (5, num_classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_baselines_report_no_nfe_and_the_ode_net_counts_its_evaluations():
    assert create_model("fcn", num_classes=2, input_shape=(1, 50)).nfe is None
    assert create_model("resnet1d", num_classes=2, input_shape=(1, 50)).nfe is None
    node = create_model("odenet1d", num_classes=2, input_shape=(1, 50), steps=3)
    node(torch.randn(2, 1, 50))
    assert node.nfe == 12  # RK4: 4 evaluations per step


def test_odenet1d_downsampling_and_widths():
    model = create_model("odenet1d", num_classes=3, input_shape=(2, 64), width=16, downsample=2)
    assert model.stem(torch.randn(4, 2, 64)).shape == (4, 16, 16)
    assert create_model("resnet1d", num_classes=2, widths=(8, 16)).head[-1].in_features == 16


@pytest.mark.parametrize("stem_layers", [1, 3])
def test_odenet1d_batch_norm_stem_is_fcns_first_layers(stem_layers):
    model = create_model(
        "odenet1d", num_classes=2, input_shape=(1, 150), width=16, stem_kernel=8,
        stem_batch_norm=True, stem_layers=stem_layers,
    )
    kernels = [m.kernel_size[0] for m in model.stem.modules() if isinstance(m, nn.Conv1d)]
    assert kernels == [8, 5, 3][:stem_layers]
    x = torch.randn(4, 1, 150)
    features = model.stem(x)
    assert features.shape == (4, 16, 150) and (features >= 0).all()  # even kernel keeps length
    model.eval()  # running statistics: one sample's features do not depend on the others
    assert torch.allclose(model.stem(x)[:1], model.stem(x[:1]), atol=1e-6)


def test_odenet1d_deeper_stem_needs_batch_norm():
    with pytest.raises(ValueError, match="stem_batch_norm: true"):
        create_model("odenet1d", stem_layers=2)


def test_registry_lists_the_new_models_with_documented_options():
    assert {"fcn", "resnet1d", "odenet1d", "odenet1d_parareal", "resnet18", "trajectory_node",
            "trajectory_node_parareal"} <= set(list_models())
    with pytest.raises(ValueError, match="has no option 'depth'"):
        create_model("fcn", depth=3)


@pytest.mark.parametrize("input_shape", [(1, 28, 28), (3, 32, 32)])
def test_resnet18_keeps_small_images_large_until_the_last_stage(input_shape):
    model = create_model("resnet18", num_classes=10, input_shape=input_shape)
    model.eval()
    x = torch.randn(2, *input_shape)
    assert model.stem[0].stride == (1, 1) and model.stem[0].kernel_size == (3, 3)
    assert model.block(model.stem(x)).shape[-1] == -(-input_shape[-1] // 8)  # 3 stride-2 stages
    assert model(x).shape == (2, 10) and model.nfe is None


def test_conv_vector_field_on_series_takes_scalar_or_per_sample_time():
    field = ConvVectorField(8, dims=1)
    x = torch.randn(3, 8, 20)
    same = field(torch.tensor(0.5), x)
    per_sample = field(torch.full((3,), 0.5), x)
    assert same.shape == x.shape and torch.allclose(same, per_sample)
    assert not torch.allclose(field(torch.tensor([0.0, 0.5, 1.0]), x)[0], same[0])
    with pytest.raises(ValueError, match="odd"):
        ConcatConv(4, 4, kernel_size=4, dims=1)


def test_trajectory_node_forecasts_at_the_observation_times():
    times = [0.1 * k for k in range(6)]
    model = create_model("trajectory_node", input_shape=(3, 2), times=times, augment=2, steps=2)
    forecast = model(torch.randn(4, 3, 2))
    assert forecast.shape == (4, 5, 2)
    assert model.nfe == 5 * 2 * 4  # 5 intervals, 2 RK4 steps each
    with pytest.raises(ValueError, match="strictly increasing"):
        create_model("trajectory_node", times=[0.0, 0.2, 0.1])
    with pytest.raises(ValueError, match="equally spaced"):
        create_model("trajectory_node_parareal", times=[0.0, 0.1, 0.3])


def test_parareal_forecaster_has_one_slice_per_forecast_time():
    times = [0.2 * k for k in range(8)]
    model = create_model("trajectory_node_parareal", input_shape=(1, 3), times=times)
    assert model.block.num_slices == 7
    assert model(torch.randn(5, 1, 3)).shape == (5, 7, 3)


def test_trajectory_node_without_augmentation_starts_from_the_last_observation():
    model = create_model("trajectory_node", input_shape=(2, 2), times=[0.0, 1e-4])
    history = torch.randn(3, 2, 2)
    assert torch.allclose(model(history)[:, 0], history[:, -1], atol=1e-2)
