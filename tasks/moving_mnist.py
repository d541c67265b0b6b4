"""Video: Moving MNIST (Srivastava et al. 2015), from the first 10 frames predict the next 10.

    rnnbench run --task video-moving-mnist --cell lstm_fused --cell gru_fused
    rnnbench run --task video-moving-mnist --cell lstm_handwritten -o frame_step=2 -o frames=conv

Each sequence: two digits bouncing inside a 64x64 frame, 20 frames, made from MNIST training
digits for the training and validation sets and from test digits for the test set (never
mixed). Digits move in a straight line at a fixed speed (3.6 pixels a frame, the paper's step
of 0.1 of the free range) and bounce off the edges; overlapping digits take the brighter
pixel. `frame_step=k` samples every k-th frame of a sequence k times as long (temporal
sampling: the same motion seen at a lower frame rate). Sequence i of a split is a function of
(split, i) alone.

The model is an encoder-decoder of the chosen cell over per-frame features: by default the
paper's fully-connected baseline (the 4096 pixels of a frame are the cell's input; a linear
layer maps the decoder's state to the next frame's pixels); `frames=conv` puts a small
convolutional encoder and a transposed-convolutional decoder around the cell. The decoder is
unconditioned (it is given no frames), started from the encoder's final state. Loss: per-pixel
binary cross-entropy. Metrics: per-frame MSE, summed over the 4096 pixels of a frame (pixels
in [0, 1]) and averaged over frames and sequences (the paper's convention), and SSIM
(torchmetrics) over the predicted frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchmetrics
from torch import Tensor, nn
from torch.utils.data import Dataset

from cells import build_cell
from tasks.base import Budget, ModelConfig, Option, StateBridge, Task, register_task
from tasks.mnist_data import MNISTDataModule

SIZE = 64
DIGIT = 28
FRAMES, INPUT_FRAMES = 20, 10
DIGITS_PER_SEQUENCE = 2
STEP = 0.1 * (SIZE - DIGIT)  # pixels per frame, as in the paper's generator
SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}
VALIDATION_DIGITS = 5000  # the last 5,000 training digits feed the validation sequences


def bounce(start: np.ndarray, velocity: np.ndarray, steps: int) -> np.ndarray:
    """Positions (steps, 2) of a point moving in [0, SIZE - DIGIT]^2 and reflecting at the edges."""
    free = SIZE - DIGIT
    raw = start[None] + velocity[None] * np.arange(steps)[:, None]  # unfolded straight line
    period = raw % (2 * free)
    return np.where(period > free, 2 * free - period, period)  # fold back: a reflection at each edge


def make_sequence(
    digits: Tensor, rng: np.random.Generator, frame_step: int, length: int = FRAMES
) -> tuple[Tensor, np.ndarray]:
    """One sequence (length, SIZE, SIZE) in [0, 1] from the digit pool, and the digits' positions
    (length, digits, 2): every `frame_step`-th frame of a sequence `frame_step` times as long."""
    frames = np.zeros((length, SIZE, SIZE), dtype=np.float32)
    tracks = []
    for _ in range(DIGITS_PER_SEQUENCE):
        image = digits[rng.integers(len(digits))].numpy().astype(np.float32) / 255
        theta = rng.uniform(0, 2 * np.pi)
        velocity = STEP * np.array([np.sin(theta), np.cos(theta)])
        path = bounce(rng.uniform(0, SIZE - DIGIT, size=2), velocity, length * frame_step)[::frame_step]
        for t, (row, col) in enumerate(np.rint(path).astype(int)):
            window = frames[t, row : row + DIGIT, col : col + DIGIT]
            np.maximum(window, image, out=window)
        tracks.append(path)
    return torch.from_numpy(frames), np.stack(tracks, 1)  # (T, 64, 64), (T, digits, 2)


class MovingMNIST(Dataset):
    """`count` sequences made from `digits`; item i depends only on (seed, i)."""

    def __init__(self, digits: Tensor, count: int, seed: int, frame_step: int):
        self.digits, self.count, self.seed, self.frame_step = digits, count, seed, frame_step

    def __len__(self) -> int:
        return self.count

    def sequence(self, index: int) -> tuple[Tensor, np.ndarray]:
        return make_sequence(self.digits, np.random.default_rng([self.seed, index]), self.frame_step)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        frames = self.sequence(index)[0]
        return frames[:INPUT_FRAMES], frames[INPUT_FRAMES:]  # (10, 64, 64) each


class MovingMNISTData(MNISTDataModule):
    def __init__(self, data_dir, batch_size: int, sizes: dict[str, int], frame_step: int, download: bool):
        super().__init__(data_dir, batch_size, download)
        self.sizes, self.frame_step = sizes, frame_step

    def build(self, mnist):
        digits = {"train": mnist["train_images"][:-VALIDATION_DIGITS], "val": mnist["train_images"][-VALIDATION_DIGITS:],
                  "test": mnist["test_images"]}
        return tuple(MovingMNIST(digits[s], self.sizes[s], SPLIT_SEEDS[s], self.frame_step) for s in ("train", "val", "test"))


class ConvFrames(nn.Module):
    """64x64 frame <-> feature vector: three stride-2 convolutions and their transposes."""

    def __init__(self, features: int):
        super().__init__()
        self.encode = nn.Sequential(
            nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 8 * 8, features),
        )
        self.decode_linear = nn.Linear(features, 32 * 8 * 8)
        self.decode = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 4, 2, 1),
        )

    def frames_to_features(self, frames: Tensor) -> Tensor:  # (B, T, 64, 64) -> (B, T, F)
        b, t = frames.shape[:2]
        return self.encode(frames.reshape(b * t, 1, SIZE, SIZE)).view(b, t, -1)

    def features_to_logits(self, features: Tensor) -> Tensor:  # (B, T, F) -> (B, T, 64, 64)
        b, t = features.shape[:2]
        x = self.decode_linear(features).view(b * t, 32, 8, 8)
        return self.decode(x).view(b, t, SIZE, SIZE)


class FramePredictor(nn.Module):
    """Encoder cell over the input frames, unconditioned decoder cell for the future frames."""

    def __init__(self, model: ModelConfig, frames: str):
        super().__init__()
        hidden = model.hidden_size
        self.conv = ConvFrames(256) if frames == "conv" else None
        features = 256 if self.conv else SIZE * SIZE
        self.encoder = build_cell(model.cell, features, hidden, model.num_layers, model.bidirectional, model.dropout)
        self.decoder = build_cell(model.cell, 1, hidden, model.num_layers, False, model.dropout)
        self.bridge = StateBridge(self.encoder, self.decoder)
        self.readout = nn.Linear(hidden, 256 if self.conv else SIZE * SIZE)

    def forward(self, inputs: Tensor, future: int = FRAMES - INPUT_FRAMES) -> Tensor:
        # inputs (B, 10, 64, 64) in [0, 1] -> logits of the next `future` frames (B, future, 64, 64)
        b = inputs.shape[0]
        features = self.conv.frames_to_features(inputs) if self.conv else inputs.reshape(b, inputs.shape[1], -1)
        _, state = self.encoder(features)
        output, _ = self.decoder(inputs.new_zeros(b, future, 1), self.bridge(state))  # (B, future, H)
        out = self.readout(output)
        if self.conv:
            return self.conv.features_to_logits(out)
        return out.view(b, future, SIZE, SIZE)


class FrameMSE(torchmetrics.Metric):
    """Squared error summed over the pixels of a frame, averaged over frames (pixels in [0, 1])."""

    higher_is_better = False
    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frames", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: Tensor, target: Tensor) -> None:  # (B, T, 64, 64) each
        self.total += ((predicted - target) ** 2).sum(dtype=torch.float64)
        self.frames += predicted.shape[0] * predicted.shape[1]

    def compute(self) -> Tensor:
        return self.total / self.frames


def _frame_step(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _frames(text: str) -> str:
    if text not in ("fc", "conv"):
        raise ValueError("must be fc or conv")
    return text


class MovingMNISTTask(Task):
    name = "video-moving-mnist"
    description = "Moving MNIST: from 10 frames of two bouncing digits predict the next 10"
    primary_metric = "mse"
    higher_is_better = False
    options = {
        "frame_step": Option(1, _frame_step, "temporal sampling: every k-th frame of a k-times longer sequence"),
        "frames": Option("fc", _frames, "fc: the paper's fully-connected model; conv: conv encoder/decoder around the cell"),
    }
    budgets = {
        "smoke": Budget(max_epochs=1, batch_size=8, hidden_size=32, lr=1e-3, train_batches=4, val_batches=1, test_batches=2,
                        note="4 training batches: checks the path, not quality"),
        "quick": Budget(max_epochs=3, batch_size=32, hidden_size=256, lr=1e-3, note="3 epochs of 4,000 sequences"),
        "paper": Budget(max_epochs=50, batch_size=16, hidden_size=2048, lr=1e-4,
                        note="hidden 2048 as the paper's fully-connected LSTM; 50 epochs of 10,000 sequences"),
    }
    SIZES = {"smoke": {"train": 64, "val": 16, "test": 32},
             "quick": {"train": 4000, "val": 256, "test": 1000},
             "paper": {"train": 10000, "val": 1000, "test": 10000}}

    def datamodule(self, data_dir, batch_size, budget, download=True, run_dir=None):
        return MovingMNISTData(data_dir, batch_size, self.SIZES[budget], self.settings["frame_step"], download)

    def network(self, model, datamodule=None, budget=None):
        return FramePredictor(model, self.settings["frames"])

    def loss(self, logits, target):
        return nn.functional.binary_cross_entropy_with_logits(logits, target)

    def metrics(self):
        return torchmetrics.MetricCollection({
            "mse": FrameMSE(),
            "ssim": torchmetrics.image.StructuralSimilarityIndexMeasure(data_range=1.0),
        })

    def evaluate(self, network, batch, metrics, stage, datamodule=None):
        inputs, target = batch
        logits = network(inputs)
        predicted = torch.sigmoid(logits)
        metrics["mse"].update(predicted, target)
        metrics["ssim"].update(predicted.flatten(0, 1)[:, None], target.flatten(0, 1)[:, None])
        return self.loss(logits, target)

    def artifacts(self, network, datamodule, out):
        """A strip of true and predicted frames for the first test sequences, as a PNG."""
        datamodule.setup("test")
        inputs, target = (torch.stack(x) for x in zip(*(datamodule.test_set[i] for i in range(2))))
        network.eval()
        with torch.no_grad():
            predicted = torch.sigmoid(network(inputs.to(next(network.parameters()).device))).cpu()
        path = Path(out) / "prediction-strip.png"
        save_strip(inputs, target, predicted, path)
        return {"pictures": [{"path": str(path), "caption": "rows: input frames 1-10, true frames 11-20, predicted 11-20; two test sequences"}]}

    def config(self):
        return {**super().config(), "frames": FRAMES, "input_frames": INPUT_FRAMES, "size": SIZE,
                "digits": DIGITS_PER_SEQUENCE, "step_pixels": STEP, "sizes": self.SIZES}


def save_strip(inputs: Tensor, target: Tensor, predicted: Tensor, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for i in range(len(inputs)):
        rows += [inputs[i], target[i], predicted[i]]
    fig, axes = plt.subplots(len(rows), rows[0].shape[0], figsize=(rows[0].shape[0] * 0.8, len(rows) * 0.85), dpi=80)
    for r, frames in enumerate(rows):
        for c, frame in enumerate(frames):
            axes[r, c].imshow(frame.numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
        axes[r, 0].set_title(["input", "true", "predicted"][r % 3], fontsize=7, loc="left")
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


register_task(MovingMNISTTask())
