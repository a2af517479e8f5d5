import inspect
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


TWINS = [("odenet", "odenet_parareal"), ("odenet1d", "odenet1d_parareal"),
         ("trajectory_node", "trajectory_node_parareal"), ("ncde", "ncde_parareal")]


def _documented(name: str) -> dict[str, str]:
    """``Args:`` entries of a model's docstring: name -> description (continuations joined)."""
    entries: dict[str, str] = {}
    key = ""
    lines = inspect.getdoc(pnode_zoo.models.model_entry(name)).partition("Args:\n")[2]
    for line in lines.splitlines():
        if line.startswith("        "):
            entries[key] += " " + line.strip()
        else:
            key, _, text = line.strip().partition(": ")
            entries[key] = text
    return entries


@pytest.mark.parametrize(("plain", "parareal"), TWINS)
def test_twins_document_every_option_and_share_the_common_ones(plain, parareal):
    docs = {name: _documented(name) for name in (plain, parareal)}
    options = {name: inspect.signature(pnode_zoo.models.model_entry(name)).parameters
               for name in (plain, parareal)}
    for name in (plain, parareal):  # every option, with a description, in the signature's order
        assert list(docs[name]) == list(options[name])
        assert all(len(text) > 10 for text in docs[name].values())
    shared = [key for key in options[plain] if key in options[parareal]]
    assert len(shared) >= 4 and shared == [key for key in options[parareal] if key in shared]
    for key in shared:
        assert docs[plain][key] == docs[parareal][key]
        assert options[plain][key].default == options[parareal][key].default
    assert "parareal" in options[parareal] and "parareal" not in options[plain]


@pytest.mark.parametrize(("plain", "parareal"), TWINS)
def test_a_twins_options_reach_its_network_and_others_are_refused(plain, parareal):
    with pytest.raises(ValueError, match=f"model '{plain}' has no option 'parareal'"):
        pnode_zoo.create_model(plain, parareal={})
    with pytest.raises(TypeError, match="unexpected options: parareal"):
        pnode_zoo.models.model_entry(plain)(parareal={})
    net = pnode_zoo.create_model(parareal, parareal={"num_slices": 2, "max_iters": 1})
    block = next(m for m in net.modules() if hasattr(m, "options"))
    assert (block.options.num_slices, block.options.max_iters) == (2, 1)
