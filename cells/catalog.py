"""The cell registry: every cell is registered here by name, with a one-line description."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from cells.base import RecurrentCell
from cells.registry import Registry


@dataclass(frozen=True)
class CellSpec:
    name: str
    cls: type[RecurrentCell]
    description: str
    #: the registered cell this one must compute exactly (None for a library cell)
    twin: str | None = None
    #: keyword options the registration fixes (a variant is a registration, not a copy)
    options: dict[str, Any] = field(default_factory=dict)
    #: compiled on first use (torch.compile): costly set-up, once per input shape
    compiled: bool = False

    @property
    def architecture(self) -> str:
        return self.cls.architecture

    def option_names(self) -> list[str]:
        base = set(inspect.signature(RecurrentCell.__init__).parameters)
        params = inspect.signature(self.cls.__init__).parameters.values()
        return [p.name for p in params if p.name not in base and p.kind is p.POSITIONAL_OR_KEYWORD]


CELLS: Registry[CellSpec] = Registry("cell")


def register_cell(
    name: str, cls: type[RecurrentCell], description: str, twin: str | None = None, compiled: bool = False,
    **options: Any,
) -> CellSpec:
    if not (isinstance(cls, type) and issubclass(cls, RecurrentCell)):
        raise TypeError(f"cell {name!r} must be a RecurrentCell subclass, got {cls!r}")
    return CELLS.add(name, CellSpec(name, cls, description, twin, options, compiled))


def build_cell(
    name: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    **options: Any,
) -> RecurrentCell:
    """Build the registered cell `name`; `options` are cell-specific (e.g. `nonlinearity`)."""
    spec = CELLS.get(name)
    allowed = spec.option_names()
    for option in options:
        if option not in allowed:
            raise ValueError(
                f"cell {name!r} has no option {option!r}; its options: {', '.join(allowed) or 'none'}"
            )
    return spec.cls(input_size, hidden_size, num_layers, bidirectional, dropout, **{**spec.options, **options})


@torch.no_grad()
def copy_weights(source: RecurrentCell, target: RecurrentCell) -> None:
    """Copy every weight of `source` into `target` by its `torch.nn` name (shapes must agree)."""
    src, dst = source.weights(), target.weights()
    if src.keys() != dst.keys():
        raise ValueError(
            f"cells have different weights: only in source {sorted(src.keys() - dst.keys())}, "
            f"only in target {sorted(dst.keys() - src.keys())}"
        )
    for key, value in src.items():
        if value.shape != dst[key].shape:
            raise ValueError(f"weight {key!r}: source shape {tuple(value.shape)} != target {tuple(dst[key].shape)}")
        dst[key].copy_(value)
