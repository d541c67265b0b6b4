"""The cell registry: every cell is registered here by name, with a one-line description."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from cells.base import HandwrittenCell, RecurrentCell
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
    """Register a cell under `name`. A hand-written cell brings its compiled variant with it
    (`<prefix>_compiled` for `<prefix>_handwritten`, held to the same twin, or to the hand-written
    cell itself where torch has no kernel for the architecture): a new architecture is one module
    that registers its hand-written cell (and its fused one, where there is one)."""
    if not (isinstance(cls, type) and issubclass(cls, RecurrentCell)):
        raise TypeError(f"cell {name!r} must be a RecurrentCell subclass, got {cls!r}")
    spec = CELLS.add(name, CellSpec(name, cls, description, twin, options, compiled))
    if issubclass(cls, HandwrittenCell) and not compiled and name.endswith("_handwritten"):
        from cells.compiled import compiled_variant

        register_cell(name.removesuffix("_handwritten") + "_compiled", compiled_variant(cls),
                      f"{name} with its time loop compiled (torch.compile)", twin or name, compiled=True, **options)
    return spec


def handwritten_class(architecture: str) -> type[HandwrittenCell]:
    """The hand-written (not compiled) cell class registered for an architecture: the twin that
    the gradient recorder steps through and whose `gates` the speed command counts."""
    for spec in CELLS:
        if spec.architecture == architecture and issubclass(spec.cls, HandwrittenCell) and not spec.compiled:
            return spec.cls
    known = sorted({spec.architecture for spec in CELLS})
    raise ValueError(f"no hand-written cell is registered for architecture {architecture!r}; "
                     f"architectures with one: {', '.join(known)}")


def gate_count(architecture: str) -> int:
    """Gate blocks of an architecture's weights (RNN 1, LSTM 4, GRU 3), as its hand-written cell declares."""
    return handwritten_class(architecture).gates


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
