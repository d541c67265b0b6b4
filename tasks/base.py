"""What a task declares: its data, its network around a cell, its metrics, options and budgets."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from cells.registry import Registry

BUDGETS = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class Budget:
    """How long a run trains, and the model size and optimiser it trains with by default."""

    max_epochs: int
    batch_size: int
    hidden_size: int
    lr: float  # AdamW, cosine decay to zero over the run
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # gradient norm clipping
    # None = the whole split; an int = that many batches per epoch
    train_batches: int | None = None
    val_batches: int | None = None
    test_batches: int | None = None
    note: str = ""  # one line shown in the report


@dataclass(frozen=True)
class ModelConfig:
    """The recurrent part of a run's network."""

    cell: str
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0


@dataclass(frozen=True)
class Option:
    """A task option, given as `--task-option name=value` on the command line."""

    default: Any
    parse: Callable[[str], Any]
    help: str


class Task:
    """Base class of a task; an instance is registered in `TASKS` under its `name`.

    The defaults suit a classifier whose batches are `(x, target)`; a task with other batches
    overrides `training_loss` and `evaluate`.
    """

    name: str = ""
    version: int = 1
    description: str = ""
    primary_metric: str = ""  # a key of `metrics()`, e.g. "accuracy"
    higher_is_better: bool = True
    budgets: dict[str, Budget] = {}  # by name: smoke, quick, paper
    options: dict[str, Option] = {}  # by name; values in `self.settings` once configured

    @property
    def settings(self) -> dict[str, Any]:
        return getattr(self, "_settings", {name: option.default for name, option in self.options.items()})

    def configured(self, raw: dict[str, str]) -> "Task":
        """A copy of the task with its options set from `name -> text`; unknown names are errors."""
        settings = dict(self.settings)
        for name, text in raw.items():
            if name not in self.options:
                allowed = ", ".join(self.options) or "none"
                raise ValueError(f"task {self.name!r} has no option {name!r}; its options: {allowed}")
            try:
                settings[name] = self.options[name].parse(text)
            except (TypeError, ValueError) as err:
                raise ValueError(f"task option {name}={text!r}: {err} ({self.options[name].help})") from None
        task = copy.copy(self)
        task._settings = settings
        return task

    def datamodule(
        self, data_dir: Path | None, batch_size: int, budget: str, download: bool = True, run_dir: Path | None = None
    ) -> L.LightningDataModule:
        """The data; `download`: fetch missing files (in `prepare_data`, one process); `run_dir`:
        where files that belong to the run (a tokenizer, say) are saved."""
        raise NotImplementedError

    def network(self, model: ModelConfig, datamodule: L.LightningDataModule, budget: str) -> nn.Module:
        """The network; called after `datamodule.prepare_data()`."""
        raise NotImplementedError

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def metrics(self) -> MetricCollection:
        raise NotImplementedError

    def training_loss(self, network: nn.Module, batch: Any) -> Tensor:
        x, target = batch
        return self.loss(network(x), target)

    def evaluate(
        self, network: nn.Module, batch: Any, metrics: MetricCollection, stage: str, datamodule: Any = None
    ) -> Tensor:
        """Update `metrics` with one batch of the validation or test set; return the loss."""
        x, target = batch
        output = network(x)
        metrics.update(output, target)
        return self.loss(output, target)

    def samples_in(self, batch: Any) -> int:
        return len(batch[-1])

    def tokens_in(self, batch: Any) -> int | None:
        """Tokens in a training batch, for tasks where tokens/s means something."""
        return None

    def artifacts(self, network: nn.Module, datamodule: L.LightningDataModule, out: Path) -> dict[str, Any]:
        """What the report shows besides numbers (example outputs, pictures), after the test."""
        return {}

    def config(self) -> dict[str, Any]:
        """The task's own settings, stored with every run."""
        return {"name": self.name, "version": self.version, "options": self.settings}

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise ValueError(f"unknown budget {name!r} for task {self.name!r}; budgets: {', '.join(self.budgets)}")
        return self.budgets[name]


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    if not isinstance(task, Task):
        raise TypeError(f"a task must be a Task instance, got {task!r}")
    missing = [b for b in BUDGETS if b not in task.budgets]
    if missing:
        raise ValueError(f"task {task.name!r} lacks budgets {missing}")
    return TASKS.add(task.name, task)


def last_state_features(state: tuple[Tensor, ...], num_layers: int, num_directions: int) -> Tensor:
    """The last layer's final h of every direction, concatenated: (B, directions * H)."""
    h = state[0]  # (layers * directions, B, H)
    last = h.view(num_layers, num_directions, h.shape[1], h.shape[2])[-1]  # (D, B, H)
    return torch.cat(tuple(last), dim=1)


class StateBridge(nn.Module):
    """An encoder's final state -> a decoder's initial state, for encoder-decoder networks.

    Per layer, the directions of each state tensor are concatenated and mapped by a linear layer
    and tanh: (layers * directions, B, H_enc) -> (layers, B, H_dec), one map per state tensor.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.layers, self.directions = encoder.num_layers, encoder.num_directions
        self.maps = nn.ModuleList(
            nn.Linear(self.directions * encoder.hidden_size, decoder.hidden_size) for _ in range(decoder.state_size)
        )

    def forward(self, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        out = []
        for linear, s in zip(self.maps, state):  # s (L*D, B, H)
            per_layer = s.view(self.layers, self.directions, s.shape[1], s.shape[2]).permute(0, 2, 1, 3)  # (L, B, D, H)
            out.append(torch.tanh(linear(per_layer.reshape(self.layers, s.shape[1], -1))).contiguous())  # (L, B, H)
        return tuple(out)
