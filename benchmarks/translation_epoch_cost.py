"""One training epoch of the quick translation model, version 4's way against version 5's, in turn.

    python benchmarks/translation_epoch_cost.py --data-dir ../shared/data --cell lstm_fused --cell gru_fused

Version 4: punctuation left attached to words by the tokenizer, the output layer computed at
every target position (padding ignored by the loss). Version 5: punctuation split off, the
output layer at the real positions only (`Seq2Seq.scored`). Each round trains a fresh network
for one epoch of the training batches (the task's data, network, AdamW, clipping; no
validation), alternating the two, and prints the seconds and their ratio: timings on a shared
machine drift, so only ratios measured in one command compare.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cell", action="append", help="repeatable (default: lstm_fused)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=None, help="the first N batches only (default: the epoch)")
    args = parser.parse_args()
    task = TASKS.get(TASK).configured({})
    budget = task.budget("quick")
    setups = {}
    with tempfile.TemporaryDirectory() as folder:
        for version, split in (("4", False), ("5", True)):
            data = task.datamodule(Path(args.data_dir) if args.data_dir else None, budget.batch_size, "quick",
                                   run_dir=Path(folder) / version)
            data.split_punctuation = split
            data.prepare_data()
            data.setup("fit")
            setups[version] = (data, list(data.train_dataloader())[: args.batches])
    for cell in args.cell or ["lstm_fused"]:
        seconds = {"4": [], "5": []}
        for round_ in range(args.rounds):
            for version, (data, batches) in setups.items():
                torch.manual_seed(round_)
                network = initialise_cells(task.network(ModelConfig(cell, budget.hidden_size), data, "quick"), budget)
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
        ratios = [new / old for old, new in zip(seconds["4"], seconds["5"])]
        print(f"{cell}: version 4 {', '.join(f'{s:.1f}' for s in seconds['4'])} s, version 5 "
              f"{', '.join(f'{s:.1f}' for s in seconds['5'])} s for {len(setups['5'][1])} batches; "
              f"ratio {', '.join(f'{r:.2f}' for r in ratios)}", flush=True)


if __name__ == "__main__":
    main()
