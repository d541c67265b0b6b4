"""The density benchmark of PixelRNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent
Neural Networks", section 5): binarized MNIST modelled pixel by pixel, test negative log-likelihood
in nats per image (lower is better).

    rnnbench run --task mnist-density --cell lstm_fused --cell gru_fused --data-dir ../shared/data
    rnnbench run --task mnist-density -o scan=diagonal --cell lstm_fused --data-dir ../shared/data

The images are binarized once, every pixel drawn from a Bernoulli of its intensity with a fixed
seed (the stochastic binarization behind the paper's figures; a 0.5 threshold gives an easier
data set whose numbers compare with nothing). The network (the paper's Figure 2 and Table 1): a
7 x 7 convolution with mask A to 2h channels; `--layers` two-dimensional scans (`-o scan=row`, the
default, or `diagonal`; `cells.scan2d`) of h units with the chosen cell's gating, their
input-to-state convolutions masked with mask B, each followed by a 1 x 1 convolution back to 2h
channels and added to its input (the residual connection); ReLU, a 1 x 1 convolution, ReLU, a
1 x 1 convolution to one logit per pixel. p(x) is the product over pixels in raster order of the
sigmoid of the logit, each depending only on the pixels before it (mask A sees none of the
pixel's own value; the scans' states only those before it): the loss is the binary
cross-entropy summed over the 784 pixels, -log p(x) in nats.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
import torchmetrics
from torch import Tensor, nn

from cells.scan2d import SCANS, MaskedConv2d
from reports import figures
from tasks.base import Baseline, Budget, ModelConfig, Option, Published, Task, one_of, register_task
from tasks.data import TensorBatches
from tasks.mnist import SIDE, SPLIT_SEED, VALIDATION_SIZE
from tasks.mnist_data import MNISTDataModule
from tasks.pixelrnn import check_scan_model

BINARIZATION_SEED = 0
SAMPLE_SEED = 0
SAMPLES = 16  # a 4 x 4 grid per run
FIRST_KERNEL = 7


def binarized(images: Tensor, seed: int = BINARIZATION_SEED) -> Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float 0/1, each pixel drawn once from Bernoulli(intensity)."""
    return torch.bernoulli(images.float().div(255).unsqueeze(1), generator=torch.Generator().manual_seed(seed))


class BinarizedMNIST(MNISTDataModule):
    """Binarized images as both input and target; the validation split of the other MNIST tasks."""

    def build(self, mnist):
        train = binarized(mnist["train_images"])
        train_set, val_set = torch.utils.data.random_split(
            TensorBatches(train, train), [len(train) - VALIDATION_SIZE, VALIDATION_SIZE],
            generator=torch.Generator().manual_seed(SPLIT_SEED))
        test = binarized(mnist["test_images"])
        return train_set, val_set, TensorBatches(test, test)


class PixelRNN(nn.Module):
    """x (B, 1, H, W) of 0/1 -> one logit per pixel (B, 1, H, W), each of the pixels before it only."""

    def __init__(self, model: ModelConfig, scan: str):
        super().__init__()
        h = model.hidden_size
        self.first = MaskedConv2d(1, 2 * h, FIRST_KERNEL, "A")
        self.scans = nn.ModuleList(SCANS[scan](model.cell, 2 * h, h, masked=True) for _ in range(model.num_layers))
        self.up = nn.ModuleList(nn.Conv2d(h, 2 * h, 1) for _ in range(model.num_layers))
        self.drop = nn.Dropout(model.dropout)
        # 1 x 1 convolutions need no mask for one input channel: they see the pixel's own features only
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * h, 2 * h, 1), nn.ReLU(), nn.Conv2d(2 * h, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        features = self.first(x)
        for index, (scan, up) in enumerate(zip(self.scans, self.up)):
            features = features + up(scan(self.drop(features) if index else features))
        return self.head(features)


def image_nll(logits: Tensor, target: Tensor) -> Tensor:
    """-log p(x) in nats for each image: (B, 1, H, W) each -> (B,)."""
    return nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)


class ImageNLL(torchmetrics.Metric):
    """The mean over images of -log p(x), in nats."""

    higher_is_better = False
    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        self.total += image_nll(logits.double(), target.double()).sum()
        self.images += len(target)

    def compute(self) -> Tensor:
        return self.total / self.images


class IndependentPixels(nn.Module):
    """A baseline density: every pixel an independent Bernoulli at its training frequency."""

    def __init__(self, frequency: Tensor):  # (1, H, W)
        super().__init__()
        self.register_buffer("logits", torch.logit(frequency))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(x.shape[0], -1, -1, -1)


def independent_pixels(datamodule: BinarizedMNIST) -> Baseline:
    train = datamodule.train_set  # a Subset of the training TensorBatches
    images = train.dataset.tensors[0][torch.as_tensor(train.indices)]
    # add-one smoothing: a pixel never on in training (a corner) must not make a test image impossible
    frequency = (images.sum(0) + 1) / (len(images) + 2)
    return Baseline("independent pixels", "every pixel an independent Bernoulli at its training frequency "
                    "(add-one smoothed)", IndependentPixels(frequency))


@torch.no_grad()
def sample(network: nn.Module, count: int, seed: int = SAMPLE_SEED, side: int = SIDE) -> Tensor:
    """`count` images drawn pixel by pixel in raster order from the network's conditionals. The
    network sees rows up to the current one only: its outputs there do not depend on later rows
    (the tests check it), and the first rows cost less."""
    device = next(itertools.chain(network.parameters(), network.buffers())).device
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 1, side, side, device=device)
    for i in range(side):
        for j in range(side):
            p = torch.sigmoid(network(images[:, :, : i + 1])[:, 0, i, j]).cpu()
            images[:, 0, i, j] = torch.bernoulli(p.double(), generator=generator).to(images)
    return images.cpu()


def save_grid(images: Tensor, path: Path, columns: int = 4) -> Path:
    plt = figures.pyplot()
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.9), dpi=80, squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index < len(images):
            ax.imshow(images[index, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    return figures.save(fig, path, pad=0.2)


class DensityTask(Task):
    name = "mnist-density"
    description = "binarized MNIST modelled pixel by pixel (PixelRNN), test NLL in nats per image"
    primary_metric = "nll"
    higher_is_better = False
    target = 100.0  # nats, on validation
    options = {"scan": Option("row", one_of(tuple(SCANS)), f"the two-dimensional scan: {' or '.join(SCANS)}", model_only=True)}

    def __init__(self, budgets: dict[str, Budget], published: tuple[Published, ...]):
        self.budgets, self.published = budgets, published

    def check_model(self, model):
        check_scan_model(model)

    def datamodule(self, data_dir, batch_size, budget, download=True, run_dir=None):
        return BinarizedMNIST(data_dir, batch_size, download)

    def network(self, model, datamodule=None, budget=None):
        return PixelRNN(model, self.settings["scan"])

    def loss(self, output, target):
        return image_nll(output, target).mean()

    def metrics(self):
        return torchmetrics.MetricCollection({"nll": ImageNLL()})

    def baselines(self, datamodule):
        return [independent_pixels(datamodule)]

    def artifacts(self, network, datamodule, out):
        """A grid of images sampled from the trained network."""
        network.eval()
        path = Path(out) / "samples.png"
        save_grid(sample(network, SAMPLES), path)
        return {"pictures": [{"path": str(path), "sampled": True,
                              "caption": f"{SAMPLES} images sampled pixel by pixel from the network that was tested "
                                         f"(seed {SAMPLE_SEED})"}]}

    def config(self):
        return {**super().config(), "image": [1, SIDE, SIDE], "binarization_seed": BINARIZATION_SEED,
                "first_kernel": FIRST_KERNEL, "validation_size": VALIDATION_SIZE, "split_seed": SPLIT_SEED}


BUDGETS = {
    "smoke": Budget(max_epochs=1, batch_size=16, hidden_size=4, lr=3e-3, train_batches=3, val_batches=1, test_batches=1,
                    note="3 training batches: checks the path, not the density"),
    # h 16 (12.6K parameters with the Row LSTM), lr 3e-3, batch 64, clipping at 1: a bare loop of this
    # network reached 97.3 nats on validation after 1 minute and 90.1 after 7.8 on 2 cores; an epoch of
    # the Row LSTM takes about 1.7 minutes here (115 ms a step), of the Diagonal LSTM 3.3
    "quick": Budget(max_epochs=4, batch_size=64, hidden_size=16, lr=3e-3, forget_bias=1.0,
                    note="4 epochs, h 16 (2h = 32 channels between the layers), AdamW 3e-3 with cosine decay, "
                         "clip 1, the LSTM's forget-gate bias 1"),
    # The paper's MNIST model: a Diagonal BiLSTM of 7 layers with h = 16 (section 5.5; --layers 7), RMSProp
    # ("RMSProp gives best convergence performance and is used for all experiments", section 5.2), batches of
    # 16 images for MNIST. The paper gives no learning rate or epoch count: 1e-3 and 20 are this budget's.
    "paper": Budget(max_epochs=20, batch_size=16, hidden_size=16, lr=1e-3, optimizer="rmsprop", schedule="constant",
                    task_options=(("scan", "diagonal"),),
                    note="the paper's MNIST model with --layers 7: Diagonal scans, h 16, RMSProp 1e-3, batch 16, "
                         "20 epochs, clip 1"),
}
PAPER = "van den Oord, Kalchbrenner & Kavukcuoglu 2016, binarized MNIST table (arXiv 1601.06759)"
PUBLISHED = (
    Published("Diagonal BiLSTM (7 layers, h = 16)", 79.20, PAPER, budget=None),
    Published("PixelCNN", 81.30, PAPER, budget=None),
    Published("DRAW (an upper bound)", 80.97, f"Gregor et al. 2015, as cited by {PAPER}", budget=None),
)

register_task(DensityTask(BUDGETS, PUBLISHED))
