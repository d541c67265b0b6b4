"""The original MNIST IDX files: found in a data folder, verified by md5, downloaded if absent.

Layout: DATA_DIR/mnist/<file> or DATA_DIR/mnist/<file>.gz, as in the tests' shared data.
Checksums are of the uncompressed files (the canonical ones), so any gzip wrapper will do.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

import torch
from torch.utils.data import Dataset

from tasks.data import DataError, TensorDataModule, data_dir_from

FILES = {  # uncompressed name -> md5 of the uncompressed bytes
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
def _read(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: cannot read it ({err}); delete it and put a good copy there") from err


def _verified(name: str, raw: bytes, where: str) -> bytes:
    digest = hashlib.md5(raw).hexdigest()
    if digest != FILES[name]:
        raise DataError(
            f"{where}: md5 of the uncompressed bytes is {digest}, expected {FILES[name]} "
            f"({len(raw)} bytes read): the file is truncated or corrupt; replace it with the original MNIST {name}"
        )
    return raw


def _download(name: str, folder: Path, mirrors: tuple[str, ...]) -> bytes:
    """Fetch NAME.gz from the first mirror that gives verified bytes; write it atomically."""
    failures = []
    for mirror in mirrors:
        url = f"{mirror}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                packed = response.read()
            raw = _verified(name, gzip.decompress(packed), url)
        except (OSError, EOFError, DataError, ValueError) as err:
            failures.append(f"{url}: {err}")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        # write beside the target and rename: a killed download leaves no half file
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", delete=False) as tmp:
            tmp.write(packed)
        os.replace(tmp.name, folder / f"{name}.gz")
        return raw
    raise DataError(
        f"MNIST file {name} is not in {folder} (as {name} or {name}.gz) and could not be downloaded:\n  "
        + "\n  ".join(failures)
        + f"\nPut the original file there (md5 of the uncompressed file {FILES[name]}), "
        "or point --data-dir / RNNBENCH_DATA at a folder holding mnist/."
    )


def load_file(name: str, data_dir: Path, download: bool = True, mirrors: tuple[str, ...] = MIRRORS) -> bytes:
    folder = data_dir / "mnist"
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return _verified(name, _read(candidate), str(candidate))
    if not download:
        raise DataError(
            f"MNIST file {name} not found: looked for {folder / name} and {folder / name}.gz. "
            f"Put the original file there (md5 of the uncompressed file {FILES[name]}), "
            "or point --data-dir / RNNBENCH_DATA at a folder holding mnist/."
        )
    return _download(name, folder, mirrors)


def _parse_idx(raw: bytes, name: str, magic: int) -> torch.Tensor:
    dims = raw[3]
    if int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{name}: not an IDX file of the expected kind (magic {raw[:4].hex()})")
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * dims :]), dtype=torch.uint8)
    return data.view(*shape)


def load_mnist(
    data_dir: str | Path | None = None, download: bool = True, mirrors: tuple[str, ...] = MIRRORS
) -> dict[str, torch.Tensor]:
    """{"train_images": (60000, 28, 28) uint8, "train_labels": (60000,) uint8, "test_images", "test_labels"}."""
    folder = data_dir_from(data_dir)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = f"{prefix}-images-idx3-ubyte"
        labels = f"{prefix}-labels-idx1-ubyte"
        out[f"{split}_images"] = _parse_idx(load_file(images, folder, download, mirrors), images, 2051)
        out[f"{split}_labels"] = _parse_idx(load_file(labels, folder, download, mirrors), labels, 2049)
    return out


class MNISTDataModule(TensorDataModule):
    """Data made from MNIST: `prepare_data` fetches and checks the files once, `setup` loads them
    and calls `build` for the three splits; the loaders serve them."""

    def __init__(self, data_dir: str | Path | None, batch_size: int, download: bool = True):
        super().__init__()
        self.data_dir, self.batch_size, self.download = data_dir, batch_size, download

    def prepare_data(self) -> None:
        for name in FILES:
            load_file(name, data_dir_from(self.data_dir), download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "test_set"):
            self.train_set, self.val_set, self.test_set = self.build(load_mnist(self.data_dir, download=False))

    def build(self, mnist: dict[str, torch.Tensor]) -> tuple[Dataset, Dataset, Dataset]:
        raise NotImplementedError
