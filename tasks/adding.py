"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4): memory over long sequences.

    rnnbench run --task adding --cell rnn_fused --cell lstm_fused --cell gru_fused
    rnnbench run --task adding -o length=400 --cell gru_fused

Each sequence has T steps of two features: a value drawn uniformly from [0, 1] and a marker,
1 at exactly two steps and 0 elsewhere. The first marked step lies in the first half of the
sequence, the second in the second half (the variant of Le et al. 2015 and Arjovsky et al.
2016), so the information must be carried over at least T/2 steps. The target is the sum of
the two marked values; the network reads the whole sequence and then answers with one number
(a linear head on the last layer's final h). Loss and metric: mean squared error.

Predicting 1 for every sequence (the expected sum) scores the variance of a sum of two uniform
values, 2/12 ~ 0.167: a cell whose memory vanishes over T/2 steps stays there. The training,
validation and test sets are drawn from three different seeds, so they are disjoint by
construction; each is a function of (seed, length, count) alone.
"""

from __future__ import annotations

import torch
import torchmetrics
from torch import Tensor, nn

from cells import build_cell
from tasks.base import Baseline, Budget, Splits, ModelConfig, Option, Task, last_state_features, positive_int, register_task
from tasks.data import TensorBatches, TensorDataModule

SPLIT_SEEDS = {"train": 1997, "val": 1998, "test": 1999}
CONSTANT_BASELINE = 1.0  # the expected sum of two U(0, 1) values


def adding_sequences(count: int, length: int, seed: int) -> tuple[Tensor, Tensor]:
    """`count` sequences (count, length, 2) of (value, marker) pairs and their targets (count,)."""
    if length < 2:
        raise ValueError(f"the adding problem needs length >= 2, got {length}")
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(count, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (count,), generator=generator)  # in the first half
    second = torch.randint(half, length, (count,), generator=generator)  # in the second half
    markers = torch.zeros(count, length)
    rows = torch.arange(count)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = values[rows, first] + values[rows, second]
    return torch.stack([values, markers], dim=-1), target  # (N, T, 2), (N,)


class AddingData(TensorDataModule):
    """Three splits generated in memory from their seeds; nothing is read or downloaded."""

    eval_batch_factor = 4

    def __init__(self, batch_size: int, sizes: Splits, length: int):
        super().__init__()
        self.batch_size, self.sizes, self.length = batch_size, sizes, length

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "test_set"):
            self.train_set, self.val_set, self.test_set = (
                TensorBatches(*adding_sequences(getattr(self.sizes, s), self.length, SPLIT_SEEDS[s])) for s in ("train", "val", "test")
            )


class SequenceRegressor(nn.Module):
    """The cell over the sequence, one number from the last layer's final h (both directions)."""

    def __init__(self, model: ModelConfig, input_size: int = 2):
        super().__init__()
        self.encoder = build_cell(
            model.cell, input_size, model.hidden_size, model.num_layers, model.bidirectional, model.dropout
        )
        self.head = nn.Linear(self.encoder.output_size, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, 2) -> (B,)
        _, state = self.encoder(x)
        features = last_state_features(state, self.encoder.num_layers, self.encoder.num_directions)
        return self.head(features).squeeze(-1)


class Constant(nn.Module):
    """A baseline that answers `value` to every sequence."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: Tensor) -> Tensor:  # (B, T, 2) -> (B,)
        return x.new_full((x.shape[0],), self.value)


class AddingTask(Task):
    name = "adding"
    description = "the adding problem: sum the two marked values of a long sequence (T=200 by default)"
    primary_metric = "mse"
    target = 0.01  # the quick floor at T = 200
    records_state_gradients = True
    higher_is_better = False
    options = {"length": Option(200, positive_int, "steps T of each sequence (>= 2); the marks lie T/2 apart on average")}
    # Hidden 64 and lr 1e-2 (Adam, clipping at 1): measured with a bare loop, an LSTM at hidden 128 and
    # lr 1e-3 was still at the baseline after 1,000 steps at T = 200, and at T = 100 after 2,500.
    # On quick the LSTM's forget-gate bias starts at 1 (Gers et al. 2000; Jozefowicz et al. 2015), so
    # that its cell state carries the first mark from the start: with torch's default one seed in
    # three ended over the floor (docs/results.md).
    version = 2  # part of run identity: raised when what the task computes changes
    budgets = {
        "smoke": Budget(max_epochs=3, batch_size=32, hidden_size=16, lr=1e-2, train_batches=4, val_batches=1,
                        test_batches=2, sizes=Splits(train=256, val=64, test=128),
                        note="3 epochs of 4 training batches: checks the path (resuming too), not memory"),
        "quick": Budget(max_epochs=10, batch_size=64, hidden_size=64, lr=1e-2, forget_bias=1.0,
                        sizes=Splits(train=20000, val=1000, test=10000),
                        note="10 epochs of 20,000 sequences (3,120 steps), hidden 64, lr 1e-2, the LSTM's forget-gate "
                        "bias 1"),
        "paper": Budget(max_epochs=50, batch_size=64, hidden_size=128, lr=1e-3,
                        sizes=Splits(train=100000, val=10000, test=10000),
                        note="50 epochs of 100,000 sequences, hidden 128, lr 1e-3"),
    }

    def configured(self, raw):
        task = super().configured(raw)
        if task.settings["length"] < 2:
            raise ValueError(f"task option length={task.settings['length']}: must be at least 2")
        return task

    def datamodule(self, data_dir, batch_size, budget, download=True, run_dir=None):
        return AddingData(batch_size, budget.sizes, self.settings["length"])

    def network(self, model, datamodule=None, budget=None):
        return SequenceRegressor(model)

    def loss(self, output, target):
        return nn.functional.mse_loss(output, target)

    def metrics(self):
        return torchmetrics.MetricCollection({"mse": torchmetrics.MeanSquaredError()})

    def baselines(self, datamodule):
        return [Baseline("predict 1", "always the expected sum, 1 (MSE = 2/12 in expectation)", Constant(CONSTANT_BASELINE))]

    def config(self):
        return {**super().config(), "split_seeds": SPLIT_SEEDS, "sizes": self.split_sizes(),
                "marks": "one in each half of the sequence"}


register_task(AddingTask())
