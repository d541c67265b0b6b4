"""What the harness costs: fit wall time of `rnnbench run` against a bare PyTorch loop doing the same work.

    python benchmarks/harness_overhead.py --data-dir ../shared/data                      # mnist-row quick, rnn + lstm
    python benchmarks/harness_overhead.py --task adding --cell gru_fused --rounds 2 --device cuda

Both sides train the task's own network on its own training split for the budget's epochs and
batches, with its optimiser and schedule (`optimizer_and_schedule`), gradient-norm clipping and a
validation pass over the validation split after each epoch; both start from the same seed. The
harness side is `bench.runner.execute`, the code path of `rnnbench run` (its fit time is the
measuring callback's, from the start of the fit to its end: Lightning's loop, logging, the
checkpoint of the best epoch, the data loaders), as a run whose output goes to a file runs it: no
progress bar (on a terminal `rnnbench run` shows Lightning's, which reads the training loss every
10 steps). The bare side serves batches by indexing the
split's tensors with a permutation, on the training device, and reads nothing back to the host
but the validation metric.

The two alternate in one process, `--rounds` times per cell (timings on a shared machine drift,
so compare the ratio within a round); the last line per cell is the median ratio. Before the
rounds, each side fits once untimed on the task's smoke budget (`--no-warmup`: not): the first fit
in a process pays one-time costs (torch's kernels and thread pool, Lightning's and torchmetrics'
first calls), which the bare loop, run first in each round, would otherwise pay for both. Ratio = bare
fit seconds / harness fit seconds: 1.0 means the harness costs nothing, 0.9 that it is 10 % slower.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from bench.config import RunConfig
from bench.runner import execute
from cells import CELLS
from tasks import TASKS, ModelConfig
from tasks.base import initialise_cells, optimizer_and_schedule


def split_tensors(dataset) -> tuple[torch.Tensor, ...]:
    """The tensors of a TensorDataset, or of the rows a Subset of one selects."""
    if isinstance(dataset, torch.utils.data.Subset):
        index = torch.as_tensor(dataset.indices)
        return tuple(t[index] for t in split_tensors(dataset.dataset))
    return tuple(dataset.tensors)


def bare_fit(task_name: str, cell: str, budget_name: str, seed: int, data_dir: str | None, device: str,
             hidden: int | None = None) -> float:
    """Seconds of a plain loop's training and validation, data preparation excluded."""
    L.seed_everything(seed, verbose=False)
    task = TASKS.get(task_name)
    budget = task.budget(budget_name)
    data = task.datamodule(data_dir, budget.batch_size, budget)
    data.prepare_data()
    data.setup("fit")
    train = tuple(t.to(device) for t in split_tensors(data.train_set))
    val = tuple(t.to(device) for t in split_tensors(data.val_set))
    network = task.network(ModelConfig(cell, hidden or budget.hidden_size), data, budget)
    network = initialise_cells(network, budget).to(device)
    batches = len(train[0]) // budget.batch_size  # drop_last, as the harness's loader
    if budget.train_batches is not None:
        batches = min(batches, budget.train_batches)
    optimizer, schedule = optimizer_and_schedule(network.parameters(), budget, budget.max_epochs * batches)
    eval_batch = len(next(iter(data.val_dataloader()))[-1])
    val_batches = -(-len(val[0]) // eval_batch)
    if budget.val_batches is not None:
        val_batches = min(val_batches, budget.val_batches)
    metrics = task.metrics().to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(budget.max_epochs):
        network.train()
        order = torch.randperm(len(train[0]), device=device)
        for b in range(batches):
            index = order[b * budget.batch_size:(b + 1) * budget.batch_size]
            loss = task.training_loss(network, tuple(t[index] for t in train))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), budget.grad_clip)
            optimizer.step()
            schedule.step()
        network.eval()
        with torch.no_grad():
            for b in range(val_batches):
                task.evaluate(network, tuple(t[b * eval_batch:(b + 1) * eval_batch] for t in val), metrics, "val", data)
        float(metrics[task.primary_metric].compute())  # the one read-back per epoch
        metrics.reset()
    sync()
    return time.perf_counter() - start


def harness_fit(task_name: str, cell: str, budget_name: str, seed: int, data_dir: str | None, device: str,
                hidden: int | None = None) -> float:
    """The fit seconds `rnnbench run` records for the same run."""
    with tempfile.TemporaryDirectory() as out:
        config = RunConfig(task=task_name, cell=cell, seed=seed, budget=budget_name, hidden_size=hidden,
                           accelerator="cuda" if device.startswith("cuda") else "cpu")
        return execute(config, Path(out), data_dir=Path(data_dir) if data_dir else None)["train_seconds"]


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist-row")
    parser.add_argument("--cell", action="append", help="repeatable; default rnn_fused and lstm_fused")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="no untimed fit of each side on the smoke budget before the rounds")
    parser.add_argument("--hidden", type=positive_int, default=None,
                        help="hidden size (default: the budget's); a tiny one shows the harness's cost per step")
    args = parser.parse_args()
    cells = args.cell or ["rnn_fused", "lstm_fused"]
    try:  # the registries' own messages name what is known
        for cell in cells:
            CELLS.get(cell)
        TASKS.get(args.task).budget(args.budget)
    except ValueError as error:
        parser.error(str(error))
    from bench.quiet import quiet_libraries

    quiet_libraries()
    print(f"{args.task}, budget {args.budget}, {args.device}, {torch.get_num_threads()} threads; seconds of fit "
          "(training + validation per epoch)", flush=True)
    print("cell            round  bare_s  harness_s  ratio", flush=True)
    for cell in cells:
        if args.warmup:
            bare = bare_fit(args.task, cell, "smoke", args.seed, args.data_dir, args.device, args.hidden)
            harness = harness_fit(args.task, cell, "smoke", args.seed, args.data_dir, args.device, args.hidden)
            print(f"{cell:15s} warm-up (smoke budget, not counted): bare {bare:.2f} s, harness {harness:.2f} s",
                  flush=True)
        ratios = []
        for round_ in range(1, args.rounds + 1):
            bare = bare_fit(args.task, cell, args.budget, args.seed, args.data_dir, args.device, args.hidden)
            harness = harness_fit(args.task, cell, args.budget, args.seed, args.data_dir, args.device, args.hidden)
            ratios.append(bare / harness)
            print(f"{cell:15s} {round_:5d}  {bare:6.2f}  {harness:9.2f}  {ratios[-1]:5.2f}", flush=True)
        print(f"{cell:15s} median ratio {statistics.median(ratios):.2f} (bare / harness, {args.rounds} rounds)",
              flush=True)


if __name__ == "__main__":
    main()
