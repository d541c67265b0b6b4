"""Video: Moving MNIST (Srivastava et al. 2015), from the first 10 frames predict the next 10.

    rnnbench run --task video-moving-mnist --cell lstm_fused --cell gru_fused
    rnnbench run --task video-moving-mnist --cell lstm_handwritten -o frame_step=2 -o frames=fc

Each sequence: two digits bouncing inside a 64x64 frame, 20 frames, made from MNIST training
digits for the training and validation sets and from test digits for the test set (never
mixed). Digits move in a straight line at a fixed speed (3.6 pixels a frame, the paper's step
of 0.1 of the free range) and bounce off the edges; overlapping digits take the brighter
pixel. `frame_step=k` samples every k-th frame of a sequence k times as long (temporal
sampling: the same motion seen at a lower frame rate). Sequence i of a split is a function of
(split, i) alone.

The model is an encoder-decoder of the chosen cell over per-frame features. `frames=conv` (the
default): small convolutions encode each frame and its change; the decoder is conditioned on the
previous frame and each predicted frame is the previous one moved by local filters that the
decoder's output chooses (`MotionDecoder`); training feeds the true previous frame with a
probability falling from 1 to 0 over the first half of the run (scheduled sampling). `frames=fc`:
the paper's fully-connected baseline (the 4096 pixels of a frame are the cell's input; the
decoder is unconditioned and a linear layer maps its state to the next frame's pixels). Loss: per-pixel
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

from cells import build_cell
from reports import figures
from tasks.base import Baseline, Budget, Splits, ModelConfig, Option, StateBridge, Task, positive_int, register_task
from tasks.data import GeneratedBatches
from tasks.mnist_data import MNISTDataModule

SIZE = 64
DIGIT = 28
FRAMES, INPUT_FRAMES = 20, 10
DIGITS_PER_SEQUENCE = 2
STEP = 0.1 * (SIZE - DIGIT)  # pixels per frame, as in the paper's generator
TEACHER_SHARE = 0.5  # scheduled sampling falls from the true frames to the model's own over this share of the run
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


class MovingMNIST(GeneratedBatches):
    """`count` sequences made from `digits`; item i depends only on (seed, i)."""

    def __init__(self, digits: Tensor, count: int, seed: int, frame_step: int):
        self.digits, self.count, self.seed, self.frame_step = digits, count, seed, frame_step

    def __len__(self) -> int:
        return self.count

    def sequence(self, index: int) -> tuple[Tensor, np.ndarray]:
        return make_sequence(self.digits, np.random.default_rng([self.seed, index]), self.frame_step)

    def generate(self, index: int) -> tuple[Tensor]:
        # exactly: every pixel is a digit's uint8 value / 255 (or 0)
        return (torch.round(self.sequence(index)[0] * 255).to(torch.uint8),)  # (20, 64, 64)

    def decode(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        frames = frames.float() / 255  # (B, 20, 64, 64)
        return frames[:, :INPUT_FRAMES].contiguous(), frames[:, INPUT_FRAMES:].contiguous()  # (B, 10, 64, 64) each


class MovingMNISTData(MNISTDataModule):
    def __init__(self, data_dir, batch_size: int, sizes: Splits, frame_step: int, download: bool):
        super().__init__(data_dir, batch_size, download)
        self.sizes, self.frame_step = sizes, frame_step

    def build(self, mnist):
        digits = {"train": mnist["train_images"][:-VALIDATION_DIGITS], "val": mnist["train_images"][-VALIDATION_DIGITS:],
                  "test": mnist["test_images"]}
        return tuple(MovingMNIST(digits[s], getattr(self.sizes, s), SPLIT_SEEDS[s], self.frame_step) for s in ("train", "val", "test"))


def _downsampler(width: int) -> nn.ModuleList:
    return nn.ModuleList([
        nn.Sequential(nn.Conv2d(4, width, 4, 2, 1), nn.ReLU()),  # (w, 16, 16)
        nn.Sequential(nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU()),  # (2w, 8, 8)
        nn.Sequential(nn.Conv2d(2 * width, 2 * width, 4, 2, 1), nn.ReLU()),  # (2w, 4, 4)
    ])


class FrameEncoder(nn.Module):
    """A frame and its change since the frame before -> a feature vector for the cell, and the
    maps of both at each scale for the decoder's skips.

    The change (frame minus the previous one) makes motion visible, locally; it has its own
    convolutions. Works at 32x32: each 2x2 block of pixels becomes 4 channels (pixel unshuffle,
    nothing lost), several times cheaper on a CPU than convolutions with few channels at 64x64.
    """

    def __init__(self, features: int, width: int):
        super().__init__()
        self.down = _downsampler(width)
        self.motion = _downsampler(width // 2)  # motion is simpler than appearance: half the channels
        self.project = nn.Linear(3 * width * 4 * 4, features)

    def forward(self, frames: Tensor, change: Tensor) -> tuple[Tensor, list[Tensor]]:
        # frames, change: (N, 4, 32, 32), unshuffled -> (N, F), [(N, 3w/2, 16, 16), (N, 3w, 8, 8), (N, 3w, 4, 4)]
        maps = []
        x, m = frames, change
        for layer, motion in zip(self.down, self.motion):
            x, m = layer(x), motion(m)
            maps.append(torch.cat([x, m], dim=1))
        return self.project(maps[-1].flatten(1)), maps


def local_filter(frame: Tensor, weights: Tensor, dim: int) -> Tensor:
    """Filter each pixel of `frame` (N, 64, 64) along `dim` (1: rows, 2: columns) with the K-tap
    filter of its grid cell: `weights` (N, g, g, K), one filter per cell of a g x g grid."""
    n, g, k = frame.shape[0], weights.shape[1], weights.shape[-1]
    pad = (k // 2, k // 2) if dim == 2 else (0, 0, k // 2, k // 2)
    patches = nn.functional.pad(frame, pad).unfold(dim, k, 1)  # (N, 64, 64, K): the K neighbours along dim
    cell = SIZE // g
    patches = patches.reshape(n, g, cell, g, cell, k)
    return (patches * weights[:, :, None, :, None, :]).sum(-1).reshape(n, SIZE, SIZE)


class MotionDecoder(nn.Module):
    """The decoder cell's output and the previous frame -> the next frame, as the previous frame
    moved by local filters (after the dynamic filter networks of De Brabandere et al. 2016).

    From the cell's output and the previous frame's coarse encoder maps (of the frame and of its
    change) it predicts, for each cell of an 8x8 grid of 8x8-pixel cells, a K-tap filter along
    the rows and one along the columns (softmax: weights >= 0 that sum to 1), and applies them to
    the previous frame there: a separable filter, as a translation is. The model moves the digits
    (3.6 pixels a frame, K = 9 reaches 4) rather than redrawing them; a certain filter moves a
    digit without blurring it.
    """

    def __init__(self, hidden: int, width: int, kernel: int = 9, grid: int = 8):
        super().__init__()
        self.width, self.kernel, self.grid = width, kernel, grid
        self.start = nn.Linear(hidden, 2 * width * 4 * 4)
        self.up = nn.Sequential(nn.ConvTranspose2d(5 * width, 2 * width, 4, 2, 1), nn.ReLU())  # 4 -> 8
        self.filters = nn.Conv2d(5 * width, 2 * kernel, 1)  # rows' and columns' filters per grid cell

    def forward(self, output: Tensor, previous: Tensor, maps: list[Tensor]) -> Tensor:
        # output (N, H); previous frame (N, 1, 64, 64) in [0, 1]; maps as FrameEncoder's -> (N, 1, 64, 64)
        n, k = output.shape[0], self.kernel
        x = torch.relu(self.start(output)).view(n, 2 * self.width, 4, 4)
        x = self.up(torch.cat([x, maps[2]], dim=1))  # (N, 2w, 8, 8)
        weights = self.filters(torch.cat([x, maps[1]], dim=1)).view(n, 2, k, self.grid, self.grid)
        weights = weights.permute(0, 1, 3, 4, 2).softmax(-1)  # (N, 2, g, g, K)
        frame = local_filter(previous[:, 0], weights[:, 0], dim=1)  # along the rows (vertical motion)
        return local_filter(frame, weights[:, 1], dim=2)[:, None]  # along the columns (horizontal motion)


class FramePredictor(nn.Module):
    """Encoder-decoder of the cell over frames.

    `fc` (Srivastava et al. 2015, their fully-connected model): the 4096 pixels of each input frame
    are the encoder's input; the decoder is unconditioned (zeros in), started from the encoder's
    final state, and a linear layer maps its output to the next frame's pixels.

    `conv`: frames are encoded by small convolutions; the decoder is conditioned on its own previous
    prediction (the last input frame first), one step at a time, and each predicted frame is the
    previous one moved by local filters that the cell's output chooses (`MotionDecoder`).
    """

    def __init__(self, model: ModelConfig, frames: str, features: int = 128, width: int = 16):
        super().__init__()
        hidden = model.hidden_size
        self.frames = frames
        if frames == "conv":
            self.frame_encoder = FrameEncoder(features, width)
            self.frame_decoder = MotionDecoder(hidden, width)
            inputs, decoder_inputs = features, features
        else:
            inputs, decoder_inputs = SIZE * SIZE, 1
            self.readout = nn.Linear(hidden, SIZE * SIZE)
        self.encoder = build_cell(model.cell, inputs, hidden, model.num_layers, model.bidirectional, model.dropout)
        self.decoder = build_cell(model.cell, decoder_inputs, hidden, model.num_layers, False, model.dropout)
        self.bridge = StateBridge(self.encoder, self.decoder)

    def forward(self, inputs: Tensor, future: int = FRAMES - INPUT_FRAMES, truth: Tensor | None = None,
                teacher: float = 0.0) -> Tensor:
        # inputs (B, 10, 64, 64) in [0, 1] -> logits of the next `future` frames (B, future, 64, 64).
        # `truth` (B, future, 64, 64) and `teacher`: in training, each sequence's decoder is fed the
        # true previous frame instead of its own prediction with probability `teacher` (scheduled
        # sampling, Bengio et al. 2015), at each step
        b, t = inputs.shape[:2]
        if self.frames == "fc":
            _, state = self.encoder(inputs.reshape(b, t, -1))
            output, _ = self.decoder(inputs.new_zeros(b, future, 1), self.bridge(state))  # (B, future, H)
            return self.readout(output).view(b, future, SIZE, SIZE)
        unshuffled = nn.functional.pixel_unshuffle(inputs, 2)  # (B, 10*4, 32, 32)
        frames = unshuffled.view(b * t, 4, SIZE // 2, SIZE // 2)
        change = (unshuffled - torch.cat([unshuffled[:, :4], unshuffled[:, :-4]], dim=1)).view_as(frames)  # 0 at t=1
        features, maps = self.frame_encoder(frames, change)
        _, state = self.encoder(features.view(b, t, -1))
        state = self.bridge(state)
        previous = inputs[:, -1:]  # (B, 1, 64, 64)
        feature, skips = features.view(b, t, -1)[:, -1], [m.view(b, t, *m.shape[1:])[:, -1] for m in maps]
        predicted = []
        for _ in range(future):  # conditioned on its own previous prediction
            output, state = self.decoder(feature[:, None], state)  # (B, 1, H)
            frame = self.frame_decoder(output[:, 0], previous, skips)  # (B, 1, 64, 64) in [0, 1]
            predicted.append(frame)
            if truth is not None and teacher > 0:
                true = truth[:, len(predicted) - 1 : len(predicted)]
                frame = torch.where(torch.rand(b, 1, 1, 1, device=frame.device) < teacher, true, frame)
            now, before = nn.functional.pixel_unshuffle(frame, 2), nn.functional.pixel_unshuffle(previous, 2)
            feature, skips = self.frame_encoder(now, now - before)
            previous = frame
        squeezed = 1e-4 + (1 - 2e-4) * torch.cat(predicted, dim=1)  # in (0, 1), so that every pixel has a gradient
        return torch.logit(squeezed)  # the task's loss and metrics take logits


def _logits(frames: Tensor, eps: float = 1e-6) -> Tensor:
    """Logits whose sigmoid gives `frames` back (to within eps): how a baseline states its frames."""
    return torch.logit(frames.clamp(eps, 1 - eps))


class MeanFrame(nn.Module):
    """A baseline: every future frame is the mean frame of the training split."""

    def __init__(self, frame: Tensor):
        super().__init__()
        self.register_buffer("frame", frame)  # (64, 64) in [0, 1]

    def forward(self, inputs: Tensor, future: int = FRAMES - INPUT_FRAMES) -> Tensor:
        return _logits(self.frame).expand(inputs.shape[0], future, SIZE, SIZE)


class LastFrame(nn.Module):
    """A baseline: every future frame repeats the last input frame."""

    def forward(self, inputs: Tensor, future: int = FRAMES - INPUT_FRAMES) -> Tensor:
        return _logits(inputs[:, -1:]).expand(-1, future, -1, -1)


class FrameMSE(torchmetrics.Metric):
    """Squared error summed over the pixels of a frame, averaged over frames (pixels in [0, 1]);
    `frame=k`: of the k-th predicted frame only (1-based)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, frame: int | None = None):
        super().__init__()
        self.frame = frame
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frames", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: Tensor, target: Tensor) -> None:  # (B, T, 64, 64) each
        if self.frame is not None:
            predicted, target = predicted[:, self.frame - 1 : self.frame], target[:, self.frame - 1 : self.frame]
        self.total += ((predicted - target) ** 2).sum(dtype=torch.float64)
        self.frames += predicted.shape[0] * predicted.shape[1]

    def compute(self) -> Tensor:
        return self.total / self.frames


def _frames(text: str) -> str:
    if text not in ("fc", "conv"):
        raise ValueError("must be fc or conv")
    return text


class MovingMNISTTask(Task):
    name = "video-moving-mnist"
    version = 2  # 2: the conditioned conv model is the default; per-frame MSE
    description = "Moving MNIST: from 10 frames of two bouncing digits predict the next 10"
    primary_metric = "mse"
    target = 138.0  # 0.9x the mean-frame baseline on the quick test split
    higher_is_better = False
    options = {
        "frame_step": Option(1, positive_int, "temporal sampling: every k-th frame of a k-times longer sequence"),
        "frames": Option("conv", _frames, "conv: conv encoder, decoder fed its own previous frame, skips from it; fc: the paper's fully-connected model",
                         model_only=True),
    }
    budgets = {
        "smoke": Budget(max_epochs=1, batch_size=8, hidden_size=32, lr=1e-3, train_batches=4, val_batches=1, test_batches=2,
                        sizes=Splits(train=64, val=16, test=32),
                        note="4 training batches: checks the path, not quality"),
        "quick": Budget(max_epochs=5, batch_size=32, hidden_size=256, lr=2e-3, sizes=Splits(train=4000, val=256, test=1000),
                        note="5 epochs of 4,000 sequences"),
        "paper": Budget(max_epochs=50, batch_size=16, hidden_size=2048, lr=1e-4,
                        sizes=Splits(train=10000, val=1000, test=10000),
                        note="hidden 2048 as the paper's fully-connected LSTM; 50 epochs of 10,000 sequences"),
    }

    def datamodule(self, data_dir, batch_size, budget, download=True, run_dir=None):
        return MovingMNISTData(data_dir, batch_size, budget.sizes, self.settings["frame_step"], download)

    def training_loss(self, network, batch):
        inputs, target = batch
        if network.frames == "fc":
            return self.loss(network(inputs), target)
        # scheduled sampling: the true previous frame with a probability falling linearly from 1 to 0
        # over the first half of the run, then the decoder's own predictions only (as in PredRNN)
        teacher = max(0.0, 1.0 - network.training_steps / (TEACHER_SHARE * max(1, network.total_steps)))
        network.training_steps += 1
        return self.loss(network(inputs, truth=target, teacher=teacher), target)

    def network(self, model, datamodule=None, budget=None):
        network = FramePredictor(model, self.settings["frames"])
        budget = budget or self.budget("quick")
        per_epoch = budget.sizes.train // budget.batch_size
        network.total_steps = budget.max_epochs * min(per_epoch, budget.train_batches or per_epoch)  # for the schedule
        network.training_steps = 0
        return network

    def loss(self, logits, target):
        return nn.functional.binary_cross_entropy_with_logits(logits, target)

    def metrics(self):
        # mse@k: the k-th future frame alone (the report draws them as a curve over k)
        per_frame = {f"mse@{k}": FrameMSE(frame=k) for k in range(1, FRAMES - INPUT_FRAMES + 1)}
        return torchmetrics.MetricCollection({
            "mse": FrameMSE(),
            "ssim": torchmetrics.image.StructuralSimilarityIndexMeasure(data_range=1.0),
            **per_frame,
        }, compute_groups=False)  # the per-frame metrics share state names but never values

    def evaluate(self, network, batch, metrics, stage, datamodule=None):
        inputs, target = batch
        logits = network(inputs)
        predicted = torch.sigmoid(logits)
        for name, metric in metrics.items(keep_base=True):
            if name.startswith("mse"):
                metric.update(predicted, target)
        metrics["ssim"].update(predicted.flatten(0, 1)[:, None], target.flatten(0, 1)[:, None])
        return self.loss(logits, target)

    def baselines(self, datamodule):
        train = datamodule.train_set
        total = torch.zeros(SIZE, SIZE, dtype=torch.float64)
        for index in range(len(train)):
            total += train.sequence(index)[0].sum(0)
        mean = (total / (len(train) * FRAMES)).float()
        return [Baseline("mean frame", "every future frame is the mean of all training frames", MeanFrame(mean)),
                Baseline("last input frame", "every future frame repeats frame 10", LastFrame())]

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
                "digits": DIGITS_PER_SEQUENCE, "step_pixels": STEP, "sizes": self.split_sizes()}


def save_strip(inputs: Tensor, target: Tensor, predicted: Tensor, path: Path) -> Path:
    plt = figures.pyplot()

    rows = []
    for i in range(len(inputs)):
        rows += [inputs[i], target[i], predicted[i]]
    fig, axes = plt.subplots(len(rows), rows[0].shape[0], figsize=(rows[0].shape[0] * 0.8, len(rows) * 0.85), dpi=80)
    for r, frames in enumerate(rows):
        for c, frame in enumerate(frames):
            axes[r, c].imshow(frame.numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
        axes[r, 0].set_title(["input", "true", "predicted"][r % 3], fontsize=7, loc="left")
    return figures.save(fig, path, pad=0.2)


register_task(MovingMNISTTask())
