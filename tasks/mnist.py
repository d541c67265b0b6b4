"""MNIST read as a sequence: one image, one scan order, one label.

    rnnbench run --task mnist-row --cell lstm_fused          # 28 steps of 28 pixels
    rnnbench run --task mnist-pixel --task mnist-permuted --cell gru_fused --budget smoke

Scans (every one a permutation of the 784 pixels, checked by the tests):
- mnist-row: rows top to bottom, 28 steps of 28 pixels;
- mnist-pixel: pixels in row-major order, 784 steps of 1 pixel;
- mnist-permuted: pixels under one fixed permutation (seed 0), 784 steps of 1 pixel;
- mnist-zigzag: the JPEG zigzag over anti-diagonals, 784 steps of 1 pixel;
- mnist-snake: rows, every other one reversed (boustrophedon), 784 steps of 1 pixel.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchmetrics
from torch import Tensor, nn

from cells import build_cell
from tasks.base import Baseline, Budget, ModelConfig, Task, last_state_features, register_task
from tasks.data import TensorBatches
from tasks.mnist_data import MNISTDataModule

SIDE = 28
PIXELS = SIDE * SIDE
MEAN, STD = 0.1307, 0.3081
PERMUTATION_SEED = 0
VALIDATION_SIZE = 5000
SPLIT_SEED = 0  # one validation split for every run, so that runs compare on the same images


def row_major() -> Tensor:
    return torch.arange(PIXELS)


def permuted(seed: int = PERMUTATION_SEED) -> Tensor:
    return torch.randperm(PIXELS, generator=torch.Generator().manual_seed(seed))


def zigzag(side: int = SIDE) -> Tensor:
    """JPEG order: anti-diagonal s = i + j; odd s runs down-left, even s up-right."""
    order = []
    for s in range(2 * side - 1):
        rows = range(max(0, s - side + 1), min(s, side - 1) + 1)  # i ascending
        rows = rows if s % 2 else reversed(rows)
        order.extend(i * side + (s - i) for i in rows)
    return torch.tensor(order)


def snake(side: int = SIDE) -> Tensor:
    grid = torch.arange(side * side).view(side, side)
    grid[1::2] = grid[1::2].flip(1)
    return grid.reshape(-1)


class MNISTScanData(MNISTDataModule):
    """Images scanned into (steps, features) sequences; validation split off the training set."""

    eval_batch_factor = 2

    def __init__(self, data_dir: Path | None, order: Tensor, steps: int, batch_size: int, download: bool = True):
        super().__init__(data_dir, batch_size, download)
        self.order, self.steps = order, steps

    def scan(self, images: Tensor) -> Tensor:
        pixels = (images.reshape(-1, PIXELS).float() / 255 - MEAN) / STD  # (N, 784)
        return pixels[:, self.order].view(len(images), self.steps, PIXELS // self.steps)  # (N, T, F)

    def build(self, mnist):
        train = TensorBatches(self.scan(mnist["train_images"]), mnist["train_labels"].long())
        generator = torch.Generator().manual_seed(SPLIT_SEED)
        train_set, val_set = torch.utils.data.random_split(
            train, [len(train) - VALIDATION_SIZE, VALIDATION_SIZE], generator=generator
        )
        return train_set, val_set, TensorBatches(self.scan(mnist["test_images"]), mnist["test_labels"].long())


class SequenceClassifier(nn.Module):
    """The cell as encoder, a linear classifier on the last layer's final h (both directions)."""

    def __init__(self, model: ModelConfig, input_size: int, classes: int):
        super().__init__()
        self.encoder = build_cell(
            model.cell, input_size, model.hidden_size, model.num_layers, model.bidirectional, model.dropout
        )
        self.head = nn.Linear(self.encoder.output_size, classes)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, F) -> (B, classes)
        _, state = self.encoder(x)
        return self.head(last_state_features(state, self.encoder.num_layers, self.encoder.num_directions))


class ConstantClass(nn.Module):
    """A baseline classifier: the same class for every input."""

    def __init__(self, label: int, classes: int):
        super().__init__()
        self.register_buffer("logits", nn.functional.one_hot(torch.tensor(label), classes).float())

    def forward(self, x: Tensor) -> Tensor:  # (B, T, F) -> (B, classes)
        return self.logits.expand(x.shape[0], -1)


class MNISTScanTask(Task):
    primary_metric = "accuracy"
    target = 90.0  # percent
    records_state_gradients = True
    higher_is_better = True

    def __init__(self, name: str, description: str, order: Tensor, steps: int, budgets: dict[str, Budget]):
        self.name, self.description, self.order, self.steps, self.budgets = name, description, order, steps, budgets

    def datamodule(self, data_dir, batch_size, budget, download=True, run_dir=None):
        return MNISTScanData(data_dir, self.order, self.steps, batch_size, download)

    def network(self, model: ModelConfig, datamodule=None, budget=None) -> nn.Module:
        return SequenceClassifier(model, PIXELS // self.steps, 10)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(output, target)

    def metrics(self) -> torchmetrics.MetricCollection:
        return torchmetrics.MetricCollection({"accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=10)})

    def baselines(self, datamodule):
        train = datamodule.train_set  # a Subset of the training TensorBatches
        labels = train.dataset.tensors[1][torch.as_tensor(train.indices)]
        majority = int(torch.bincount(labels, minlength=10).argmax())
        return [Baseline("majority class", f"always the training split's most frequent digit ({majority})",
                         ConstantClass(majority, 10))]

    def config(self):
        return {**super().config(), "steps": self.steps, "features": PIXELS // self.steps,
                "validation_size": VALIDATION_SIZE, "split_seed": SPLIT_SEED}


ROW_BUDGETS = {
    "smoke": Budget(max_epochs=1, batch_size=32, hidden_size=16, lr=3e-3, train_batches=8, val_batches=2, test_batches=2,
                    note="8 training batches: checks the path, not accuracy"),
    "quick": Budget(max_epochs=4, batch_size=128, hidden_size=128, lr=3e-3, note="4 epochs, minutes on a laptop CPU"),
    "paper": Budget(max_epochs=30, batch_size=128, hidden_size=128, lr=1e-3, note="30 epochs"),
}
PIXEL_BUDGETS = {
    "smoke": Budget(max_epochs=1, batch_size=16, hidden_size=16, lr=3e-3, train_batches=3, val_batches=1, test_batches=1,
                    note="3 training batches: checks the path, not accuracy"),
    "quick": Budget(max_epochs=1, batch_size=64, hidden_size=64, lr=3e-3, train_batches=200, val_batches=10,
                    note="200 training batches of 784 steps: far from converged"),
    # The protocol of Cooijmans et al. 2016 ("Recurrent Batch Normalization", their LSTM baseline on
    # sequential and permuted MNIST: 98.9 % / 90.2 %): RMSprop lr 1e-3 (smoothing 0.9), gradient norm
    # clipped at 1, batch 100, orthogonal recurrent weights, forget-gate bias 1, constant lr. They
    # train 200 epochs with hidden 100 and inputs in [0, 1]; here hidden 128 (Arjovsky et al. 2016,
    # Le et al. 2015), 100 epochs, inputs standardised as for every scan. AdamW 1e-3 with cosine
    # decay and torch's initialisation left the LSTM at the majority class for 8 epochs on a GPU.
    "paper": Budget(max_epochs=100, batch_size=100, hidden_size=128, lr=1e-3, optimizer="rmsprop", schedule="constant",
                    orthogonal_init=True, forget_bias=1.0,
                    note="100 epochs, hidden 128, batch 100, RMSprop 1e-3, clip 1, orthogonal recurrent weights, "
                         "forget bias 1 (Cooijmans et al. 2016)"),
}

register_task(MNISTScanTask("mnist-row", "MNIST, 28 steps of one 28-pixel row", row_major(), SIDE, ROW_BUDGETS))
register_task(MNISTScanTask("mnist-pixel", "MNIST, 784 steps of one pixel, row-major", row_major(), PIXELS, PIXEL_BUDGETS))
register_task(MNISTScanTask("mnist-permuted", "MNIST, 784 pixels under one fixed permutation", permuted(), PIXELS, PIXEL_BUDGETS))
register_task(MNISTScanTask("mnist-zigzag", "MNIST, 784 pixels in JPEG zigzag order", zigzag(), PIXELS, PIXEL_BUDGETS))
register_task(MNISTScanTask("mnist-snake", "MNIST, 784 pixels, rows alternately reversed", snake(), PIXELS, PIXEL_BUDGETS))
