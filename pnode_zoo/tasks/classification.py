"""Classification task: any registered model, cross-entropy, accuracy, AdamW + cosine schedule."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from pnode_zoo.errors import UserInputError
from pnode_zoo.tasks.base import Task
from pnode_zoo.training.figures import confusion_figure
from pnode_zoo.training.panels import CONFUSION_MATRIX

__all__ = ["Classifier"]


class Classifier(Task):
    """Train a registered model (``python -m pnode_zoo models``) to classify images or series.

    Args:
        arch: registered model name, e.g. ``odenet``, ``odenet_parareal`` or ``resnet``.
        arch_args: options of that model (``python -m pnode_zoo models NAME`` lists them).
        pretrained: a pretrained name to start from (``python -m pnode_zoo pretrained list``):
            its card's architecture and weights replace ``arch``; ``arch_args`` override the
            card's options (a new head where the number of classes differs).
        num_classes: number of classes (linked from the data module by the CLI).
        input_shape: shape of one input sample (linked from the data module by the CLI).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_epochs: epochs of linear learning-rate warm-up before the cosine decay.
        label_smoothing: label smoothing of the cross-entropy loss.
    """

    def __init__(
        self,
        arch: str = "odenet_parareal",
        arch_args: dict[str, Any] | None = None,
        pretrained: str | None = None,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 8, 8),
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        warmup_epochs: int = 0,
        label_smoothing: float = 0.0,
    ) -> None:
        self.check_optimiser_options(lr, weight_decay, warmup_epochs)
        if not 0 <= label_smoothing < 1:
            raise UserInputError(f"model.label_smoothing must lie in [0, 1), got {label_smoothing}")
        super().__init__(
            arch, arch_args, pretrained, num_classes=num_classes, input_shape=tuple(input_shape)
        )
        self.save_hyperparameters()
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.accuracy = nn.ModuleDict(
            {f"{split}_acc": MulticlassAccuracy(num_classes, average="micro")
             for split in ("train", "val", "test")}
        )
        self.confusion = nn.ModuleDict(
            {split: MulticlassConfusionMatrix(num_classes) for split in ("val", "test")}
        )
        self.takes_index = "index" in inspect.signature(self.net.forward).parameters

    def logits(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """The network's logits for a batch (inputs, labels) or (inputs, labels, index); the
        index (each sample's key in its data set) goes to networks whose forward takes one."""
        inputs, _, *index = batch
        if index and self.takes_index:
            return self.net(inputs, index=index[0])
        return self(inputs)

    def _step(self, batch: Sequence[torch.Tensor], split: str) -> torch.Tensor:
        labels = batch[1]
        logits = self.logits(batch)
        loss = self.loss(logits, labels)
        accuracy = self.accuracy[f"{split}_acc"]
        accuracy(logits, labels)
        if split in self.confusion:
            self.confusion[split].update(logits.detach(), labels)
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
                 sync_dist=True)
        self.log(f"{split}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        self.log_nfe(split)
        return loss

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int):
        return self._step(batch, "train")

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int):
        self._step(batch, "val")

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int):
        self._step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.confusion["val"].reset()

    def on_test_epoch_start(self) -> None:
        self.confusion["test"].reset()

    def figures(self, split: str) -> dict[str, Figure]:
        """The confusion matrix of the validation or test epoch."""
        matrix = self.confusion[split].compute()
        name = {"val": "validation", "test": "test"}[split]
        return {CONFUSION_MATRIX: confusion_figure(matrix, f"{name} confusion matrix")}

    def predict_step(self, batch: Sequence[torch.Tensor],
                     batch_idx: int) -> dict[str, torch.Tensor]:
        probability, prediction = self.logits(batch).softmax(dim=-1).max(dim=-1)
        return {"target": batch[1], "prediction": prediction, "probability": probability}

    def prediction_rows(self, outputs: list[dict[str, torch.Tensor]],
                        datamodule: Any) -> list[dict[str, Any]]:
        """One row per sample: ``sample`` (its position in the predicted split), ``index`` (in
        the source data, where the data module knows it), ``target``, ``prediction`` (class
        indices), ``probability`` (of the predicted class) and ``class`` (its name, where the
        data module has ``classes``)."""
        columns = {key: torch.cat([o[key] for o in outputs]).tolist() for key in outputs[0]}
        indices = getattr(datamodule, "indices", {}).get("test")
        classes = getattr(datamodule, "classes", None)
        rows = []
        for sample, (target, prediction, probability) in enumerate(
                zip(columns["target"], columns["prediction"], columns["probability"], strict=True)):
            row: dict[str, Any] = {"sample": sample}
            if indices is not None and len(indices) >= len(columns["target"]):
                row["index"] = int(indices[sample])
            row.update(target=target, prediction=prediction, probability=round(probability, 6))
            if classes is not None:
                row["class"] = classes[prediction]
            rows.append(row)
        return rows
