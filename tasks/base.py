"""What a task declares: its data, its network around a cell, its metrics, options and budgets."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from cells.registry import Registry

OPTIMIZERS = ("adamw", "rmsprop")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class Splits:
    """How many examples each split holds, for a task that draws or composes its data."""

    train: int
    val: int
    test: int


@dataclass(frozen=True)
class Budget:
    """How long a run trains, and the model size, optimiser and data it trains with by default.

    A task with settings of its own per budget (a vocabulary size, say) subclasses it; the stored
    `budget_config` holds the fields of this class (`config`), and the task's `config` stores what
    of its own fields defines its runs."""

    max_epochs: int
    batch_size: int
    hidden_size: int
    lr: float
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # gradient norm clipping
    optimizer: str = "adamw"  # adamw | rmsprop (smoothing 0.9, as in Cooijmans et al. 2016)
    schedule: str = "cosine"  # cosine: decay to zero over the run, per step | constant
    orthogonal_init: bool = False  # recurrent weights orthogonal per gate (RecurrentCell.initialise)
    forget_bias: float | None = None  # the LSTM's forget-gate bias at initialisation; None: torch's default
    # None = the whole split; an int = that many batches per epoch
    train_batches: int | None = None
    val_batches: int | None = None
    test_batches: int | None = None
    note: str = ""  # one line shown in the report
    # the budget's values of task options, as (name, value) pairs: what it measures when that is not
    # the task's default (quick's 14 x 14 pixel scans); `--task-option` overrides them
    task_options: tuple[tuple[str, Any], ...] = ()
    # hidden sizes other than `hidden_size` by cell architecture, as (architecture, size) pairs: a
    # protocol that compares the cells at one parameter count (Bai et al. 2018: about 70K)
    hidden_by_architecture: tuple[tuple[str, int], ...] = ()
    # the splits' sizes for a task that draws or composes its data (the task's `config` stores them)
    sizes: Splits | None = None

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")

    def hidden_for(self, architecture: str) -> int:
        """The hidden size a cell of this architecture trains with by default."""
        return dict(self.hidden_by_architecture).get(architecture, self.hidden_size)

    def config(self) -> dict[str, Any]:
        """The budget as stored with a run; the pair fields only where set, so that the runs of a budget
        without them keep their configuration ids."""
        out = {f.name: getattr(self, f.name) for f in fields(Budget) if f.name != "sizes"}
        out["task_options"], out["hidden_by_architecture"] = dict(self.task_options), dict(self.hidden_by_architecture)
        for name in ("task_options", "hidden_by_architecture"):
            if not out[name]:
                del out[name]
        return out


@dataclass(frozen=True)
class ModelConfig:
    """The recurrent part of a run's network."""

    cell: str
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0


@dataclass(frozen=True)
class Baseline:
    """A reference predictor that learns nothing, scored by the task's own metric code on its test split.

    `network` stands in for a trained network: the task's `evaluate` calls it the same way (for a
    translation task it also answers `hypotheses(batch)`, the texts it proposes).
    """

    name: str  # e.g. "majority class"
    description: str  # one line: what it predicts
    network: Any


def _int_at_least(text: str, low: int, wanted: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise ValueError(f"must be {wanted}")
    return value


def positive_int(text: str) -> int:
    """A task option's parser: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """A task option's parser: an integer >= 0."""
    return _int_at_least(text, 0, "0 or a positive integer")


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A task option's parser: one of `choices`."""
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


@dataclass(frozen=True)
class Published:
    """A published result of the task's protocol, shown in the report beside the runs of `budget`
    (with these task option values) as a marked row outside the ranking; `value` in the report's
    units (percent for accuracy). `budget` None: beside the runs of every budget, as the scale the
    literature reached on the task's data (a model of its own, not one of the budgets' protocols)."""

    model: str  # e.g. "LSTM"
    value: float
    citation: str  # e.g. "Bai, Kolter & Koltun 2018, Table 1"
    budget: str | None = "paper"
    options: tuple[tuple[str, Any], ...] = ()

    def row(self) -> dict[str, Any]:
        return {"model": self.model, "value": self.value, "citation": self.citation, "budget": self.budget,
                "options": dict(self.options)}


@dataclass(frozen=True)
class Option:
    """A task option, given as `--task-option name=value` on the command line. `model_only`: it
    changes the model or its decoding, not the data, so the task's baselines (scored on the data
    alone) are shared by every value of it."""

    default: Any
    parse: Callable[[str], Any]
    help: str
    model_only: bool = False


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
    # the report's default "time to reach" on validation, in the report's units (percent for
    # accuracy and IoU); `rnnbench report --target TASK=VALUE` overrides it
    target: float | None = None
    budgets: dict[str, Budget] = {}  # by name: smoke, quick, paper
    published: tuple[Published, ...] = ()  # results in the literature, for the report
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
        self, data_dir: Path | None, batch_size: int, budget: Budget, download: bool = True, run_dir: Path | None = None
    ) -> L.LightningDataModule:
        """The data, in batches of `batch_size` (the runner's: the budget's); `download`: fetch
        missing files (in `prepare_data`, one process); `run_dir`: where files that belong to the run
        (a tokenizer, say) are saved."""
        raise NotImplementedError

    def network(self, model: ModelConfig, datamodule: L.LightningDataModule, budget: Budget) -> nn.Module:
        """The network; called after `datamodule.prepare_data()`."""
        raise NotImplementedError

    def check_model(self, model: ModelConfig) -> None:
        """Refuse, before anything runs, a model the task's network cannot be built with (ValueError
        naming the setting and what is allowed); every model by default."""

    def split_sizes(self) -> dict[str, dict[str, int]]:
        """The splits' sizes of every budget, as the task's config stores them."""
        return {name: asdict(budget.sizes) for name, budget in self.budgets.items()}

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

    def tokens_in(self, batch: Any) -> int | Tensor | None:
        """Tokens in a training batch, for tasks where tokens/s means something (a tensor on the
        batch's device is read only at the fit's end: no synchronisation per step)."""
        return None

    def artifacts(self, network: nn.Module, datamodule: L.LightningDataModule, out: Path) -> dict[str, Any]:
        """What the report shows besides numbers (example outputs, pictures), after the test."""
        return {}

    def baselines(self, datamodule: L.LightningDataModule) -> list[Baseline]:
        """The task's reference predictors; called after `datamodule.setup("fit")`, so that a baseline
        may be fitted to the training split (a majority class, a mean frame)."""
        raise NotImplementedError(f"task {self.name!r} defines no baselines")

    @torch.no_grad()
    def score_baseline(self, baseline: Baseline, datamodule: L.LightningDataModule,
                       test_batches: int | None = None) -> tuple[dict[str, float], int]:
        """The baseline's test metrics (those it updated) and the test samples they cover: the first
        `test_batches` batches of the test loader, as the runs' test covers (None: all of them)."""
        datamodule.setup("test")
        metrics = self.metrics()
        samples = 0
        for index, batch in enumerate(datamodule.test_dataloader()):
            if test_batches is not None and index >= test_batches:
                break
            self.evaluate(baseline.network, batch, metrics, "test", datamodule)
            samples += self.samples_in(batch)
        values = {name: float(metric.compute()) for name, metric in metrics.items() if metric.update_called}
        return values, samples

    #: record ‖∂L/∂h_t‖ per time step at initialisation and after training (batches `(x, target)`,
    #: `loss` a mean over the samples)
    records_state_gradients: bool = False
    STATE_GRADIENT_SAMPLES = 100

    def state_gradients(self, network: nn.Module, datamodule: L.LightningDataModule) -> dict[str, Any] | None:
        """The batch mean of ‖∂L/∂h_t‖ for t = 1..T over the first `STATE_GRADIENT_SAMPLES` test
        samples (always the same ones), L the loss summed over the samples, computed in float64;
        for the top layer's forward direction of the network's first recurrent cell
        (`cells.gradients`). None for a task that does not record it. Leaves the random number
        generators as they were."""
        if not self.records_state_gradients:
            return None
        from cells.gradients import state_gradient_norms

        datamodule.setup("test")
        device = next(network.parameters()).device
        with torch.random.fork_rng(devices=[]):
            xs, targets = [], []
            for x, target in datamodule.test_dataloader():  # the first test batches, up to the sample count
                xs.append(x)
                targets.append(target)
                if sum(len(x) for x in xs) >= self.STATE_GRADIENT_SAMPLES:
                    break
            x = torch.cat(xs)[: self.STATE_GRADIENT_SAMPLES].to(device)
            target = torch.cat(targets)[: self.STATE_GRADIENT_SAMPLES].to(device)
            x, target = (t.double() if t.is_floating_point() else t for t in (x, target))
            # in float64: a vanishing gradient reaches 1e-100 and below, under float32's range
            norms = state_gradient_norms(network, lambda net: self.loss(net(x), target) * len(x), torch.float64)[0]
        return {"norms": norms, "samples": len(x)}

    def config(self) -> dict[str, Any]:
        """The task's own settings, stored with every run."""
        return {"name": self.name, "version": self.version, "options": self.settings}

    def baseline_config(self) -> dict[str, Any]:
        """`config()` without the model-only options: what the baselines depend on."""
        options = {k: v for k, v in self.settings.items() if not self.options[k].model_only}
        return {**self.config(), "options": options}

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise ValueError(f"unknown budget {name!r} for task {self.name!r}; budgets: {', '.join(self.budgets)}")
        return self.budgets[name]


def optimizer_and_schedule(parameters, budget: Budget, total_steps: int, fused: bool = True):
    """The budget's optimiser and its learning-rate schedule (stepped once per optimiser step).

    AdamW runs fused (one kernel per weight for the whole update) where torch has that kernel:
    torch's default on CPU is a loop of a dozen element-wise ops per weight, which took 6.0 ms an
    update of the quick translation model's 2.6M weights on a 2-core Intel Xeon of this project's
    kind against 1.1 ms fused (6.5 ms with `foreach`), about 5 % of its training step.
    `fused=False` keeps torch's default (Lightning's mixed precision unscales the gradients before
    they are clipped only for an optimizer that does not unscale them in its own kernel).
    """
    parameters = list(parameters)
    if budget.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(parameters, lr=budget.lr, alpha=0.9, weight_decay=budget.weight_decay)
    else:
        fused = fused and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
        optimizer = torch.optim.AdamW(parameters, lr=budget.lr, weight_decay=budget.weight_decay,
                                      fused=True if fused else None)
    if budget.schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    else:
        schedule = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return optimizer, schedule


def initialise_cells(network: nn.Module, budget: Budget) -> nn.Module:
    """Apply the budget's initialisation to every recurrent cell and two-dimensional scan in the network."""
    from cells.base import RecurrentCell
    from cells.scan2d import Scan2D

    if budget.orthogonal_init or budget.forget_bias is not None:
        for module in network.modules():
            if isinstance(module, (RecurrentCell, Scan2D)):
                module.initialise(orthogonal=budget.orthogonal_init, forget_bias=budget.forget_bias)
    return network


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    if not isinstance(task, Task):
        raise TypeError(f"a task must be a Task instance, got {task!r}")
    if not task.budgets:
        raise ValueError(f"task {task.name!r} defines no budgets")
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
