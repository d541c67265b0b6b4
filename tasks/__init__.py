"""Benchmark tasks: data, network around a cell, loss and metrics, found by name in `TASKS`.

A new task is one new module here that ends with `register_task(...)`; every module is
imported with the package.
"""

import importlib
import pkgutil

from tasks.base import TASKS, Budget, ModelConfig, Task, register_task

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base"} and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Budget", "ModelConfig", "Task", "register_task"]
