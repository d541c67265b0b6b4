"""Semantic segmentation with ReNet sweeps (Visin et al. 2015, 2016: ReNet / ReSeg).

    rnnbench run --task segmentation-mnist-scenes --cell lstm_fused --cell gru_handwritten

Scenes (like the M2NIST data set): 1 to 3 MNIST digits placed at random on a 64x84 canvas,
overlaps taking the brighter pixel; each pixel is labelled with the class of the digit whose
stroke covers it (digit value + 1; a later digit wins an overlap) or 0 for background: 11
classes. A pixel belongs to a digit's stroke where that digit's intensity is above one half.
Training and validation scenes use training digits (the last 5,000 for validation), test scenes
test digits only; scene i of a split is a function of (split, i) alone.

The network is one ReNet layer: the image is cut into 4x4 patches, each column of patches is
swept by a bidirectional RNN of the chosen cell (vertical sweep), each row of the result by a
second bidirectional RNN (horizontal sweep); a transposed convolution upsamples the features
to the pixels (as ReSeg's upsampling layers do), and a 3x3 convolution over them and the image
gives per-pixel class scores: the sweeps say which digit is where, the image where its stroke
is. The sweeps are always bidirectional, as in ReNet.
Loss: per-pixel cross-entropy with the background class weighted 0.1 (it covers about 96 % of
the pixels). Metrics: mean IoU over the 11 classes (torchmetrics JaccardIndex) and pixel
accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchmetrics
from torch import Tensor, nn

from cells import build_cell
from reports import figures
from tasks.base import Baseline, Budget, Splits, ModelConfig, Task, register_task
from tasks.data import GeneratedBatches
from tasks.mnist_data import MNISTDataModule

HEIGHT, WIDTH = 64, 84
DIGIT = 28
CLASSES = 11  # background + 10 digits
STROKE = 0.5  # a digit pixel above this intensity carries the digit's label
PATCH = 4
SPLIT_SEEDS = {"train": 11, "val": 12, "test": 13}
VALIDATION_DIGITS = 5000
BACKGROUND_WEIGHT = 0.1  # of the background class in the loss
UPSAMPLED = 16  # feature channels after the transposed convolution


def make_scene(images: Tensor, labels: Tensor, rng: np.random.Generator):
    """(image (64, 84) in [0, 1], label map (64, 84) int64, placements [(digit index, row, col)])."""
    image = np.zeros((HEIGHT, WIDTH), dtype=np.float32)
    label = np.zeros((HEIGHT, WIDTH), dtype=np.int64)
    placed = []
    for _ in range(rng.integers(1, 4)):
        index = int(rng.integers(len(images)))
        digit = images[index].numpy().astype(np.float32) / 255
        row, col = int(rng.integers(0, HEIGHT - DIGIT + 1)), int(rng.integers(0, WIDTH - DIGIT + 1))
        window = image[row : row + DIGIT, col : col + DIGIT]
        np.maximum(window, digit, out=window)
        label[row : row + DIGIT, col : col + DIGIT][digit > STROKE] = int(labels[index]) + 1
        placed.append((index, row, col))
    return torch.from_numpy(image), torch.from_numpy(label), placed


class Scenes(GeneratedBatches):
    """`count` scenes made from the digit pool; scene i depends only on (seed, i)."""

    def __init__(self, images: Tensor, labels: Tensor, count: int, seed: int):
        self.images, self.labels, self.count, self.seed = images, labels, count, seed

    def __len__(self) -> int:
        return self.count

    def scene(self, index: int):
        return make_scene(self.images, self.labels, np.random.default_rng([self.seed, index]))

    def generate(self, index: int) -> tuple[Tensor, Tensor]:
        image, label, _ = self.scene(index)
        # exactly: every pixel is a digit's uint8 value / 255, and 11 classes fit a byte
        return torch.round(image * 255).to(torch.uint8), label.to(torch.uint8)  # (64, 84) each

    def decode(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return (images.float() / 255)[:, None], labels.long()  # (B, 1, 64, 84), (B, 64, 84)


class ScenesData(MNISTDataModule):
    def __init__(self, data_dir, batch_size: int, sizes: Splits, download: bool):
        super().__init__(data_dir, batch_size, download)
        self.sizes = sizes

    def build(self, mnist):
        cut = len(mnist["train_images"]) - VALIDATION_DIGITS
        pools = {"train": (mnist["train_images"][:cut], mnist["train_labels"][:cut]),
                 "val": (mnist["train_images"][cut:], mnist["train_labels"][cut:]),
                 "test": (mnist["test_images"], mnist["test_labels"])}
        return tuple(Scenes(*pools[s], getattr(self.sizes, s), SPLIT_SEEDS[s]) for s in ("train", "val", "test"))


class ReNetSegmenter(nn.Module):
    def __init__(self, model: ModelConfig, patch: int = PATCH, classes: int = CLASSES):
        super().__init__()
        hidden = model.hidden_size
        self.patch = patch
        self.vertical = build_cell(model.cell, patch * patch, hidden, model.num_layers, True, model.dropout)
        self.horizontal = build_cell(model.cell, 2 * hidden, hidden, model.num_layers, True, model.dropout)
        self.upsample = nn.ConvTranspose2d(2 * hidden, UPSAMPLED, kernel_size=patch, stride=patch)
        # per-pixel scores from the upsampled features and the pixel's neighbourhood (a 1x1
        # convolution instead cost the GRU 10 points of mIoU on the quick budget)
        self.classify = nn.Conv2d(UPSAMPLED + 1, classes, kernel_size=3, padding=1)

    def forward(self, image: Tensor) -> Tensor:  # (B, 1, H, W) -> class scores (B, classes, H, W)
        b, p = image.shape[0], self.patch
        rows, cols = image.shape[2] // p, image.shape[3] // p
        patches = image.view(b, rows, p, cols, p).permute(0, 1, 3, 2, 4).reshape(b, rows, cols, p * p)
        # vertical sweep: every column of patches is a sequence over the rows
        columns = patches.permute(0, 2, 1, 3).reshape(b * cols, rows, p * p)
        swept, _ = self.vertical(columns)  # (B*cols, rows, 2H)
        swept = swept.view(b, cols, rows, -1).permute(0, 2, 1, 3)  # (B, rows, cols, 2H)
        # horizontal sweep: every row of the result is a sequence over the columns
        swept, _ = self.horizontal(swept.reshape(b * rows, cols, -1))  # (B*rows, cols, 2H)
        upsampled = self.upsampled(swept.view(b, rows, cols, -1))  # (B, H, W, UPSAMPLED)
        # channels-last: the convolution reads (B, H, W, C) memory as an NCHW tensor, no copy
        pixels = torch.cat([upsampled, image.permute(0, 2, 3, 1)], dim=-1).permute(0, 3, 1, 2)
        return self.classify(pixels)

    def upsampled(self, features: Tensor) -> Tensor:
        """The transposed convolution (kernel = stride = patch: each patch's features map to its own
        p x p pixels, no overlap) as one matrix product, then ReLU: (B, rows, cols, 2H) -> (B, H, W, C).

        The same weights and the same sums as `self.upsample(features)`, in channels-last order;
        on a 2-core CPU the oneDNN transposed convolution took 47 ms forward and backward at
        batch 32 against 27 ms for the product, and the 3x3 convolution after it 60 ms on NCHW
        input against 32 ms on channels-last input."""
        b, rows, cols, _ = features.shape
        p, channels = self.patch, self.upsample.out_channels
        pixels = (features @ self.upsample.weight.flatten(1)).view(b, rows, cols, channels, p, p)
        pixels = pixels.permute(0, 1, 4, 2, 5, 3).reshape(b, rows * p, cols * p, channels)
        return torch.relu(pixels + self.upsample.bias)


class AllBackground(nn.Module):
    """A baseline segmenter: every pixel is background."""

    def forward(self, image: Tensor) -> Tensor:  # (B, 1, H, W) -> class scores (B, classes, H, W)
        scores = image.new_zeros(image.shape[0], CLASSES, *image.shape[2:])
        scores[:, 0] = 1.0
        return scores


class SegmentationTask(Task):
    name = "segmentation-mnist-scenes"
    version = 3  # part of run identity: raised when what the task computes changes
    description = "scenes of 1-3 MNIST digits, per-pixel class (11), ReNet sweeps of the cell"
    primary_metric = "miou"
    target = 40.0  # percent: the quick floor for LSTM and GRU
    higher_is_better = True
    budgets = {
        "smoke": Budget(max_epochs=1, batch_size=8, hidden_size=16, lr=3e-3, train_batches=4, val_batches=1, test_batches=2,
                        sizes=Splits(train=64, val=16, test=32),
                        note="4 training batches: checks the path, not quality"),
        # 6 epochs to fit the quick time; the LSTM learns slowest, so it starts keeping its memory
        # (forget-gate bias 1, Jozefowicz et al. 2015) and steps harder (lr 1e-2): measurements in
        # docs/results.md
        "quick": Budget(max_epochs=6, batch_size=32, hidden_size=64, lr=1e-2, forget_bias=1.0,
                        sizes=Splits(train=4000, val=500, test=2000),
                        note="6 epochs of 4,000 scenes, lr 1e-2, LSTM forget-gate bias 1"),
        "paper": Budget(max_epochs=50, batch_size=32, hidden_size=128, lr=1e-3, sizes=Splits(train=20000, val=2000, test=10000),
                        note="50 epochs of 20,000 scenes"),
    }

    def datamodule(self, data_dir, batch_size, budget, download=True, run_dir=None):
        return ScenesData(data_dir, batch_size, budget.sizes, download)

    def network(self, model, datamodule=None, budget=None):
        return ReNetSegmenter(model)

    def loss(self, scores, target):
        # background covers ~96 % of the pixels: weighted down so that the digits are learnt early
        weight = torch.ones(CLASSES, device=scores.device)
        weight[0] = BACKGROUND_WEIGHT
        return nn.functional.cross_entropy(scores, target, weight=weight)

    def metrics(self):
        return torchmetrics.MetricCollection({
            "miou": torchmetrics.JaccardIndex(task="multiclass", num_classes=CLASSES, average="macro"),
            "pixel_accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=CLASSES, average="micro"),
        })

    def baselines(self, datamodule):
        return [Baseline("all background", "every pixel labelled background", AllBackground())]

    def artifacts(self, network, datamodule, out):
        datamodule.setup("test")
        images, labels = (torch.stack(x) for x in zip(*(datamodule.test_set[i] for i in range(4))))
        network.eval()
        with torch.no_grad():
            predicted = network(images.to(next(network.parameters()).device)).argmax(1).cpu()
        path = Path(out) / "segmentation-masks.png"
        save_masks(images, labels, predicted, path)
        return {"pictures": [{"path": str(path), "caption": "columns: scene, true mask, predicted mask; four test scenes"}]}

    def config(self):
        return {**super().config(), "canvas": [HEIGHT, WIDTH], "classes": CLASSES, "patch": PATCH,
                "background_weight": BACKGROUND_WEIGHT,
                "stroke_threshold": STROKE, "sizes": self.split_sizes()}


def save_masks(images: Tensor, labels: Tensor, predicted: Tensor, path: Path) -> Path:
    plt = figures.pyplot()

    fig, axes = plt.subplots(len(images), 3, figsize=(6, 1.6 * len(images)), dpi=80)
    for r in range(len(images)):
        for c, (picture, kw) in enumerate([(images[r, 0], {"cmap": "gray", "vmin": 0, "vmax": 1}),
                                            (labels[r], {"cmap": "tab20", "vmin": 0, "vmax": 19}),
                                            (predicted[r], {"cmap": "tab20", "vmin": 0, "vmax": 19})]):
            axes[r, c].imshow(picture.numpy(), interpolation="nearest", **kw)
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title(["scene", "true", "predicted"][c], fontsize=8)
    return figures.save(fig, path, pad=0.2)


register_task(SegmentationTask())
