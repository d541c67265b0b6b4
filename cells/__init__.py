"""Recurrent cells behind one interface (see `cells.base`), found by name in `CELLS`.

    from cells import build_cell
    cell = build_cell("lstm_handwritten", input_size=28, hidden_size=128, bidirectional=True)
    output, (h, c) = cell(x)            # x (B, T, 28) -> output (B, T, 256)

A new cell is one new module in this package that ends with `register_cell(...)`; every
module here is imported when the package is.
"""

import importlib
import pkgutil

from cells.base import FusedCell, HandwrittenCell, RecurrentCell, State
from cells.catalog import CELLS, CellSpec, build_cell, copy_weights, register_cell
from cells.registry import Registry, UnknownNameError

_INFRASTRUCTURE = {"base", "catalog", "compiled", "registry", "gradients", "scan2d", "linear_recurrence"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "CELLS",
    "CellSpec",
    "FusedCell",
    "HandwrittenCell",
    "RecurrentCell",
    "Registry",
    "State",
    "UnknownNameError",
    "build_cell",
    "copy_weights",
    "register_cell",
]
