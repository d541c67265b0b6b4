"""Variants of the translation quick budget, trained by a bare loop: the measurements behind versions 4 to 8.

    python benchmarks/translation_variants.py --data-dir ../shared/data --epochs 13
    python benchmarks/translation_variants.py --data-dir ../shared/data --epochs 11 --ema 0.999 --alphas 1.0,1.2,1.4
    python benchmarks/translation_variants.py --data-dir ../shared/data --epochs 15 --seed 1 --whole-punctuation
    python benchmarks/translation_variants.py --data-dir ../shared/data --epochs 14 --dropout 0.2 --threads 1

The task's own data, network, optimiser (`optimizer_and_schedule`), gradient clipping and
training loss, for `--epochs` epochs; validation BLEU (greedy) after each epoch on the weights
that are tested (the averaged ones with `--ema`); the best epoch's weights are tested with beam
5, ranked by log-probability / length ** alpha for each of `--alphas`. Variants: `--ema DECAY`
(an exponential moving average of the weights, torch's `AveragedModel`), `--bottleneck N` (the
output layer reads the decoder through an N-wide projection), `--whole-punctuation` (version
4's tokenizer: punctuation left attached to words), `--bpe-dropout P` (the training split
re-encoded each epoch with BPE-dropout, Provilkov et al. 2020; the tokenizers library draws it
from an unseeded generator, so such runs do not repeat), `--lr`, `--orthogonal` (recurrent
weights orthogonal at initialisation), `--embed`, `--dropout`, `--smoothing`, `--weight-decay`
(the budget's settings changed), `--lexical` and `--input-feed` (`VariantSeq2Seq`), `--rebatch`
(new length-sorted batches each epoch; the task draws them once per run), `--entries N` (the
dictionary entries trained on, `-o entries`), `--output generate` (version 6's output layer,
without copying: `-o output`), `--score additive` (`-o score`). `--stop-after N` ends the run
after N epochs of the `--epochs` schedule, untested: a probe of how fast a variant learns (each
epoch prints its mean training loss). Quality only: two of
these may run side by side with `--threads 1`; their times are then not comparable with
`rnnbench run`'s. One seed here is weak evidence: dropout 0.2 beat 0.3 on two seeds of this loop
and lost on the mean of three `rnnbench run` seeds (README).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from cells import build_cell
from tasks import TASKS, ModelConfig, translation
from tasks.base import initialise_cells, optimizer_and_schedule
from tasks.translation import EOS, LengthRatio, SacreBLEUStat, Seq2Seq, max_output_length

TASK = "translation-de-en-attention"


class VariantSeq2Seq(Seq2Seq):
    """The task's network with two variants measured for version 6: `lexical`, the attention reads
    the source embeddings beside the encoder's outputs (a cheap form of Nguyen & Chiang 2018's
    lexical model); `input_feed`, the decoder reads the previous step's attentional vector beside
    the embedding (Luong et al. 2015), so it runs one step at a time. Neither copies from the
    source (version 6's output layer); the attention score is the task's (version 6's: `--score
    general`)."""

    def __init__(self, model, vocab_size, settings, lexical: bool, input_feed: bool, score: str):
        super().__init__(model, vocab_size, True, settings.embed, settings.dropout, settings.label_smoothing, score,
                         attention_size=settings.attention)
        hidden, memory = model.hidden_size, self.encoder.num_directions * model.hidden_size
        self.lexical, self.input_feed = lexical, input_feed
        if lexical:
            memory += settings.embed
            self.attention = translation.ATTENTION[score](hidden, memory, settings.attention or hidden)
            self.combine = torch.nn.Linear(hidden + memory, hidden)
        if input_feed:
            self.decoder = build_cell(model.cell, settings.embed + hidden, hidden)

    def encode(self, src, src_len):
        embedded = self.drop(self.embedding(src))  # (B, S, E)
        memory, state = self.encoder(embedded, lengths=src_len)  # (B, S, D*H)
        if self.lexical:
            memory = torch.cat([memory, embedded], dim=-1)  # (B, S, D*H + E)
        mask = torch.arange(src.shape[1])[None] < src_len[:, None]  # (B, S)
        state = self.bridge(state)
        if self.input_feed:  # the previous step's attentional vector rides in the state: (1, B, H)
            state = (*state, state[0].new_zeros(1, src.shape[0], self.combine.out_features))
        return memory, translation.Source(mask, src, self.attention.project(memory)), state

    def features(self, tgt_in, state, memory, source):
        if not self.input_feed:
            return super().features(tgt_in, state, memory, source)
        embedded = self.drop(self.embedding(tgt_in))  # (B, T, E)
        *cell, feed = state
        cell, feed = tuple(cell), feed.transpose(0, 1)  # feed (B, 1, H)
        outputs = []
        for t in range(embedded.shape[1]):
            output, cell = self.decoder(torch.cat([embedded[:, t : t + 1], feed], dim=-1), cell)  # (B, 1, H)
            context = self.attention.weights(output, source.keys, source.mask) @ memory  # (B, 1, D*H)
            feed = torch.tanh(self.combine(torch.cat([output, context], dim=-1)))
            outputs.append(feed)
        return translation.Features(self.drop(torch.cat(outputs, dim=1))), (*cell, feed.transpose(0, 1))


def score(network, datamodule, split: str, beam: int, alpha: float = 1.0) -> dict[str, float]:
    network.eval()
    bleu, chrf, length = SacreBLEUStat("bleu"), SacreBLEUStat("chrf"), LengthRatio()
    no_eos = outputs = 0
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    with torch.no_grad():
        for batch in loader:
            max_len = max_output_length(batch)
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
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this many epochs of the --epochs schedule, untested (a learning-speed probe)")
    parser.add_argument("--whole-punctuation", action="store_true",
                        help="version 4's tokenizer: punctuation stays attached to words")
    parser.add_argument("--bpe-dropout", type=float, default=0.0)
    parser.add_argument("--embed", type=int, default=None, help="embedding size (default: the budget's)")
    parser.add_argument("--dropout", type=float, default=None, help="dropout (default: the budget's)")
    parser.add_argument("--smoothing", type=float, default=None, help="label smoothing (default: the budget's)")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW's weight decay (default: the budget's)")
    parser.add_argument("--lexical", action="store_true", help="attention reads the source embeddings too")
    parser.add_argument("--input-feed", action="store_true", help="the decoder reads the previous attentional vector")
    parser.add_argument("--output", choices=translation.OUTPUTS, default=None,
                        help="copy from the source or generate only (-o output; default: the task's)")
    parser.add_argument("--score", choices=("general", "additive"), default=None,
                        help="attention score (-o score; default: the task's)")
    parser.add_argument("--attention-size", type=int, default=None,
                        help="the additive score's size (default: the budget's; 0: the hidden size)")
    parser.add_argument("--rebatch", action="store_true", help="new length-sorted batches each epoch")
    parser.add_argument("--entries", type=int, default=None,
                        help="dictionary entries trained on beside the sentences (default: the task's)")
    parser.add_argument("--alphas", default="1.0", help="comma-separated length-normalisation exponents for the test")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    options = {"entries": args.entries, "output": args.output, "score": args.score}
    task = TASKS.get(TASK).configured({k: str(v) for k, v in options.items() if v is not None})
    budget = replace(task.budget("quick"), max_epochs=args.epochs, orthogonal_init=args.orthogonal)
    if args.lr:
        budget = replace(budget, lr=args.lr)
    if args.weight_decay is not None:
        budget = replace(budget, weight_decay=args.weight_decay)
    settings = translation.SETTINGS["quick"]
    translation.SETTINGS["quick"] = replace(
        settings, embed=args.embed or settings.embed,
        dropout=settings.dropout if args.dropout is None else args.dropout,
        label_smoothing=settings.label_smoothing if args.smoothing is None else args.smoothing,
        attention=settings.attention if args.attention_size is None else args.attention_size)
    with tempfile.TemporaryDirectory() as run_dir:
        data = task.datamodule(Path(args.data_dir) if args.data_dir else None, budget.batch_size, "quick",
                               run_dir=Path(run_dir))
        data.split_punctuation = not args.whole_punctuation
        data.prepare_data()
        data.setup("fit")
        model = ModelConfig(args.cell, budget.hidden_size)
        if args.lexical or args.input_feed:
            network = VariantSeq2Seq(model, data.vocab_size, translation.SETTINGS["quick"], args.lexical, args.input_feed,
                                     task.settings["score"])
        else:
            network = task.network(model, data, "quick")
        network = initialise_cells(network, budget)
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
            if args.rebatch:
                torch.manual_seed(args.seed * 1000 + epoch)  # batches() draws its order from the initial seed
            losses = []
            for batch in data.train_dataloader():
                loss = task.training_loss(network, batch)
                losses.append(loss.detach())
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), budget.grad_clip)
                optimizer.step()
                schedule.step()
                if average is not None:
                    average.update_parameters(network)
            val = score(tested, data, "val", beam=1)
            print(f"epoch {epoch}: train loss {torch.stack(losses).mean():.3f} val bleu {val['bleu']:.2f} chrf {val['chrf']:.2f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            if val["bleu"] > best[0]:
                best = (val["bleu"], copy.deepcopy(tested.state_dict()))
            if epoch == args.stop_after:
                return
        tested.load_state_dict(best[1])
        for alpha in (float(a) for a in args.alphas.split(",")):
            test = score(tested, data, "test", beam=5, alpha=alpha)
            print(f"test, alpha {alpha}: bleu {test['bleu']:.2f} chrf {test['chrf']:.2f} "
                  f"length {test['length_ratio']:.3f} no_eos {100 * test['no_eos']:.2f} %", flush=True)


if __name__ == "__main__":
    main()
