"""Training stops, naming the step, before a NaN or infinite loss or gradient updates a weight."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pnode_zoo.training.finite import StopOnNonFinite

BAD_BATCH = 3


class Regression(pl.LightningModule):
    """A linear model whose loss (or one gradient) turns non-finite at batch BAD_BATCH."""

    def __init__(self, poison: str) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.poison = poison
        self.weights_before: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        self.weights_before[batch_idx] = self.layer.weight.detach().clone()
        x, y = batch
        loss = (self.layer(x) - y).square().mean()
        if batch_idx == BAD_BATCH and self.poison == "loss":
            loss = loss * float("nan")
        if batch_idx == BAD_BATCH and self.poison == "gradient":
            self.layer.bias.register_hook(lambda grad: grad * float("inf"))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("poison", "message"),
    [("loss", "the training loss is NaN or infinite"),
     ("gradient", "the gradient of layer.bias (and 0 more) is NaN or infinite")],
)
def test_training_stops_before_the_step_that_would_use_it(tmp_path, poison, message) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 2), torch.randn(64, 1))
    model = Regression(poison)
    trainer = pl.Trainer(max_epochs=1, callbacks=[StopOnNonFinite()], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(FloatingPointError) as error:
        trainer.fit(model, DataLoader(data, batch_size=8))
    assert message in str(error.value)
    assert f"epoch 0, batch {BAD_BATCH} (global step {BAD_BATCH})" in str(error.value)
    # the earlier steps changed the weights; the poisoned one did not
    assert not torch.equal(model.weights_before[0], model.weights_before[BAD_BATCH])
    assert torch.equal(model.layer.weight, model.weights_before[BAD_BATCH])
    assert torch.isfinite(model.layer.weight).all() and torch.isfinite(model.layer.bias).all()


@pytest.mark.slow
def test_the_cli_stops_a_diverging_fit_in_one_line(cli, tmp_path) -> None:
    # lr 1e30: the first step throws the weights to ~1e30; the second forward pass overflows in
    # the parareal block, which names the slice and iteration, and the CLI names the step.
    result = cli(["fit", "--model.init_args.lr=1e30", "--trainer.logger=false",
                  "--trainer.max_epochs=1", "--trainer.limit_train_batches=4",
                  "--trainer.limit_val_batches=1"])
    assert result.returncode == 1, result.stderr[-2000:]
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: training stopped: ")
    assert "non-finite" in error or "NaN" in error
    assert "global step 1)" in error
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("runs/**/*.ckpt"))  # no epoch ended: nothing was saved
