"""The one LightningModule every run trains: it wires a task's network to steps, metrics and logs."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from tasks.base import Budget, Task, optimizer_and_schedule


class BenchModule(L.LightningModule):
    def __init__(self, network: nn.Module, task: Task, budget: Budget, config: dict | None = None):
        super().__init__()
        self.network, self.task, self.budget = network, task, budget
        self.save_hyperparameters(config or {})
        # one metric collection per stage (torchmetrics keeps their states apart and syncs them under DDP)
        self.val_metrics = task.metrics().clone(prefix="val/")
        self.test_metrics = task.metrics().clone(prefix="test/")

    def forward(self, *args):
        return self.network(*args)

    def training_step(self, batch, batch_idx):
        loss = self.task.training_loss(self.network, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=self.task.samples_in(batch))
        return loss

    def _evaluate(self, batch, metrics, stage):
        loss = self.task.evaluate(self.network, batch, metrics, stage, self.trainer.datamodule)
        size = self.task.samples_in(batch)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=size)
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=size)
        if stage == "test":  # how many samples the test metrics cover (the smoke budget tests on a few)
            self.log("test/samples", float(size), reduce_fx="sum", sync_dist=True, batch_size=size)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metrics, "test")

    def configure_optimizers(self):
        steps = int(self.trainer.estimated_stepping_batches)
        optimizer, schedule = optimizer_and_schedule(self.parameters(), self.budget, steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
