"""Step time, throughput and memory of a training run, measured by a Lightning callback.

Memory: on CUDA, the allocator's peak over the fit (`torch.cuda.max_memory_allocated`).
On CPU there is no allocator peak to read, so one training step is measured with autograd's
saved-tensor hooks: the bytes that the forward pass keeps for backward (activations), counted
once per storage and without the parameters; parameters and optimiser state are counted apart.
"""

from __future__ import annotations

import statistics
import time

import lightning as L
import torch

MEMORY_KIND = {"cuda": "cuda allocator peak", "cpu": "cpu: saved for backward + params + optimizer state"}
WARMUP_STEPS = 3  # steps left out of the step-time statistics (allocation, lazy init)
MEMORY_STEP = 1  # the training step measured with saved-tensor hooks on CPU
CURVE_KEY = "curve/epochs"  # (epochs, 4): epoch, validation primary metric, mean training loss, seconds
CURVE_FIELDS = ("epoch", "val", "train_loss", "seconds")


def curve_rows(table: torch.Tensor) -> list[dict[str, float]]:
    """The learning curve as stored: one dict per validation."""
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in zip(CURVE_FIELDS, row)} for row in table.tolist()]


def median_iqr(samples: list[float]) -> tuple[float, float]:
    """The median of timed samples and their interquartile range (0 for a single sample)."""
    if len(samples) < 2:
        return samples[0], 0.0
    q = statistics.quantiles(samples, n=4)
    return statistics.median(samples), q[2] - q[0]


def samples_per_second(samples_per_step: int, step_seconds: float) -> float:
    """Steady-state training throughput, from the median step time."""
    return samples_per_step / step_seconds if step_seconds > 0 else float("nan")


class SavedTensorBytes:
    """Context manager: the bytes of distinct storages autograd saves for backward, params excluded."""

    def __init__(self, exclude: list[torch.Tensor]):
        self.exclude = {p.untyped_storage().data_ptr() for p in exclude}
        self.storages: dict[int, int] = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.exclude:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def nbytes(self) -> int:
        return sum(self.storages.values())

    def __enter__(self):
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)


class Measure(L.Callback):
    """Times every training step and measures memory once.

    On CPU a step's time is the host clock around it (the work is done when the step returns). On
    CUDA the work is queued, so a host clock would need a synchronisation on both sides of every
    step, stalling the queue that keeps the GPU busy; instead a CUDA event is recorded before and
    after each step, and the elapsed times are read once per epoch. Either way `step_seconds` holds
    one duration per step: the median and IQR are of steps, not of windows.
    """

    def __init__(self, monitor: str = "", mode: str = "max", clock=time.perf_counter):
        self.clock = clock
        self.monitor, self.mode = monitor, mode
        self.best_val: float | None = None
        self.step_seconds: list[float] = []
        self.tokens: list[int | torch.Tensor] = []  # tokens per training step, for tasks that count tokens
        self.samples_per_step = 0
        self.fit_seconds = 0.0
        self.memory: dict[str, float] = {}
        self._saved: SavedTensorBytes | None = None
        # the learning curve: one row per validation, (epoch, val metric, mean training loss, seconds
        # since the fit started); the loss is summed on the device, read once per epoch (no sync a step)
        self.curve: list[tuple[float, float, float, float]] = []
        self._loss_sum: torch.Tensor | float = 0.0
        self._loss_steps = 0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []  # CUDA: (start, end) per step

    @staticmethod
    def _on_cuda(trainer) -> bool:
        return trainer.strategy.root_device.type == "cuda"

    def _read_events(self) -> None:
        """Move the recorded steps' CUDA event times into `step_seconds` (waits for the last one)."""
        if self._events:
            self._events[-1][1].synchronize()
            self.step_seconds.extend(start.elapsed_time(end) / 1e3 for start, end in self._events)
            self._events = []

    _elapsed_before = 0.0  # seconds of fit before a resumed run's checkpoint

    def on_fit_start(self, trainer, pl_module):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)
        self._fit_start = self.clock() - self._elapsed_before  # a resumed run's clock goes on where it stopped

    # what a resumed run needs to report as if it had not stopped: saved with each epoch's checkpoint
    def state_dict(self) -> dict:
        self._read_events()
        return {"step_seconds": list(self.step_seconds), "tokens": [int(t) for t in self.tokens],
                "samples_per_step": self.samples_per_step, "memory": dict(self.memory), "curve": list(self.curve),
                "best_val": self.best_val, "elapsed": self.clock() - self._fit_start}

    def load_state_dict(self, state: dict) -> None:
        self.step_seconds, self.tokens = list(state["step_seconds"]), list(state["tokens"])
        self.samples_per_step, self.memory = state["samples_per_step"], dict(state["memory"])
        self.curve, self.best_val = [tuple(row) for row in state["curve"]], state["best_val"]
        self._elapsed_before = state["elapsed"]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (not self._on_cuda(trainer) and trainer.global_step == MEMORY_STEP and self._saved is None
                and "saved_bytes" not in self.memory):
            self._saved = SavedTensorBytes(list(pl_module.parameters())).__enter__()
        if self._on_cuda(trainer):
            self._events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self._events[-1][0].record()
        else:
            self._step_start = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._on_cuda(trainer):
            self._events[-1][1].record()
        else:
            self.step_seconds.append(self.clock() - self._step_start)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._loss_sum = self._loss_sum + loss.detach()
            self._loss_steps += 1
        self.samples_per_step = pl_module.task.samples_in(batch) * trainer.world_size
        tokens = pl_module.task.tokens_in(batch)
        if tokens is not None:
            self.tokens.append(tokens * trainer.world_size)
        if self._saved is not None and "saved_bytes" not in self.memory:
            self._saved.__exit__(None, None, None)
            self.memory["saved_bytes"] = self._saved.nbytes

    def on_train_epoch_end(self, trainer, pl_module):
        self._read_events()

    def on_validation_end(self, trainer, pl_module):  # after the module logged the epoch's metrics
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not trainer.sanity_checking:
            value = float(value)
            better = max if self.mode == "max" else min
            self.best_val = value if self.best_val is None else better(self.best_val, value)
            loss = float(self._loss_sum) / self._loss_steps if self._loss_steps else float("nan")
            self.curve.append((trainer.current_epoch + 1, value, loss, self.clock() - self._fit_start))
            self._loss_sum, self._loss_steps = 0.0, 0

    def on_fit_end(self, trainer, pl_module):
        self._read_events()
        if self._on_cuda(trainer):
            torch.cuda.synchronize(trainer.strategy.root_device)
        self.fit_seconds = self.clock() - self._fit_start
        params = sum(p.numel() * p.element_size() for p in pl_module.parameters())
        optimizer = sum(
            t.numel() * t.element_size()
            for opt in trainer.optimizers
            for state in opt.state.values()
            for t in state.values()
            if isinstance(t, torch.Tensor)
        )
        self.memory.update(params_bytes=params, optimizer_bytes=optimizer)
        self.epochs = trainer.current_epoch
        if trainer.strategy.root_device.type == "cuda":
            self.memory["peak_bytes"] = torch.cuda.max_memory_allocated(trainer.strategy.root_device)
        else:
            self.memory["peak_bytes"] = self.memory.get("saved_bytes", 0) + params + optimizer
        # under ddp_spawn only callback_metrics travel back to the launching process
        for key, value in self.summary().items():
            trainer.callback_metrics[f"measure/{key}"] = torch.tensor(float(value), dtype=torch.float64)
        trainer.callback_metrics[CURVE_KEY] = torch.tensor(self.curve, dtype=torch.float64).view(-1, 4)

    def tokens_per_second(self) -> float:
        """Tokens over time of the timed steps (batches differ in tokens, so not from the median)."""
        start = WARMUP_STEPS if len(self.step_seconds) > WARMUP_STEPS else 0
        tokens = sum(int(t) for t in self.tokens[start:])  # device tensors: read once, at the end
        return tokens / sum(self.step_seconds[start:])

    def summary(self) -> dict[str, float]:
        timed = self.step_seconds[WARMUP_STEPS:] or self.step_seconds
        median, iqr = median_iqr(timed) if timed else (float("nan"), float("nan"))
        return {
            "steps": len(self.step_seconds),
            "epochs": getattr(self, "epochs", 0),
            "step_ms_median": 1e3 * median,
            "step_ms_iqr": 1e3 * iqr,
            "samples_per_s": samples_per_second(self.samples_per_step, median),
            **({"tokens_per_s": self.tokens_per_second()} if self.tokens else {}),
            "fit_seconds": self.fit_seconds,
            **({"best_val": self.best_val} if self.best_val is not None else {}),
            **self.memory,
        }


class RandomStates(L.Callback):
    """The random number generators' states travel with each checkpoint (taken at an epoch's end),
    so that a run resumed there draws the same batches (and dropout masks) as if it had not
    stopped. They are set back as soon as the checkpoint is read, before the fit creates its data
    iterators: creating one draws from the generator (a DataLoader's base seed), and Lightning
    creates the first epoch's before any training hook runs.

    Under DDP each process has its own states (processes whose batches differ in shape, as the
    translation task's do, draw different amounts), and only the first process writes the
    checkpoint: so every process's states are gathered into it, and each process reads back its
    own. A checkpoint holds {"ranks": [states of process 0, 1, ...]}."""

    @staticmethod
    def _distributed() -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    def state_dict(self) -> dict:
        states = self.local_states()
        if self._distributed():
            # every process saves the checkpoint (Lightning calls this on all), so all join the gather
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)
            return {"ranks": gathered}
        return {"ranks": [states]}

    def load_state_dict(self, state: dict) -> None:
        ranks = state.get("ranks", [state])  # a checkpoint of an earlier rnnbench: one process's states
        rank = torch.distributed.get_rank() if self._distributed() else 0
        if rank >= len(ranks):
            raise ValueError(f"the checkpoint holds the random states of {len(ranks)} processes, not of process {rank}: "
                             "a run resumes with as many devices as it started with")
        self.set_local_states(ranks[rank])

    @staticmethod
    def local_states() -> dict:
        """This process's generators' states: plain types and tensors only (checkpoints load with
        torch.load(weights_only=True))."""
        import random

        import numpy as np

        name, keys, position, has_gauss, cached = np.random.get_state()
        return {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(position),
                                                       int(has_gauss), float(cached)),
                "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    @staticmethod
    def set_local_states(states: dict) -> None:
        import random

        import numpy as np

        random.setstate(states["python"])
        name, keys, position, has_gauss, cached = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
