"""What every task's data shares: where data lives, the error for bad data files, and data sets
held as tensors that a DataLoader reads one batch at a time.

A plain DataLoader over a TensorDataset asks for each sample apart and stacks them (about 1 ms for
a batch of 128 MNIST scans on a 2-core CPU, a large share of a small model's step). The data sets
here answer `__getitems__`: the whole batch comes from one indexing of each tensor. Evaluation
loaders keep a plain DataLoader's sampler; training batches come from `ShuffledBatches`, slices of
one permutation an epoch, without a DataLoader. Either way a seed gives the same samples in the
same order as a plain DataLoader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

DEFAULT_DATA_DIR = Path.home() / ".cache" / "rnnbench" / "data"


class DataError(RuntimeError):
    """A data file is missing, truncated or corrupt; the message says which and what to do."""


def data_dir_from(data_dir: str | Path | None) -> Path:
    """--data-dir, else $RNNBENCH_DATA, else ~/.cache/rnnbench/data."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get("RNNBENCH_DATA"):
        return Path(os.environ["RNNBENCH_DATA"]).expanduser()
    return DEFAULT_DATA_DIR


class TensorBatches(TensorDataset):
    """A TensorDataset that serves a batch by indexing each tensor once."""

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, ...]:
        index = torch.as_tensor(indices, device=self.tensors[0].device)
        return tuple(t[index] for t in self.tensors)

    def to(self, device: torch.device | str) -> "TensorBatches":
        self.tensors = tuple(t.to(device) for t in self.tensors)
        return self

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device


class GeneratedBatches(Dataset):
    """Items generated from (seed, index), all generated on first use and kept as tensors of the
    compact dtypes `generate` returns (uint8 pixels: 4x less memory than float); `decode` turns a
    batch of them into what the network reads. Generating once saves regenerating every epoch."""

    _stored: tuple[Tensor, ...] | None = None

    def generate(self, index: int) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def decode(self, *stored: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def stored(self) -> tuple[Tensor, ...]:
        if self._stored is None:
            items = [self.generate(index) for index in range(len(self))]
            self._stored = tuple(torch.stack(column) for column in zip(*items))
        return self._stored

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, ...]:
        stored = self.stored()
        index = torch.as_tensor(indices, device=stored[0].device)
        return self.decode(*(t[index] for t in stored))

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([index]))

    def to(self, device: torch.device | str) -> "GeneratedBatches":
        self._stored = tuple(t.to(device) for t in self.stored())
        return self

    @property
    def device(self) -> torch.device:
        return self._stored[0].device if self._stored is not None else torch.device("cpu")


def on_device(dataset: Dataset, device: torch.device) -> Dataset:
    """Move a data set's tensors to `device` (for a GPU: batches are then indexed there, nothing is
    copied per step but the indices); Subsets move the set they select from."""
    inner = dataset.dataset if isinstance(dataset, Subset) else dataset
    if isinstance(inner, (TensorBatches, GeneratedBatches)):
        inner.to(device)
    return dataset


def whole_batch(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The loader's collate: the data set has already built the batch."""
    return batch


class ShuffledBatches:
    """Training batches of a data set that serves whole batches (`__getitems__`), in a shuffled
    order, without a DataLoader: the same batches, in the same order, as
    `batch_loader(dataset, batch_size, shuffle=True, drop_last=True)` gives for a seed, and the
    same draws from torch's global generator (the DataLoader iterator's base seed and the
    RandomSampler's seed), so that what draws after it (dropout, the next epoch) draws the same
    numbers.

    Why not the DataLoader: per batch it runs its sampler (a Python list of indices), the Subset's
    mapping of each index, the conversion back to a tensor and its own iterator's bookkeeping;
    about 0.1 ms a batch on the 2-core CPU, a step of the quick mnist-row tanh RNN being ~11 ms.
    Here a batch is a slice of one permutation (mapped through a Subset's indices as a tensor).
    Single-process only: under DDP the DataLoader stays, and Lightning gives it a DistributedSampler.
    """

    def __init__(self, dataset: Dataset, batch_size: int):
        if isinstance(dataset, Subset):
            self.inner, self.index = dataset.dataset, torch.as_tensor(dataset.indices)
        else:
            self.inner, self.index = dataset, None
        self.size, self.batch_size = len(dataset), batch_size

    def __len__(self) -> int:
        return self.size // self.batch_size  # the last, partial batch is dropped

    def __iter__(self):
        # Both draws at the first batch: Lightning calls iter() once more on an iterable that is not
        # a DataLoader, to check it, and takes the first batch right after iter() on each epoch
        torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base seed (for workers)
        # RandomSampler: a seed, then a permutation from a generator of that seed
        generator = torch.Generator()
        generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        order = torch.randperm(self.size, generator=generator)
        if self.index is not None:
            order = self.index[order]
        order = order.to(self.inner.device)  # on a GPU the batches are indexed there: one copy of the order an epoch
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.inner.__getitems__(order[start:start + self.batch_size])


def batch_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader with a plain one's sampler (same samples, same order for a seed) that asks the
    data set for whole batches (`__getitems__`, also through a Subset)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, collate_fn=whole_batch)


class TensorDataModule(L.LightningDataModule):
    """Splits held as tensors (`train_set`, `val_set`, `test_set`, set by `setup`), served in whole
    batches; on the training GPU when there is one, so that batches are indexed there."""

    batch_size: int
    eval_batch_factor = 1  # evaluation keeps no activations for backward, so it may take larger batches

    def _served(self, dataset: Dataset) -> Dataset:
        if self.trainer is not None and self.trainer.strategy.root_device.type == "cuda":
            on_device(dataset, self.trainer.strategy.root_device)
        return dataset

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # a batch already on the device (data held there, or on the CPU) goes as it is: Lightning's
        # generic move walks the batch in Python on every step
        if all(t.device == device for t in batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> DataLoader | ShuffledBatches:
        dataset = self._served(self.train_set)
        if self.trainer is not None and self.trainer.world_size > 1:  # DDP: Lightning shards the loader's sampler
            return batch_loader(dataset, self.batch_size, shuffle=True, drop_last=True)
        return ShuffledBatches(dataset, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(self._served(self.val_set), self.eval_batch_factor * self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return batch_loader(self._served(self.test_set), self.eval_batch_factor * self.batch_size)
