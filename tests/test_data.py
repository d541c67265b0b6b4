"""Data served in whole batches: the same samples, in the same order, as a plain DataLoader that
reads one item at a time; and a non-finite training loss fails a run without a check every step."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bench.module import FINITE_CHECK_EVERY, BenchModule
from tasks import TASKS
from tasks.base import Splits
from tasks.data import GeneratedBatches, ShuffledBatches, TensorBatches, batch_loader


class OneAtATime(Dataset):
    """The reference: each item built alone, as before batches were served whole."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        inner = self.dataset.dataset if isinstance(self.dataset, torch.utils.data.Subset) else self.dataset
        index = self.dataset.indices[index] if inner is not self.dataset else index
        if hasattr(inner, "scene"):  # generated scenes: (1, 64, 84) image and (64, 84) labels, float and int64
            image, label, _ = inner.scene(index)
            return image[None], label
        if hasattr(inner, "sequence"):  # Moving MNIST: 10 input and 10 future frames, float
            frames = inner.sequence(index)[0]
            return frames[:10], frames[10:]
        return tuple(t[index] for t in inner.tensors)


@pytest.mark.parametrize("task", ["mnist-row", "adding", "segmentation-mnist-scenes", "video-moving-mnist"])
def test_batches_equal_a_plain_loader_item_by_item_for_a_seed(task, shared_data):
    data = TASKS.get(task).datamodule(shared_data, 8, TASKS.get(task).budget("smoke"), download=False)
    data.prepare_data()
    data.setup("fit")
    inner = data.train_set.dataset if isinstance(data.train_set, torch.utils.data.Subset) else data.train_set
    assert isinstance(inner, (TensorBatches, GeneratedBatches)), "the task's data is served in whole batches"
    for epoch_seed in (3, 4):  # two epochs: each draws its own order
        torch.manual_seed(epoch_seed)
        served = list(data.train_dataloader())
        torch.manual_seed(epoch_seed)
        plain = list(DataLoader(OneAtATime(data.train_set), batch_size=8, shuffle=True, drop_last=True))
        assert len(served) == len(plain) > 1
        for ours, theirs in zip(served, plain):
            for a, b in zip(ours, theirs, strict=True):
                assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    val = next(iter(data.val_dataloader()))
    assert torch.equal(val[0], torch.stack([OneAtATime(data.val_set)[i][0] for i in range(len(val[0]))]))


def test_shuffled_batches_draw_what_the_dataloader_draws(shared_data):
    """Training batches come without a DataLoader; what draws from torch's generator after them
    (dropout, the next epoch's order) must see the same numbers as after a DataLoader's epoch."""
    data = TASKS.get("mnist-row").datamodule(shared_data, 32, TASKS.get("mnist-row").budget("smoke"), download=False)
    data.prepare_data()
    data.setup("fit")
    assert isinstance(data.train_dataloader(), ShuffledBatches)
    drawn_after = []
    for loader in (batch_loader(data.train_set, 32, shuffle=True, drop_last=True), data.train_dataloader()):
        torch.manual_seed(5)
        batches = [b[1] for b in loader]
        drawn_after.append((batches, torch.rand(3)))
    (plain, plain_next), (ours, ours_next) = drawn_after
    assert len(ours) == len(plain) == len(data.train_set) // 32 and len(ours) == len(data.train_dataloader())
    assert all(torch.equal(a, b) for a, b in zip(ours, plain)) and torch.equal(ours_next, plain_next)
    # Lightning calls iter() on such an iterable once to check it: that alone draws nothing
    torch.manual_seed(5)
    iter(data.train_dataloader())
    after_check = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after_check, torch.rand(3))


def test_ddp_keeps_the_dataloader_for_its_distributed_sampler(shared_data):
    data = TASKS.get("mnist-row").datamodule(shared_data, 32, TASKS.get("mnist-row").budget("smoke"), download=False)
    data.prepare_data()
    data.setup("fit")
    data.trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    loader = data.train_dataloader()
    assert isinstance(loader, DataLoader) and loader.drop_last and len(loader) == len(data.train_set) // 32


def test_a_batch_is_one_indexing_of_each_tensor():
    x, y = torch.randn(10, 3), torch.arange(10)
    calls = []

    class Counting(TensorBatches):
        def __getitem__(self, index):  # must not be used: the loader asks for whole batches
            calls.append(index)
            return super().__getitem__(index)

    batches = list(batch_loader(Counting(x, y), 4))
    assert calls == [] and [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), x)


class NaNAfter(nn.Module):
    """A regression network whose output turns NaN from the `bad`-th call on."""

    def __init__(self, bad: int):
        super().__init__()
        self.linear, self.calls, self.bad = nn.Linear(2, 1), 0, bad

    def forward(self, x):
        self.calls += 1
        out = self.linear(x[:, -1]).squeeze(-1)
        return out * float("nan") if self.calls >= self.bad and self.training else out


def test_a_nan_loss_fails_the_run_within_the_check_window(tmp_path):
    task = TASKS.get("adding").configured({"length": "5"})
    budget = task.budget("smoke")
    steps = FINITE_CHECK_EVERY + 10
    data = task.datamodule(None, 4, task.budget("smoke"))
    data.sizes = Splits(train=4 * steps, val=8, test=8)
    module = BenchModule(NaNAfter(bad=FINITE_CHECK_EVERY + 3), task, budget)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        num_sanity_val_steps=0)
    with pytest.raises(FloatingPointError, match=rf"steps {FINITE_CHECK_EVERY + 1}-{steps}\b"):
        trainer.fit(module, datamodule=data)
    assert trainer.global_step <= steps
