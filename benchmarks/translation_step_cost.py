"""Training steps of the quick translation model under several task options, in turn: their cost as ratios.

    python benchmarks/translation_step_cost.py --data-dir ../shared/data --cell gru_fused \\
        -o attention_size=256 -o attention_size=128 -o attention_size=64 -o score=general

Each `-o` is one variant: comma-separated task options (`-o score=general`,
`-o attention_size=256,output=generate`; `-o ""` is the task's defaults; three keys are this
script's own: `dropout=torch` puts torch's `nn.Dropout` in place of the task's, `hidden=N` sets
the recurrent cells' hidden size, as `rnnbench run --hidden N` does, and `lengths=packed` makes
the fused cells pack sequences of unequal lengths whole, as they did before they ran the steps
all sequences share unpacked). The task's data, network, AdamW and clipping train a fresh
network per variant over the same batches (every `--every`-th training batch: short and long
ones alike, as an epoch has them), the variants alternating within each round; it prints the
milliseconds a step took per round and the ratio of each variant's to the first's
(`--encoder-only`: the encoder's forward and backward alone). Timings on a shared machine
drift, so only ratios measured in one command compare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from cells.base import FusedCell
from tasks import TASKS, ModelConfig
from tasks.base import initialise_cells, optimizer_and_schedule

TASK = "translation-de-en-attention"


def parse_options(text: str) -> dict[str, str]:
    pairs = [part.split("=", 1) for part in text.split(",") if part]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"-o {text!r}: expected name=value[,name=value...]")
    return dict(pairs)


def hidden_size(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise SystemExit(f"-o hidden={text}: the hidden size must be a positive integer")
    return int(text)


def lengths_way(text: str) -> bool:
    if text != "packed":
        raise SystemExit(f"-o lengths={text}: the one other way is packed")
    return True


def step_seconds(task, cell: str, data, batches: list, seed: int, torch_dropout: bool, hidden: int | None,
                 packed: bool = False, encoder_only: bool = False) -> float:
    budget = task.budget("quick")
    torch.manual_seed(seed)
    network = initialise_cells(task.network(ModelConfig(cell, hidden or budget.hidden_size), data, "quick"), budget)
    if torch_dropout:
        network.drop = nn.Dropout(network.drop.p)
    for module in network.modules():
        if packed and isinstance(module, FusedCell):
            module.run_head_and_tail = module.run_packed  # this instance only: every call packed whole
    optimizer, _ = optimizer_and_schedule(network.parameters(), budget, len(batches))

    def step(batch):
        if encoder_only:  # the encoder's forward and backward, nothing else
            memory, _, state = network.encode(batch["src"], batch["src_len"])
            sum([memory.sum()] + [s.sum() for s in state]).backward()
            return
        loss = task.training_loss(network, batch)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(network.parameters(), budget.grad_clip)
        optimizer.step()

    for batch in batches[:3]:  # warm-up: first calls allocate and pick kernels
        step(batch)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cell", default="lstm_fused")
    parser.add_argument("-o", "--options", action="append", required=True, help="one variant's task options")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, default=10, help="train on every N-th training batch (default 10)")
    parser.add_argument("--encoder-only", action="store_true",
                        help="time the encoder's forward and backward alone, not a whole training step")
    args = parser.parse_args()
    for flag, value in (("--rounds", args.rounds), ("--every", args.every)):
        if value < 1:
            parser.error(f"{flag} {value}: must be at least 1")
    base = TASKS.get(TASK)
    options = {text or "defaults": parse_options(text) for text in args.options}
    torch_dropout = {name: given.pop("dropout", None) == "torch" for name, given in options.items()}
    hidden = {name: hidden_size(given.pop("hidden")) if "hidden" in given else None for name, given in options.items()}
    packed = {name: lengths_way(given.pop("lengths")) if "lengths" in given else False for name, given in options.items()}
    tasks = {name: base.configured(given) for name, given in options.items()}
    with tempfile.TemporaryDirectory() as folder:
        first = next(iter(tasks.values()))
        data = first.datamodule(Path(args.data_dir) if args.data_dir else None, first.budget("quick").batch_size,
                                "quick", run_dir=Path(folder))
        data.prepare_data()
        data.setup("fit")
        batches = list(data.train_dataloader())[:: args.every]
    print(f"{args.cell}: {len(batches)} training batches a round, {args.rounds} rounds", flush=True)
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for round_ in range(args.rounds):
        for name, task in tasks.items():
            times[name].append(step_seconds(task, args.cell, data, batches, round_, torch_dropout[name], hidden[name],
                                            packed[name], args.encoder_only))
    reference = next(iter(times.values()))
    for name, seconds in times.items():
        ratios = [s / r for s, r in zip(seconds, reference)]
        print(f"{name}: {', '.join(f'{1000 * s:.1f}' for s in seconds)} ms a step; ratio to the first "
              f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})", flush=True)


if __name__ == "__main__":
    main()
