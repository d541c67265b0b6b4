"""Moving MNIST and the segmentation scenes: made from real MNIST, reproducible, and right."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from tasks.base import Splits
from tasks.mnist_data import load_mnist
from tasks.moving_mnist import DIGIT, FRAMES, SIZE, MovingMNISTData, bounce, make_sequence
from tasks.segmentation import STROKE, ScenesData


@pytest.fixture(scope="module")
def mnist(shared_data):
    return load_mnist(shared_data, download=False)


def image_hashes(images) -> set[str]:
    return {hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images}


def test_bouncing_stays_inside_the_frame_and_reflects():
    rng = np.random.default_rng(0)
    for _ in range(200):
        velocity = rng.uniform(-9, 9, size=2)
        path = bounce(rng.uniform(0, SIZE - DIGIT, size=2), velocity, 500)
        assert path.min() >= 0 and path.max() <= SIZE - DIGIT
        steps = np.abs(np.diff(path, axis=0))
        assert np.all(steps <= np.abs(velocity) + 1e-9)  # never jumps: it folds back at an edge


def test_sequences_stay_inside_and_are_reproducible(mnist):
    digits = mnist["train_images"][:1000]
    for index in range(20):
        frames, tracks = make_sequence(digits, np.random.default_rng([1, index]), frame_step=1)
        assert frames.shape == (FRAMES, SIZE, SIZE) and 0 <= frames.min() and frames.max() <= 1
        assert tracks.min() >= 0 and tracks.max() <= SIZE - DIGIT
        assert torch.all(frames.flatten(1).sum(1) > 20), "every frame shows its digits"
        again, _ = make_sequence(digits, np.random.default_rng([1, index]), frame_step=1)
        assert torch.equal(frames, again)
    other, _ = make_sequence(digits, np.random.default_rng([1, 99]), frame_step=1)
    assert not torch.equal(frames, other)


def test_frame_step_samples_a_longer_sequence(mnist):
    digits = mnist["train_images"][:1000]
    slow, _ = make_sequence(digits, np.random.default_rng([5, 0]), frame_step=1, length=2 * FRAMES)
    fast, _ = make_sequence(digits, np.random.default_rng([5, 0]), frame_step=2)
    assert torch.equal(fast, slow[::2])


def test_video_splits_use_their_own_digits(shared_data, mnist):
    data = MovingMNISTData(shared_data, 4, Splits(8, 8, 8), 1, download=False)
    data.setup()
    assert image_hashes(data.test_set.digits) == image_hashes(mnist["test_images"])
    assert not image_hashes(data.train_set.digits) & image_hashes(data.val_set.digits)
    assert not image_hashes(data.train_set.digits) & image_hashes(mnist["test_images"])
    inputs, target = data.test_set[3]
    assert inputs.shape == target.shape == (10, SIZE, SIZE)


def test_scene_labels_match_the_digit_pixels(shared_data, mnist):
    data = ScenesData(shared_data, 4, Splits(50, 10, 50), download=False)
    data.setup()
    for split in (data.train_set, data.test_set):
        for index in range(50):
            image, label, placed = split.scene(index)
            assert 1 <= len(placed) <= 3
            assert torch.equal(label != 0, image > STROKE)  # labelled exactly where a stroke is
            expected = torch.zeros_like(label)
            for digit, row, col in placed:  # later digits win an overlap
                stroke = split.images[digit].float() / 255 > STROKE
                expected[row : row + DIGIT, col : col + DIGIT][stroke] = int(split.labels[digit]) + 1
            assert torch.equal(label, expected)
            again, again_label, _ = split.scene(index)
            assert torch.equal(image, again) and torch.equal(label, again_label)


def test_scene_splits_never_share_a_digit_image(shared_data, mnist):
    data = ScenesData(shared_data, 4, Splits(300, 50, 300), download=False)
    data.setup()

    def used(split, count):
        return image_hashes(split.images[d] for i in range(count) for d, _, _ in split.scene(i)[2])

    train, val, test = used(data.train_set, 300), used(data.val_set, 50), used(data.test_set, 300)
    assert train and test and not train & test and not val & test and not train & val
    assert test <= image_hashes(mnist["test_images"])
    assert not test & image_hashes(mnist["train_images"])


def test_local_filter_moves_a_region_by_its_cells_filter():
    from tasks.moving_mnist import local_filter

    frame = torch.zeros(1, SIZE, SIZE)
    frame[0, 20:30, 10:20] = torch.rand(10, 10)
    weights = torch.zeros(1, 8, 8, 9)
    weights[..., 6] = 1.0  # tap 6 of 9: the pixel two steps further on
    down = local_filter(frame, weights, dim=1)
    assert torch.equal(down[0, 18:28, 10:20], frame[0, 20:30, 10:20]) and torch.isclose(down.sum(), frame.sum())
    left = local_filter(frame, weights, dim=2)
    assert torch.equal(left[0, 20:30, 8:18], frame[0, 20:30, 10:20])
    weights[:, :4] = 0.0
    weights[:, :4, :, 4] = 1.0  # the upper half of the grid keeps its pixels where they are
    mixed = local_filter(frame, weights, dim=1)
    assert torch.equal(mixed[0, 20:30, 10:20], frame[0, 20:30, 10:20])


def test_video_baselines_score_the_mean_frame_and_the_last_frame(shared_data):
    from tasks import TASKS

    task = TASKS.get("video-moving-mnist")
    data = task.datamodule(shared_data, 8, task.budget("smoke"), download=False)
    data.prepare_data()
    data.setup("fit")
    mean, last = task.baselines(data)
    inputs, target = (torch.stack(x) for x in zip(*(data.test_set[i] for i in range(len(data.test_set)))))
    metrics, samples = task.score_baseline(last, data)
    expected = ((inputs[:, -1:] - target) ** 2).sum((2, 3)).mean()  # every future frame against frame 10
    assert samples == len(data.test_set) and metrics["mse"] == pytest.approx(float(expected), rel=1e-4)
    per_frame = ((inputs[:, -1:] - target) ** 2).sum((2, 3)).mean(0)
    for k in range(1, 11):
        assert metrics[f"mse@{k}"] == pytest.approx(float(per_frame[k - 1]), rel=1e-4)
    frames = torch.stack([data.train_set.sequence(i)[0] for i in range(len(data.train_set))])
    torch.testing.assert_close(mean.network.frame, frames.mean((0, 1)), atol=1e-6, rtol=0)


def test_scheduled_sampling_feeds_the_true_frame_or_the_models_own():
    from tasks.base import ModelConfig
    from tasks.moving_mnist import FramePredictor

    torch.manual_seed(0)
    network = FramePredictor(ModelConfig("gru_fused", 16), "conv").eval()
    inputs, truth = torch.rand(2, 10, SIZE, SIZE), torch.rand(2, 10, SIZE, SIZE)
    with torch.no_grad():
        own = network(inputs)
        assert torch.equal(network(inputs, truth=truth, teacher=0.0), own)  # never the truth
        forced = network(inputs, truth=truth, teacher=1.0)
        changed = truth.clone()
        changed[:, 4] = 0.0  # the true frame 15 changes: predictions of 16 onwards, not before
        again = network(inputs, truth=changed, teacher=1.0)
    assert torch.equal(forced[:, :5], again[:, :5]) and not torch.allclose(forced[:, 5:], again[:, 5:])
    assert torch.equal(forced[:, :1], own[:, :1]) and not torch.allclose(forced[:, 1:], own[:, 1:])


@pytest.mark.parametrize("cell", ["lstm_fused", "gru_handwritten"])
def test_renet_upsampling_is_the_transposed_convolution(cell):
    """The segmenter computes its transposed convolution as one matrix product in channels-last
    order (faster on the CPU): the scores must be those of ConvTranspose2d and Conv2d on NCHW."""
    from tasks.base import ModelConfig
    from tasks.segmentation import PATCH, ReNetSegmenter

    torch.manual_seed(0)
    network = ReNetSegmenter(ModelConfig(cell, 8))
    image = torch.rand(3, 1, 64, 84)
    rows, cols = 64 // PATCH, 84 // PATCH
    patches = image.view(3, rows, PATCH, cols, PATCH).permute(0, 1, 3, 2, 4).reshape(3, rows, cols, PATCH * PATCH)
    swept, _ = network.vertical(patches.permute(0, 2, 1, 3).reshape(3 * cols, rows, -1))
    swept = swept.view(3, cols, rows, -1).permute(0, 2, 1, 3).reshape(3 * rows, cols, -1)
    swept, _ = network.horizontal(swept)
    features = swept.view(3, rows, cols, -1).permute(0, 3, 1, 2)  # NCHW
    expected = network.classify(torch.cat([torch.relu(network.upsample(features)), image], dim=1))
    scores = network(image)
    assert scores.shape == (3, 11, 64, 84)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    scores.sum().backward()  # and it trains: every parameter gets a gradient
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in network.parameters())


def test_pictures_are_written_at_their_size_into_a_new_folder(tmp_path):
    """The video strip (input, true, predicted rows per sequence) and the segmentation masks (scene,
    true, predicted per scene) land as PNGs of their figures' size, their folder made."""
    import matplotlib.image

    from tasks.moving_mnist import save_strip
    from tasks.segmentation import CLASSES, HEIGHT, WIDTH, save_masks

    frames = torch.rand(2, FRAMES // 2, SIZE, SIZE)
    strip = save_strip(frames, frames.flip(1), frames.roll(1, 1), tmp_path / "video" / "strip.png")
    assert strip == tmp_path / "video" / "strip.png"
    # 10 frames 0.8 inch wide, 6 rows (2 sequences x 3) 0.85 inch high, at 80 dots an inch
    assert matplotlib.image.imread(strip).shape == (408, 640, 4)
    scenes = torch.rand(4, 1, HEIGHT, WIDTH)
    labels = torch.randint(0, CLASSES, (4, HEIGHT, WIDTH))
    masks = save_masks(scenes, labels, labels.flip(2), tmp_path / "segmentation" / "masks.png")
    assert matplotlib.image.imread(masks).shape == (512, 480, 4)  # 4 rows 1.6 inch high, 3 columns in 6 inches
