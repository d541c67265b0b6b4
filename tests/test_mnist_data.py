"""MNIST: the real files load and verify; scans are permutations; bad files give clear errors."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from tasks import TASKS
from tasks.mnist import PIXELS, snake, zigzag
from tasks.mnist_data import FILES, DataError, load_file, load_mnist

SCAN_TASKS = [name for name in TASKS.names() if name.startswith("mnist-")]


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
    assert sorted(task.order.tolist()) == list(range(PIXELS))
    assert task.steps * task.config()["features"] == PIXELS


def test_scan_orders():
    assert zigzag(4).tolist() == [0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15]  # JPEG's 4x4 zigzag
    assert snake(3).tolist() == [0, 1, 2, 5, 4, 3, 6, 7, 8]
    assert TASKS.get("mnist-permuted").order.tolist() == TASKS.get("mnist-permuted").order.tolist()
    assert TASKS.get("mnist-permuted").order.tolist() != list(range(PIXELS))


def test_scanned_sequence_holds_the_image(shared_data):
    task = TASKS.get("mnist-zigzag")
    data = task.datamodule(shared_data, 8, "smoke", download=False)
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
