"""Variants of the translation quick budget, trained by a bare loop: the measurements behind versions 4 and 5.

    python benchmarks/translation_variants.py --data-dir ../shared/data --epochs 13
    python benchmarks/translation_variants.py --data-dir ../shared/data --epochs 11 --ema 0.999 --alphas 1.0,1.2,1.4
    python benchmarks/translation_variants.py --data-dir ../shared/data --epochs 15 --seed 1 --whole-punctuation

The task's own data, network, optimiser (`optimizer_and_schedule`), gradient clipping and
training loss, for `--epochs` epochs; validation BLEU (greedy) after each epoch on the weights
that are tested (the averaged ones with `--ema`); the best epoch's weights are tested with beam
5, ranked by log-probability / length ** alpha for each of `--alphas`. Variants: `--ema DECAY`
(an exponential moving average of the weights, torch's `AveragedModel`), `--bottleneck N` (the
output layer reads the decoder through an N-wide projection), `--whole-punctuation` (version
4's tokenizer: punctuation left attached to words), `--bpe-dropout P` (the training split
re-encoded each epoch with BPE-dropout, Provilkov et al. 2020; the tokenizers library draws it
from an unseeded generator, so such runs do not repeat), `--lr`, `--orthogonal` (recurrent
weights orthogonal at initialisation). Quality only: two of these may run side by side with
`--threads 1`; their times are then not comparable with `rnnbench run`'s.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from tasks import TASKS, ModelConfig
from tasks.base import initialise_cells, optimizer_and_schedule
from tasks.translation import EOS, LengthRatio, SacreBLEUStat

TASK = "translation-de-en-attention"


def score(network, datamodule, split: str, beam: int, alpha: float = 1.0) -> dict[str, float]:
    network.eval()
    bleu, chrf, length = SacreBLEUStat("bleu"), SacreBLEUStat("chrf"), LengthRatio()
    no_eos = outputs = 0
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    with torch.no_grad():
        for batch in loader:
            max_len = int(batch["src_len"].max()) * 2 + 10
            if beam > 1:
                ids = network.beam_search(batch["src"], batch["src_len"], max_len, beam, alpha).tolist()
            else:
                ids = network.greedy(batch["src"], batch["src_len"], max_len).tolist()
            hypotheses = [datamodule.decode(i) for i in ids]
            for metric in (bleu, chrf, length):
                metric.update(hypotheses, batch["target_text"])
            no_eos += sum(EOS not in i for i in ids)
            outputs += len(ids)
    network.train()
    return {"bleu": float(bleu.compute()), "chrf": float(chrf.compute()), "length_ratio": float(length.compute()),
            "no_eos": no_eos / outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cell", default="lstm_fused")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--ema", type=float, default=0.0, help="decay of a moving average of the weights; 0: none")
    parser.add_argument("--bottleneck", type=int, default=0, help="width of a projection before the output layer")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the budget's)")
    parser.add_argument("--orthogonal", action="store_true", help="recurrent weights orthogonal at initialisation")
    parser.add_argument("--whole-punctuation", action="store_true",
                        help="version 4's tokenizer: punctuation stays attached to words")
    parser.add_argument("--bpe-dropout", type=float, default=0.0)
    parser.add_argument("--alphas", default="1.0", help="comma-separated length-normalisation exponents for the test")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task = TASKS.get(TASK).configured({})
    budget = replace(task.budget("quick"), max_epochs=args.epochs, orthogonal_init=args.orthogonal)
    if args.lr:
        budget = replace(budget, lr=args.lr)
    with tempfile.TemporaryDirectory() as run_dir:
        data = task.datamodule(Path(args.data_dir) if args.data_dir else None, budget.batch_size, "quick",
                               run_dir=Path(run_dir))
        data.split_punctuation = not args.whole_punctuation
        data.prepare_data()
        data.setup("fit")
        network = initialise_cells(task.network(ModelConfig(args.cell, budget.hidden_size), data, "quick"), budget)
        if args.bottleneck:
            network.generator = torch.nn.Sequential(
                torch.nn.Linear(budget.hidden_size, args.bottleneck, bias=False),
                torch.nn.Linear(args.bottleneck, network.generator.out_features))
        steps = budget.max_epochs * len(data.train_dataloader())
        optimizer, schedule = optimizer_and_schedule(network.parameters(), budget, steps)
        average = None
        if args.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            average = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
        tested = average.module if average is not None else network
        start, best = time.perf_counter(), (float("-inf"), None)
        if args.bpe_dropout:
            from tokenizers import Tokenizer

            dropping = Tokenizer.from_file(str(data.tokenizer_path))
            dropping.model.dropout = args.bpe_dropout
            kept = [pair for _, _, pair in data.splits["train"]]
        for epoch in range(1, budget.max_epochs + 1):
            if args.bpe_dropout:
                sources = [e.ids for e in dropping.encode_batch([s for s, _ in kept])]
                targets = [e.ids for e in dropping.encode_batch([t for _, t in kept])]
                data.splits["train"] = list(zip(sources, targets, kept))
            for batch in data.train_dataloader():
                loss = task.training_loss(network, batch)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), budget.grad_clip)
                optimizer.step()
                schedule.step()
                if average is not None:
                    average.update_parameters(network)
            val = score(tested, data, "val", beam=1)
            print(f"epoch {epoch}: val bleu {val['bleu']:.2f} chrf {val['chrf']:.2f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            if val["bleu"] > best[0]:
                best = (val["bleu"], copy.deepcopy(tested.state_dict()))
        tested.load_state_dict(best[1])
        for alpha in (float(a) for a in args.alphas.split(",")):
            test = score(tested, data, "test", beam=5, alpha=alpha)
            print(f"test, alpha {alpha}: bleu {test['bleu']:.2f} chrf {test['chrf']:.2f} "
                  f"length {test['length_ratio']:.3f} no_eos {100 * test['no_eos']:.2f} %", flush=True)


if __name__ == "__main__":
    main()
