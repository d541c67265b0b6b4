"""The values the command line offers and the runner accepts, each list defined once here, in a
module that imports no torch: `rnnbench --help` and a mistyped option answer at once, where
importing torch and Lightning takes seconds."""

from __future__ import annotations

from enum import Enum

BUDGETS = ("smoke", "quick", "paper")  # every task defines these three (tests/test_task_contract.py)
ACCELERATORS = ("auto", "cpu", "cuda")  # auto: cuda when available
PRECISIONS = ("32", "tf32", "bf16-mixed", "16-mixed")  # and auto: 32 on CPU, tf32 on CUDA (bench.precision)
KEEP_CHECKPOINTS = ("none", "best", "last")  # what a finished run keeps (bench.runner.finish_checkpoints)
LAUNCHERS = ("local", "slurm")
DEVICES = ("cpu", "cuda")  # what `rnnbench speed` times on


def choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum of `values` (member names are the values), for a Typer option's choices."""
    return Enum(name, {value: value for value in values}, type=str)


def check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """A clear error naming the setting and what it allows."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
