"""The first steps of the `paper` protocol on a 784-step MNIST task: does validation accuracy
leave the chance plateau?

    python benchmarks/pixel_mnist_protocol.py --data-dir ../shared/data                 # lstm_fused, 1,000 steps
    python benchmarks/pixel_mnist_protocol.py --cell gru_fused --task mnist-permuted --steps 500

It trains with the task's own data, network, initialisation, optimiser and clipping of the
`paper` budget (the pieces `rnnbench run --budget paper` uses), but stops after `--steps`
optimiser steps, which a full run's 100 epochs would not, and validates on the first
`--val-size` validation images every `--every` steps. It prints one line per validation:
step, seconds, mean training loss since the last line, validation accuracy, and the gradient's
norm before clipping (median and largest since the last line; the share of steps clipped).

To find why a cell stalls under the protocol, change one piece at a time:

    python benchmarks/pixel_mnist_protocol.py --data-dir ../shared/data --steps 860 --orthogonal   # Keras's recurrent init
    python benchmarks/pixel_mnist_protocol.py --data-dir ../shared/data --steps 860 --optimizer adamw
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
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
    parser.add_argument("--orthogonal", action="store_true", help="orthogonal recurrent weights (Keras's default)")
    parser.add_argument("--forget-bias", type=float, default=None, help="the LSTM's forget-gate bias (budget's if unset)")
    parser.add_argument("--optimizer", choices=("rmsprop", "adamw"), default=None, help="the budget's if unset")
    parser.add_argument("--lr", type=float, default=None, help="the budget's if unset")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    task = TASKS.get(args.task)
    budget = task.budget("paper")
    changes = {"orthogonal_init": True} if args.orthogonal else {}
    changes.update({name: value for name, value in (("forget_bias", args.forget_bias), ("optimizer", args.optimizer),
                                                     ("lr", args.lr)) if value is not None})
    budget = dataclasses.replace(budget, **changes)
    data = task.datamodule(args.data_dir, budget.batch_size, task.budget("paper"))
    data.prepare_data()
    data.setup("fit")
    device = torch.device(args.device)
    model = ModelConfig(args.cell, budget.hidden_for(CELLS.get(args.cell).architecture))
    network = initialise_cells(task.network(model, data, task.budget("paper")), budget).to(device)
    steps_per_epoch = len(data.train_dataloader())
    optimizer, schedule = optimizer_and_schedule(network.parameters(), budget, budget.max_epochs * steps_per_epoch)
    val_x = torch.stack([data.val_set[i][0] for i in range(args.val_size)]).to(device)
    val_y = torch.stack([data.val_set[i][1] for i in range(args.val_size)]).to(device)
    print(f"{args.task}, {args.cell} on {device}, paper budget: {budget.optimizer} lr {budget.lr}, {budget.schedule}, batch "
          f"{budget.batch_size}, hidden {budget.hidden_size}, clip {budget.grad_clip}, orthogonal recurrent "
          f"{budget.orthogonal_init}, forget bias {budget.forget_bias}; validation on {args.val_size} images",
          flush=True)
    print("step  seconds  train_loss  val_accuracy_%  grad_norm_median  grad_norm_max  clipped_%", flush=True)
    batches = itertools.chain.from_iterable(data.train_dataloader() for _ in itertools.count())
    start, losses, norms = time.perf_counter(), [], []
    for step, (x, y) in enumerate(batches, start=1):
        network.train()
        loss = task.training_loss(network, (x.to(device), y.to(device)))
        optimizer.zero_grad()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(network.parameters(), budget.grad_clip)))
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % args.every == 0 or step == args.steps:
            network.eval()
            with torch.no_grad():
                accuracy = torch.cat([network(chunk).argmax(-1) for chunk in val_x.split(500)]).eq(val_y).float().mean()
            print(f"{step:4d}  {time.perf_counter() - start:7.0f}  {sum(losses) / len(losses):10.4f}  "
                  f"{100 * accuracy:14.2f}  {statistics.median(norms):16.3f}  {max(norms):13.3f}  "
                  f"{100 * sum(n > budget.grad_clip for n in norms) / len(norms):9.0f}", flush=True)
            losses, norms = [], []
        if step == args.steps:
            break


if __name__ == "__main__":
    main()
