"""The training step BenchModule runs itself (manual optimisation): clipping, the schedule, the step count."""

from __future__ import annotations

import dataclasses
import math

import lightning as L
import torch

from bench.module import BenchModule
from tasks import TASKS, ModelConfig
from tasks.base import Splits, initialise_cells


def test_a_training_step_clips_the_gradients_and_steps_the_schedule():
    L.seed_everything(0, verbose=False)
    task = TASKS.get("adding").configured({})
    clip = 1e-3  # far under an untrained network's gradient norm: every step clips
    budget = dataclasses.replace(task.budget("smoke"), grad_clip=clip)
    data = task.datamodule(None, budget.batch_size, task.budget("smoke"))
    data.prepare_data()
    network = initialise_cells(task.network(ModelConfig("lstm_fused", 8), data, task.budget("smoke")), budget)
    module = BenchModule(network, task, budget)
    norms, rates = [], []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(accelerator="cpu", max_epochs=2, limit_train_batches=4, limit_val_batches=1,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(module, datamodule=data)
    steps = 2 * 4
    assert trainer.global_step == steps and len(norms) == steps
    assert all(math.isclose(norm, clip, rel_tol=1e-4) for norm in norms), norms
    # cosine decay over the run's steps, stepped once per step: the rate after step k
    expected = [budget.lr * (1 + math.cos(math.pi * k / steps)) / 2 for k in range(1, steps + 1)]
    assert all(math.isclose(rate, want, rel_tol=1e-6, abs_tol=1e-12) for rate, want in zip(rates, expected)), rates


class Collect(L.pytorch.loggers.Logger):
    """A logger that keeps what it is given, in memory."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    name, version = "collect", 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))


def fit_adding(logger, progress: bool, steps: int = 20) -> None:
    L.seed_everything(0, verbose=False)
    task = TASKS.get("adding").configured({})
    budget = task.budget("smoke")
    data = task.datamodule(None, budget.batch_size, task.budget("smoke"))
    data.sizes = Splits(train=budget.batch_size * steps, val=8, test=8)
    network = initialise_cells(task.network(ModelConfig("rnn_fused", 4), data, task.budget("smoke")), budget)
    module = BenchModule(network, task, budget)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_val_batches=1, num_sanity_val_steps=0,
                        logger=logger, enable_checkpointing=False, enable_progress_bar=progress,
                        enable_model_summary=False, log_every_n_steps=10)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == steps


def test_the_training_loss_is_logged_for_a_logger_or_the_progress_bar_only(monkeypatch):
    logger = Collect()
    fit_adding(logger, progress=False)
    logged = [step for step, metrics in logger.rows if "train/loss" in metrics]
    assert logged == [9, 19]  # every log_every_n_steps-th step (0-based steps)
    calls = []
    monkeypatch.setattr(BenchModule, "log", lambda self, name, *a, **k: calls.append(name))
    fit_adding(False, progress=True)
    assert calls.count("train/loss") == 2  # the progress bar shows it
    calls.clear()
    fit_adding(False, progress=False)
    assert "train/loss" not in calls  # nobody reads it: not logged, no host time spent on it
