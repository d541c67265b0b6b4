"""The one LightningModule every run trains: it wires a task's network to steps, metrics and logs."""

from __future__ import annotations

import lightning as L
import torch
import torchmetrics
from torch import nn

from bench.allocator import keep_freed_memory
from bench.precision import set_backend_precision
from tasks.base import Budget, Task, optimizer_and_schedule

# A NaN or infinite training loss fails the run. Reading the loss on the host is a device
# synchronisation, which on a GPU stalls the queue of launched work; so the losses are summed on
# the device and the sum is read every this many steps and at each epoch's end.
FINITE_CHECK_EVERY = 50


class BenchModule(L.LightningModule):
    def __init__(self, network: nn.Module, task: Task, budget: Budget, config: dict | None = None,
                 precision: str = "32"):
        super().__init__()
        self.network, self.task, self.budget, self.precision = network, task, budget, precision
        self.save_hyperparameters(config or {})
        # one metric collection per stage (torchmetrics keeps their states apart and syncs them under DDP)
        self.val_metrics = task.metrics().clone(prefix="val/")
        self.test_metrics = task.metrics().clone(prefix="test/")
        # the loss (a mean over samples) and the samples seen, per stage: summed on the device and
        # synchronised across DDP processes by torchmetrics when computed, once per epoch
        self.val_loss = torchmetrics.MeanMetric()
        # Manual optimisation: the training step runs zero_grad, backward, the optimiser's and the
        # schedule's steps itself. Lightning's automatic optimisation wraps each in a closure and
        # hooks through the strategy and precision plugin, host time that weighed on a small model's
        # step on the 2-core CPU (docs/usage.md, "Harness overhead")
        self.automatic_optimization = False

    # a network's own step counter (the video task's scheduled sampling) travels with the checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if hasattr(self.network, "training_steps"):
            checkpoint["network_training_steps"] = self.network.training_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "network_training_steps" in checkpoint:
            self.network.training_steps = checkpoint["network_training_steps"]

    def setup(self, stage: str) -> None:
        # in every process of the run (ddp_spawn starts fresh ones): the backends' FP32 mode, and
        # malloc keeping freed memory, so that steps reuse it instead of page-faulting it in (CPU)
        set_backend_precision(self.precision)
        keep_freed_memory()

    def forward(self, *args):
        return self.network(*args)

    def training_step(self, batch, batch_idx):
        step = self.global_step  # the optimiser's step below counts it on
        loss = self.task.training_loss(self.network, batch)
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()  # clipping: on_before_optimizer_step, after a mixed precision's unscaling
        schedule.step()
        self._loss_window = loss.detach() if self._window_start is None else self._loss_window + loss.detach()
        if self._window_start is None:
            self._window_start = step
        self._window_end = step
        if self._window_end + 1 - self._window_start >= FINITE_CHECK_EVERY:
            self._check_finite()
        # logged on the steps the logger writes (Lightning's `log_every_n_steps`), and only when a
        # logger or the progress bar reads it: each `self.log` costs host time (about 1 ms on the
        # 2-core CPU), and a value logged every step would only be overwritten
        if self._loss_read and (step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss", loss, prog_bar=True, batch_size=self.task.samples_in(batch))
        return loss

    _loss_read = True  # whether a logger or the progress bar reads the training loss (set when training starts)

    def on_train_start(self) -> None:
        self._loss_read = bool(self.trainer.loggers) or self.trainer.progress_bar_callback is not None

    def on_before_optimizer_step(self, optimizer) -> None:
        # what the Trainer's gradient_clip_val does under automatic optimisation: the norm of the
        # optimiser's parameters' gradients, clipped to the budget's
        if self.budget.grad_clip:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.budget.grad_clip)

    _window_start: int | None = None  # first step whose loss is in the unchecked sum

    def _check_finite(self) -> None:
        if self._window_start is not None and not torch.isfinite(self._loss_window):
            raise FloatingPointError(
                f"training loss is not finite (nan or inf) in steps {self._window_start + 1}-{self._window_end + 1}")
        self._window_start = None

    def on_train_epoch_end(self) -> None:
        self._check_finite()

    # Validation, inside every fit, updates the metrics per batch and logs them once per epoch: a
    # `self.log` of every metric on every batch cost more host time than a small model's
    # validation forward pass. The test, once per run, logs per batch.
    def validation_step(self, batch, batch_idx):
        loss = self.task.evaluate(self.network, batch, self.val_metrics, "val", self.trainer.datamodule)
        self.val_loss.update(loss, self.task.samples_in(batch))

    def on_validation_epoch_end(self) -> None:
        # torchmetrics synchronises the states across DDP processes in compute()
        self.log_dict({**self.val_metrics.compute(), "val/loss": self.val_loss.compute()}, prog_bar=True, sync_dist=True)
        self.val_metrics.reset()
        self.val_loss.reset()

    def test_step(self, batch, batch_idx):
        metrics = self.test_metrics
        loss = self.task.evaluate(self.network, batch, metrics, "test", self.trainer.datamodule)
        size = self.task.samples_in(batch)
        self.log("test/loss", loss, sync_dist=True, batch_size=size)
        self.log_dict(metrics, batch_size=size)
        # how many samples the test metrics cover (the smoke budget tests on a few)
        self.log("test/samples", float(size), reduce_fx="sum", sync_dist=True, batch_size=size)

    def configure_optimizers(self):
        steps = int(self.trainer.estimated_stepping_batches)
        # Lightning's mixed-precision plugin unscales the gradients before on_before_optimizer_step
        # (which clips them) only for an optimizer that does not unscale inside its kernel, as a fused
        # one does, so the mixed precisions keep torch's default AdamW
        optimizer, schedule = optimizer_and_schedule(self.parameters(), self.budget, steps,
                                                     fused=not self.precision.endswith("-mixed"))
        # the training step steps the schedule; Lightning keeps its state in the checkpoints
        return {"optimizer": optimizer, "lr_scheduler": schedule}
