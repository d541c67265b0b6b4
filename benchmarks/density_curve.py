"""How far the density task's paper budget gets in a few minutes: its curve, printed as it goes.

    python benchmarks/density_curve.py --device cuda --seconds 180 --data-dir ../shared/data
    python benchmarks/density_curve.py --seconds 20 --layers 1 --hidden 4 --budget smoke   # the path, on a CPU

Trains `mnist-density`'s network (the task's own `network`, data, loss, initialisation and the
budget's optimiser, schedule and clipping) for `--seconds` of wall time, and every `--every`
seconds prints the validation NLL (nats per image) over the first `--val-batches` validation
batches, with the steps and seconds so far. A `rnnbench run` of the paper budget trains 20 epochs
to a stored result; this prints the shape of its beginning where minutes are all there are (a GPU
check). Nothing is stored.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from tasks import TASKS, ModelConfig
from tasks.base import initialise_cells, optimizer_and_schedule
from tasks.density import ImageNLL


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm_fused")
    parser.add_argument("--budget", default="paper")
    parser.add_argument("--layers", type=int, default=7, help="the paper's MNIST model: 7")
    parser.add_argument("--hidden", type=int, default=None, help="default: the budget's")
    parser.add_argument("--scan", default=None, help="default: the budget's (paper: diagonal)")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--every", type=float, default=20.0)
    parser.add_argument("--val-batches", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    L.seed_everything(args.seed, verbose=False)
    base = TASKS.get("mnist-density")
    budget = base.budget(args.budget)
    options = dict(budget.task_options) | ({"scan": args.scan} if args.scan else {})
    task = base.configured({k: str(v) for k, v in options.items()})
    device = torch.device(args.device)
    data = task.datamodule(args.data_dir, budget.batch_size, budget)
    data.prepare_data()
    data.setup("fit")
    model = ModelConfig(args.cell, args.hidden or budget.hidden_size, args.layers)
    task.check_model(model)
    network = initialise_cells(task.network(model, data, budget), budget).to(device)
    steps_per_epoch = len(data.train_set) // budget.batch_size
    optimizer, schedule = optimizer_and_schedule(network.parameters(), budget, budget.max_epochs * steps_per_epoch)
    val = [batch for _, batch in zip(range(args.val_batches), data.val_dataloader())]
    parameters = sum(p.numel() for p in network.parameters())
    print(f"mnist-density {args.budget}: {args.cell}, scan={task.settings['scan']}, {args.layers} layers of "
          f"h {model.hidden_size}, {parameters:,} parameters, batch {budget.batch_size}, {budget.optimizer} "
          f"{budget.lr:g}, on {device}; validation over {sum(len(x) for x, _ in val)} images", flush=True)
    print("seconds  steps  epochs  val nll (nats)", flush=True)

    def validate(seconds: float, steps: int) -> None:
        network.eval()
        metric = ImageNLL().to(device)
        with torch.no_grad():
            for x, target in val:
                metric.update(network(x.to(device)), target.to(device))
        network.train()
        print(f"{seconds:7.0f}  {steps:5d}  {steps / steps_per_epoch:6.2f}  {metric.compute().item():.2f}", flush=True)

    start = time.perf_counter()
    steps, next_report = 0, args.every
    network.train()
    while time.perf_counter() - start < args.seconds:
        for x, target in data.train_dataloader():
            loss = task.loss(network(x.to(device)), target.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), budget.grad_clip)
            optimizer.step()
            schedule.step()
            steps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= next_report or elapsed >= args.seconds:
                validate(elapsed, steps)
                next_report = elapsed + args.every
            if elapsed >= args.seconds:
                break


if __name__ == "__main__":
    main()
