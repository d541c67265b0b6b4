"""MNIST: the real files load and verify; scans are permutations; bad files give clear errors."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from tasks import TASKS
from tasks.mnist import PIXELS, SIDES, MNISTScanTask, pooled, snake, zigzag
from tasks.mnist_data import FILES, DataError, load_file, load_mnist

SCAN_TASKS = [name for name in TASKS.names() if isinstance(TASKS.get(name), MNISTScanTask)]  # the 1-D scans


def test_real_mnist_loads_and_verifies(shared_data):
    mnist = load_mnist(shared_data, download=False)
    assert mnist["train_images"].shape == (60000, 28, 28) and mnist["test_images"].shape == (10000, 28, 28)
    assert mnist["train_labels"].shape == (60000,) and mnist["test_labels"].shape == (10000,)
    assert torch.bincount(mnist["test_labels"].long()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    mean = mnist["train_images"].float().div(255).mean().item()
    assert abs(mean - 0.1307) < 1e-3


@pytest.mark.parametrize("name", SCAN_TASKS)
def test_every_scan_is_a_permutation_of_the_pixels(name):
    task = TASKS.get(name)
    sides = SIDES if "side" in task.options else (28,)
    for side in sides:
        scan = task.configured({"side": str(side)}) if "side" in task.options else task
        assert sorted(scan.order.tolist()) == list(range(side * side))
        assert scan.steps * scan.config()["features"] == side * side
        assert scan.config()["options"] == ({"side": side} if "side" in task.options else {})


def test_side_option_is_checked_and_the_quick_budget_sets_it():
    from bench.config import RunConfig

    with pytest.raises(ValueError, match=r"side='13': must be one of 28, 14, 7, 4"):
        TASKS.get("mnist-pixel").configured({"side": "13"})
    with pytest.raises(ValueError, match="task 'mnist-row' has no option 'side'"):
        TASKS.get("mnist-row").configured({"side": "14"})
    quick = RunConfig(task="mnist-snake", cell="lstm_fused")
    assert quick.task_settings.steps == 196 and quick.identity()["task_config"]["options"] == {"side": 14}
    assert "mnist-snake side=14 lstm_fused" in quick.label
    full = RunConfig(task="mnist-snake", cell="lstm_fused", task_options=(("side", "28"),))  # the user's value wins
    assert full.task_settings.steps == 784 and full.run_id != quick.run_id and "side=28" in full.label
    paper = RunConfig(task="mnist-snake", cell="lstm_fused", budget="paper")
    assert paper.task_settings.steps == 784 and "side" not in paper.label


def test_scan_orders():
    assert zigzag(4).tolist() == [0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15]  # JPEG's 4x4 zigzag
    assert snake(3).tolist() == [0, 1, 2, 5, 4, 3, 6, 7, 8]
    assert TASKS.get("mnist-permuted").order.tolist() == TASKS.get("mnist-permuted").order.tolist()
    assert TASKS.get("mnist-permuted").order.tolist() != list(range(PIXELS))


def test_scanned_sequence_holds_the_image(shared_data):
    task = TASKS.get("mnist-zigzag")
    data = task.datamodule(shared_data, 8, task.budget("smoke"), download=False)
    data.setup("fit")
    image = load_mnist(shared_data, download=False)["test_images"][0]
    sequence = data.test_set[0][0]  # (784, 1)
    assert sequence.shape == (PIXELS, 1)
    restored = torch.empty(PIXELS)
    restored[task.order] = sequence[:, 0]
    expected = (image.reshape(-1).float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(restored, expected)
    assert len(data.train_set) == 55000 and len(data.val_set) == 5000
    assert not set(data.train_set.indices) & set(data.val_set.indices)


def test_pooled_scan_holds_the_pooled_image(shared_data):
    task = TASKS.get("mnist-zigzag").configured({"side": "14"})
    data = task.datamodule(shared_data, 8, task.budget("quick"), download=False)
    data.setup("fit")
    image = load_mnist(shared_data, download=False)["test_images"][0]
    sequence = data.test_set[0][0]
    assert sequence.shape == (196, 1)
    restored = torch.empty(196)
    restored[task.order] = sequence[:, 0]
    blocks = image.float().div(255).view(14, 2, 14, 2).mean(dim=(1, 3))  # each 2 x 2 block's mean
    torch.testing.assert_close(pooled(image[None], 14)[0], blocks)
    torch.testing.assert_close(restored, (blocks.reshape(-1) - 0.1307) / 0.3081)


def test_missing_file_names_it_and_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as err:
        load_file("t10k-labels-idx1-ubyte", tmp_path, download=False)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path / "mnist") in message
    assert FILES["t10k-labels-idx1-ubyte"] in message and "--data-dir" in message


def test_truncated_or_corrupt_file_is_refused(shared_data, tmp_path):
    (tmp_path / "mnist").mkdir()
    raw = gzip.decompress((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(raw[:5000])
    with pytest.raises(DataError, match=r"md5 of the uncompressed bytes is .*expected 27ae3e4e09519cfbb04c329615203637 \(5000 bytes read\)"):
        load_file("t10k-labels-idx1-ubyte", tmp_path, download=False)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read it"):
        load_file("t10k-labels-idx1-ubyte", tmp_path, download=False)


def test_download_verifies_and_leaves_nothing_half_written(shared_data, tmp_path):
    """Mirrors are URLs; file:// ones stand in for the network here."""
    name = "t10k-labels-idx1-ubyte"
    bad, good, target = tmp_path / "bad", tmp_path / "good", tmp_path / "data"
    bad.mkdir(), good.mkdir()
    (bad / f"{name}.gz").write_bytes(gzip.compress(b"\0" * 100))
    shutil.copy(shared_data / "mnist" / f"{name}.gz", good / f"{name}.gz")
    with pytest.raises(DataError) as err:
        load_file(name, target, mirrors=(bad.as_uri() + "/",))
    assert "could not be downloaded" in str(err.value) and "md5" in str(err.value)
    assert not (target / "mnist").exists() or not any((target / "mnist").iterdir())
    raw = load_file(name, target, mirrors=(bad.as_uri() + "/", good.as_uri() + "/"))
    assert len(raw) == 10008
    assert [p.name for p in (target / "mnist").iterdir()] == [f"{name}.gz"]
