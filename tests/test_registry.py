import math

import pytest
import torch

import pnode_zoo
from pnode_zoo.models import register_model
from pnode_zoo.ode import ODEBlock


def test_list_models_has_baselines_and_filters():
    names = pnode_zoo.list_models()
    assert {"odenet", "resnet"} <= set(names)
    assert names == sorted(names)
    assert pnode_zoo.list_models("odenet_*") == ["odenet_parareal"]


@pytest.mark.parametrize("name", ["odenet", "resnet"])
def test_create_model_classifies_images(name):
    model = pnode_zoo.create_model(name, num_classes=7, input_shape=(1, 8, 8))
    logits = model(torch.randn(5, 1, 8, 8))
    assert logits.shape == (5, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_odenet_downsampling_stem_handles_28x28():
    model = pnode_zoo.create_model("odenet", input_shape=(1, 28, 28), downsample=2, width=16)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(("width", "groups"), [(16, 16), (48, 24), (64, 32)])
def test_odenet_builds_at_widths_not_divisible_by_32(width, groups):
    model = pnode_zoo.create_model("odenet", width=width)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == groups for m in norms)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_odenet_reports_function_evaluations():
    model = pnode_zoo.create_model("odenet", method="rk4", steps=3)
    model(torch.randn(2, 1, 8, 8))
    assert model.nfe == 3 * 4  # four stages per RK4 step


def test_unknown_model_and_option_are_value_errors():
    with pytest.raises(ValueError, match="unknown model 'nope'; known models: .*odenet"):
        pnode_zoo.create_model("nope")
    with pytest.raises(ValueError, match="has no option 'depth'.*num_blocks"):
        pnode_zoo.create_model("resnet", depth=3)


def test_register_model_refuses_duplicates():
    def resnet():  # same name as a registered entry
        raise AssertionError

    with pytest.raises(ValueError, match="registered twice"):
        register_model(resnet)


class Decay(torch.nn.Module):
    def forward(self, t, x):
        return -x


def test_odeint_block_matches_analytic_solution():
    block = ODEBlock(Decay(), t0=0.0, t1=2.0, method="rk4", steps=20).double()
    x0 = torch.tensor([[1.0, -3.0]], dtype=torch.float64)
    assert torch.allclose(block(x0), x0 * math.exp(-2.0), rtol=1e-5)
    adaptive = ODEBlock(Decay(), t1=2.0, method="dopri5", rtol=1e-9, atol=1e-10)
    assert torch.allclose(adaptive(x0), x0 * math.exp(-2.0), rtol=1e-7)


def test_odeint_block_rejects_bad_arguments():
    with pytest.raises(ValueError, match="t1 must be greater than t0"):
        ODEBlock(Decay(), t0=1.0, t1=1.0)
    with pytest.raises(ValueError, match="unknown ODE method 'rk5'.*dopri5"):
        ODEBlock(Decay(), method="rk5")


def test_the_registry_sends_pretrained_names_to_the_hub() -> None:
    from pnode_zoo.models import create_model

    with pytest.raises(ValueError, match=r"pretrained names \(<architecture>.<data>\) go to "
                                         r"pnode_zoo.create_model"):
        create_model("odenet.digits")
