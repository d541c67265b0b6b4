"""A run's configuration: what decides what it computes (its identity, hashed into its run id)
and how it is executed, resolved once."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, fields
from typing import Any, Iterable

import torch

from bench.choices import ACCELERATORS, BUDGETS, check
from bench.precision import resolve_precision
from bench.store import content_hash
from cells import CELLS
from tasks import TASKS, ModelConfig
from tasks.base import Budget, Task, initialise_cells

MAX_SEED = 2**32 - 1  # numpy's seeds are unsigned 32-bit; Lightning's seed_everything keeps to the same range


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run computes (its identity), plus how it is executed."""

    task: str
    cell: str
    seed: int = 0
    budget: str = "quick"  # smoke | quick | paper
    num_layers: int = 1
    hidden_size: int | None = None  # None: the budget's default for the task
    bidirectional: bool = False
    dropout: float = 0.0  # between stacked layers
    devices: int = 1  # > 1: one run trained with DDP over that many devices (per node)
    nodes: int = 1  # > 1: that many nodes of `devices` each, one DDP job (SLURM launcher only)
    accelerator: str = "auto"  # auto: cuda when available, else cpu
    precision: str = "auto"  # auto | 32 | tf32 | bf16-mixed | 16-mixed (bench.precision); auto: 32 on CPU, tf32 on CUDA
    task_options: tuple[tuple[str, str], ...] = ()  # (name, value) pairs, see the task's `options`

    def __post_init__(self):
        CELLS.get(self.cell)
        check("budget", self.budget, BUDGETS)
        self.task_settings  # the task and its options resolve, or the configuration is refused
        check("accelerator", self.accelerator, ACCELERATORS)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            # Lightning's seed_everything would replace an out-of-range seed with a random one, silently
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}] (what numpy and Lightning accept), "
                             f"got {self.seed!r}")
        for name in ("num_layers", "devices", "nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size is not None and (not isinstance(self.hidden_size, int) or self.hidden_size < 1):
            raise ValueError(f"hidden_size must be a positive integer, got {self.hidden_size!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.dropout > 0 and self.num_layers == 1:
            raise ValueError(f"dropout={self.dropout} acts between layers, so it needs num_layers > 1 (--layers)")
        self.task_settings.check_model(
            ModelConfig(self.cell, self.resolved_hidden_size, self.num_layers, self.bidirectional, self.dropout))
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("accelerator 'cuda' was asked for but torch sees no CUDA device")
        self.resolved_precision

    # What the run's fields resolve to (the configured task, its budget, the device, precision and
    # hidden size), each worked out once: a frozen dataclass's cached_property writes to the
    # instance's __dict__ (`__getstate__` leaves them out of a pickle, for a SLURM job to resolve
    # where it runs).
    @functools.cached_property
    def task_settings(self) -> Task:
        """The registered task with this run's options set: the budget's, then the user's."""
        return TASKS.get(self.task).configured(self.options)

    @functools.cached_property
    def budget_settings(self) -> Budget:
        return TASKS.get(self.task).budget(self.budget)

    @functools.cached_property
    def options(self) -> dict[str, str]:
        """The task options this run sets: the budget's (`Budget.task_options`), then the user's."""
        return {**{k: str(v) for k, v in self.budget_settings.task_options}, **dict(self.task_options)}

    @functools.cached_property
    def device(self) -> str:
        """The accelerator the run trains on: cpu or cuda (auto: cuda when available)."""
        if self.accelerator == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.accelerator

    @functools.cached_property
    def resolved_precision(self) -> str:
        return resolve_precision(self.precision, self.device)

    @functools.cached_property
    def resolved_hidden_size(self) -> int:
        return self.hidden_size or self.budget_settings.hidden_for(CELLS.get(self.cell).architecture)

    @functools.cached_property
    def _identity(self) -> dict[str, Any]:
        task = self.task_settings
        return {
            "task": self.task, "task_version": task.version, "task_config": task.config(),
            "cell": self.cell, "seed": self.seed,
            "budget": self.budget, "num_layers": self.num_layers, "hidden_size": self.resolved_hidden_size,
            "bidirectional": self.bidirectional, "dropout": self.dropout, "devices": self.devices,
            "accelerator": self.device,
            **({"nodes": self.nodes} if self.nodes > 1 else {}),  # 1 stays out of the hash: stored runs keep their ids
            # 32, the only precision before the option existed, stays out of the hash: stored runs keep their ids
            **({"precision": self.resolved_precision} if self.resolved_precision != "32" else {}),
        }

    def identity(self) -> dict[str, Any]:
        """What the run computes: the fields its id hashes."""
        return copy.deepcopy(self._identity)

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def network(self, datamodule) -> torch.nn.Module:
        """The run's network, initialised as its budget says (after `datamodule.prepare_data()`: a
        task may size its network by the data)."""
        model = ModelConfig(self.cell, self.resolved_hidden_size, self.num_layers, self.bidirectional, self.dropout)
        return initialise_cells(self.task_settings.network(model, datamodule, self.budget_settings), self.budget_settings)

    @functools.cached_property
    def run_id(self) -> str:
        return content_hash(self._identity)

    @functools.cached_property
    def label(self) -> str:
        model = f"{self.num_layers}x{self.resolved_hidden_size}" + ("-bi" if self.bidirectional else "")
        options = "".join(f" {k}={v}" for k, v in self.options.items())
        precision = "" if self.resolved_precision == "32" else f" precision={self.resolved_precision}"
        return f"{self.task}{options} {self.cell} {model} seed={self.seed} budget={self.budget}{precision}"


def expand(tasks: Iterable[str], cells: Iterable[str], seeds: Iterable[int], **common: Any) -> list[RunConfig]:
    """Every combination of the repeatable options, in task, cell, seed order."""
    return [RunConfig(task=t, cell=c, seed=s, **common) for t in tasks for c in cells for s in seeds]


def stored_config(config: RunConfig) -> dict[str, Any]:
    """The configuration stored with a run: its identity and its budget's settings."""
    return {**config.identity(), "budget_config": config.budget_settings.config()}
