"""One training epoch of the quick translation model, an earlier way against today's, in turn.

    python benchmarks/translation_epoch_cost.py --data-dir ../shared/data --cell lstm_fused --cell gru_fused
    python benchmarks/translation_epoch_cost.py --data-dir ../shared/data --against packing

`--against version4` (the default): version 4 left punctuation attached to words in the
tokenizer and computed the output layer at every target position (padding ignored by the loss);
version 5 splits punctuation off and computes the output layer at the real positions only
(`Seq2Seq.scored`). `--against packing`: every batch's source packed by length in the encoder,
as before cells skipped packing when all lengths fill the batch (`RecurrentCell.forward`),
against today's cells, on today's data. Each round trains a fresh network
for one epoch of the training batches (the task's data, network, AdamW, clipping; no
validation), alternating the two, and prints the seconds and their ratio: timings on a shared
machine drift, so only ratios measured in one command compare.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from tasks import TASKS, ModelConfig
from tasks.base import initialise_cells, optimizer_and_schedule
from tasks.translation import PAD

TASK = "translation-de-en-attention"


def version_4_loss(network, batch, label_smoothing: float):
    logits = network(batch["src"], batch["src_len"], batch["tgt_in"])
    return nn.functional.cross_entropy(logits.flatten(0, 1), batch["tgt_out"].flatten(), ignore_index=PAD,
                                       label_smoothing=label_smoothing)


def always_packed(cell, x, state=None, lengths=None):
    return cell._run(x, state, lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cell", action="append", help="repeatable (default: lstm_fused)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--against", choices=("version4", "packing"), default="version4")
    parser.add_argument("--batches", type=int, default=None, help="the first N batches only (default: the epoch)")
    args = parser.parse_args()
    task = TASKS.get(TASK).configured({})
    budget = task.budget("quick")
    setups = {}
    old = "4" if args.against == "version4" else "packed"
    with tempfile.TemporaryDirectory() as folder:
        for version, split in ((old, args.against != "version4"), ("5", True)):
            data = task.datamodule(Path(args.data_dir) if args.data_dir else None, budget.batch_size, "quick",
                                   run_dir=Path(folder) / version)
            data.split_punctuation = split
            data.prepare_data()
            data.setup("fit")
            setups[version] = (data, list(data.train_dataloader())[: args.batches])
    for cell in args.cell or ["lstm_fused"]:
        seconds = {old: [], "5": []}
        for round_ in range(args.rounds):
            for version, (data, batches) in setups.items():
                torch.manual_seed(round_)
                network = initialise_cells(task.network(ModelConfig(cell, budget.hidden_size), data, "quick"), budget)
                if version == "packed":  # the cell's own path, lengths passed on even when all are full
                    network.encoder.forward = functools.partial(always_packed, network.encoder)
                optimizer, _ = optimizer_and_schedule(network.parameters(), budget, len(batches))
                start = time.perf_counter()
                for batch in batches:
                    if version == "4":
                        loss = version_4_loss(network, batch, network.label_smoothing)
                    else:
                        loss = task.training_loss(network, batch)
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(network.parameters(), budget.grad_clip)
                    optimizer.step()
                seconds[version].append(time.perf_counter() - start)
        ratios = [new / before for before, new in zip(seconds[old], seconds["5"])]
        label = "version 4" if old == "4" else "every batch packed"
        print(f"{cell}: {label} {', '.join(f'{s:.1f}' for s in seconds[old])} s, today "
              f"{', '.join(f'{s:.1f}' for s in seconds['5'])} s for {len(setups['5'][1])} batches; "
              f"ratio {', '.join(f'{r:.2f}' for r in ratios)}", flush=True)


if __name__ == "__main__":
    main()
