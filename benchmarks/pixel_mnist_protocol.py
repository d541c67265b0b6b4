"""The first steps of the `paper` protocol on a 784-step MNIST task: does validation accuracy
leave the chance plateau?

    python benchmarks/pixel_mnist_protocol.py --data-dir ../shared/data                 # lstm_fused, 1,000 steps
    python benchmarks/pixel_mnist_protocol.py --cell gru_fused --task mnist-permuted --steps 500

It trains with the task's own data, network, initialisation, optimiser and clipping of the
`paper` budget (the pieces `rnnbench run --budget paper` uses), but stops after `--steps`
optimiser steps, which a full run's 100 epochs would not, and validates on the first
`--val-size` validation images every `--every` steps. It prints one line per validation:
step, seconds, mean training loss since the last line, validation accuracy.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from cells import CELLS
from tasks import TASKS, ModelConfig
from tasks.base import initialise_cells, optimizer_and_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist-pixel")
    parser.add_argument("--cell", default="lstm_fused")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    task = TASKS.get(args.task)
    budget = task.budget("paper")
    data = task.datamodule(args.data_dir, budget.batch_size, "paper")
    data.prepare_data()
    data.setup("fit")
    device = torch.device(args.device)
    model = ModelConfig(args.cell, budget.hidden_for(CELLS.get(args.cell).architecture))
    network = initialise_cells(task.network(model, data, "paper"), budget).to(device)
    steps_per_epoch = len(data.train_dataloader())
    optimizer, schedule = optimizer_and_schedule(network.parameters(), budget, budget.max_epochs * steps_per_epoch)
    val_x = torch.stack([data.val_set[i][0] for i in range(args.val_size)]).to(device)
    val_y = torch.stack([data.val_set[i][1] for i in range(args.val_size)]).to(device)
    print(f"{args.task}, {args.cell} on {device}, paper budget: {budget.optimizer} lr {budget.lr}, {budget.schedule}, batch "
          f"{budget.batch_size}, hidden {budget.hidden_size}, clip {budget.grad_clip}, orthogonal recurrent "
          f"{budget.orthogonal_init}, forget bias {budget.forget_bias}; validation on {args.val_size} images",
          flush=True)
    print("step  seconds  train_loss  val_accuracy_%", flush=True)
    batches = itertools.chain.from_iterable(data.train_dataloader() for _ in itertools.count())
    start, losses = time.perf_counter(), []
    for step, (x, y) in enumerate(batches, start=1):
        network.train()
        loss = task.training_loss(network, (x.to(device), y.to(device)))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), budget.grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % args.every == 0 or step == args.steps:
            network.eval()
            with torch.no_grad():
                accuracy = torch.cat([network(chunk).argmax(-1) for chunk in val_x.split(500)]).eq(val_y).float().mean()
            print(f"{step:4d}  {time.perf_counter() - start:7.0f}  {sum(losses) / len(losses):10.4f}  "
                  f"{100 * accuracy:14.2f}", flush=True)
            losses = []
        if step == args.steps:
            break


if __name__ == "__main__":
    main()
