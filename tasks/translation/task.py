"""The four translation tasks: their options, budgets, metrics, baselines and report artifacts
(the attention picture), over the corpus, data module, network and decoding of this package."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchmetrics
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

from reports import figures
from tasks.base import Baseline, Budget, Option, Task, non_negative_int, one_of, positive_int, register_task
from tasks.data import DataError
from tasks.translation.corpus import Corpus, find_ding, parse_ding, parse_tsv
from tasks.translation.data import MAX_TRAIN_TOKENS, TranslationData
from tasks.translation.decoding import (LENGTH_EXPONENTS, beam_search, choose_length_exponent, greedy,
                                        max_output_length, scores_by_length_exponent)
from tasks.translation.metrics import LengthRatio, SacreBLEUStat, update_output_metrics
from tasks.translation.model import ATTENTION, OUTPUTS, Seq2Seq
from tasks.translation.tokens import BOS, EOS, PAD

EXAMPLES = 6
MAX_PICTURE_TOKENS = 40  # output tokens shown in the attention picture
# the dictionary entries a Ding task trains on beside the sentences by default (`-o entries=N`): 0,
# since 20,000 raised the quick LSTM's BLEU but took its training past the quick budget's 8 minutes
DICTIONARY_ENTRIES = 0


class TextBaseline(nn.Module):
    """A baseline translator: `hypotheses(batch)` gives its output texts for a batch."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer  # batch -> list of texts

    def hypotheses(self, batch: dict) -> list[str]:
        return self.answer(batch)


_attention_score, _output, _embeddings = one_of(tuple(ATTENTION)), one_of(OUTPUTS), one_of(("apart", "tied"))
_length_by = one_of(("bleu", "length"))


def _length_exponent(text: str) -> str | float:
    if text == "val":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 5.0:
        raise ValueError("must be val or a number from 0 to 5")
    return value


def _dropout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:  # NaN fails too
        raise ValueError("must be a probability from 0 up to (not including) 1")
    return value


def _existing_file(text: str) -> str:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return str(path.resolve())


@dataclass(frozen=True)
class Seq2SeqSettings:
    """A budget's network settings beside the Budget's: the corpus is small (18k pairs), so the
    model is regularised; without dropout or smoothing it overfit after 6 epochs at hidden 128."""

    embed: int  # embedding size, independent of the hidden size
    dropout: float  # on the embeddings and on the decoder's features before the output layer
    label_smoothing: float  # of the training loss (validation and test losses are plain)
    attention: int = 0  # the additive score's size (the width of its tanh); 0: the hidden size
    tie: bool = False  # the output layer's weights the embedding's (`TiedOutput`)


# on quick: dropout 0.1 with the output layer tied to the embedding, and the additive score 128 wide
# (its tanh costs about a fifth of a step at the hidden size, 256); measurements in docs/results.md
@dataclass(frozen=True)
class TranslationBudget(Budget):
    """A budget with the translation network's settings and the BPE vocabulary's size (the
    task's config stores both, by budget)."""

    vocab_size: int = 4000
    network: Seq2SeqSettings = Seq2SeqSettings(128, 0.1, 0.1)


TRANSLATION_BUDGETS = {
    "smoke": TranslationBudget(max_epochs=1, batch_size=32, hidden_size=32, lr=3e-3, train_batches=6, val_batches=1,
                    test_batches=2, vocab_size=400, network=Seq2SeqSettings(32, 0.0, 0.0),
                    note="6 training batches: checks the path, not quality"),
    # quick: 14 epochs (validation BLEU still rose at 13); the epochs and model sizes tried against
    # the time a run takes are in docs/results.md
    "quick": TranslationBudget(max_epochs=14, batch_size=64, hidden_size=256, lr=4e-3, vocab_size=4000,
                    network=Seq2SeqSettings(128, 0.1, 0.1, attention=128, tie=True),
                    note="14 epochs, hidden 256, embedding 128 (tied to the output layer), dropout 0.1, label smoothing "
                    "0.1, attention 128, "
                    "BPE 4000 (punctuation split off), beam 5, length exponent by the validation outputs' length"),
    "paper": TranslationBudget(max_epochs=30, batch_size=64, hidden_size=512, lr=1e-3, vocab_size=8000,
                    network=Seq2SeqSettings(256, 0.3, 0.1), note="30 epochs, hidden 512"),
}


class TranslationTask(Task):
    version = 11  # part of run identity: raised when what the task computes changes
    primary_metric = "bleu"
    target = 4.0  # the quick floor with attention
    higher_is_better = True
    budgets = TRANSLATION_BUDGETS

    def __init__(self, name: str, description: str, attention: bool, tsv: bool):
        self.name, self.description, self.attention, self.tsv = name, description, attention, tsv
        # beam 5 by default: greedy decoding of the quick LSTM scored BLEU 2.0 where a beam of 5 scored 3.9
        self.options = {
            "beam": Option(5, positive_int, "beam width for the test; 1 decodes greedily", model_only=True),
            "length": Option("val", _length_exponent, "beam search ranks its hypotheses by log-probability / "
                             "length ** this: a number, or val: the one of "
                             f"{', '.join(map(str, LENGTH_EXPONENTS))} chosen on the validation split by -o length_by",
                             model_only=True),
            "length_by": Option("length", _length_by, "with -o length=val, what chooses the length exponent on the "
                                "validation split: length (the outputs' length nearest the references') "
                                "or bleu (the highest BLEU)", model_only=True),
        }
        self.options["dropout"] = Option(None, _dropout, "dropout on the embeddings and on the decoder's features "
                                         "before the output layer (default: the budget's, quick "
                                         f"{TRANSLATION_BUDGETS['quick'].network.dropout})", model_only=True)
        self.options["embeddings"] = Option(None, _embeddings, "tied: the output layer's weights are the "
                                            "embedding's (Press & Wolf 2017); apart: its own (default: the budget's, "
                                            f"quick {'tied' if TRANSLATION_BUDGETS['quick'].network.tie else 'apart'})",
                                            model_only=True)
        if attention:
            self.options["score"] = Option("additive", _attention_score, "attention score: additive (v . tanh(W q + "
                                           "U k), Bahdanau et al. 2015) or general (q . W k, Luong et al. 2015)",
                                           model_only=True)
            self.options["attention_size"] = Option(None, positive_int, "the additive score's size (the width of "
                                                    "its tanh layer; default: the budget's, quick "
                                                    f"{TRANSLATION_BUDGETS['quick'].network.attention}, else the hidden "
                                                    "size)", model_only=True)
            self.options["output"] = Option("copy", _output, "copy: the output layer's distribution mixed with the "
                                            "attention on the source's tokens (a pointer-generator, See et al. 2017); "
                                            "generate: the output layer alone", model_only=True)
        if tsv:
            self.options["corpus"] = Option(None, _existing_file, "path of a source<TAB>target file")
        else:
            self.options["entries"] = Option(DICTIONARY_ENTRIES, non_negative_int, "how many of the dictionary's word "
                                             "and phrase entries to train on beside its sentences (0: sentences only)")

    def load_corpus(self, data_dir) -> Corpus:
        if self.tsv:
            if not self.settings["corpus"]:
                raise DataError(f"task {self.name} needs --task-option corpus=PATH (a source<TAB>target file)")
            return parse_tsv(Path(self.settings["corpus"]))
        return parse_ding(find_ding(data_dir), entries=self.settings["entries"] > 0)

    def configured(self, raw):
        task = super().configured(raw)
        if task.settings.get("attention_size") is not None and task.settings["score"] != "additive":
            raise ValueError(f"task option attention_size applies to the additive score only, not to "
                             f"score={task.settings['score']}: leave it out, or add -o score=additive")
        if "length_by" in raw and task.settings["length"] != "val":
            raise ValueError(f"task option length_by chooses the length exponent on the validation split, but "
                             f"length={task.settings['length']} fixes it: leave one of them out")
        if task.tsv and not task.settings["corpus"]:
            raise ValueError(f"task {self.name!r} needs --task-option corpus=PATH (a source<TAB>target file)")
        return task

    def datamodule(self, data_dir, batch_size, budget, download=True, run_dir=None):
        from functools import partial

        return TranslationData(partial(self.load_corpus, data_dir), batch_size, budget.vocab_size, run_dir,
                               val_batches=budget.val_batches,
                               dictionary_entries=self.settings.get("entries", 0))

    def network(self, model, datamodule, budget=None):
        settings = (budget or self.budget("quick")).network
        dropout, embeddings = self.settings.get("dropout"), self.settings.get("embeddings")
        return Seq2Seq(model, datamodule.vocab_size, self.attention, settings.embed,
                       settings.dropout if dropout is None else dropout,
                       settings.label_smoothing, self.settings.get("score", "additive"),
                       copy=self.settings.get("output") == "copy",
                       attention_size=self.settings.get("attention_size") or settings.attention,
                       tie=settings.tie if embeddings is None else embeddings == "tied")

    def metrics(self):
        return torchmetrics.MetricCollection({
            "bleu": SacreBLEUStat("bleu"),
            "chrf": SacreBLEUStat("chrf"),
            "perplexity": torchmetrics.text.Perplexity(ignore_index=PAD),
            "length_ratio": LengthRatio(),  # hypotheses' length over the references'
            "no_eos": torchmetrics.MeanMetric(),  # share of outputs that never emit the end token
        })

    def loss(self, logits, target):
        """Plain cross-entropy of logits at the real target positions, (N, V), against their
        targets, (N,), as `Seq2Seq.scored` gives them (validation and test; training smooths it)."""
        return nn.functional.cross_entropy(logits, target)

    def training_loss(self, network, batch):
        return network.training_loss(batch["src"], batch["src_len"], batch["tgt_in"], batch["tgt_out"])

    def translate(self, network, batch, beam: int, datamodule) -> list[list[int]]:
        """Greedy (beam 1) or beam search, ranked by the run's length exponent."""
        if beam > 1:
            alpha = self.length_exponent(network, datamodule)
            ids = beam_search(network, batch["src"], batch["src_len"], max_output_length(batch), beam, alpha)
        else:
            ids = greedy(network, batch["src"], batch["src_len"], max_output_length(batch))
        return ids.tolist()

    def length_exponent(self, network, datamodule) -> float:
        """The test's length exponent: `-o length`'s number, or (`val`, the default) the one of
        LENGTH_EXPONENTS whose beam-search outputs on the validation split score the highest BLEU
        (`-o length_by=bleu`) or come nearest the references' length (`length`; ties: the nearest
        to 1), chosen once per network from one search, since the search does not depend on the
        ranking. Decoding settings are tuned on held-out data, not the test (as GNMT's length
        penalty, Wu et al. 2016)."""
        setting = self.settings["length"]
        if setting != "val":
            return float(setting)
        if getattr(network, "length_exponent", None) is None:
            scores = scores_by_length_exponent(network, datamodule.val_batches_to_tune(), self.settings["beam"],
                                               datamodule)
            network.length_exponent = choose_length_exponent(scores, self.settings["length_by"])
            network.length_exponent_val = scores
        return network.length_exponent

    def baselines(self, datamodule):
        from collections import Counter

        counts = Counter(target for _, _, (_, target) in datamodule.splits["train"])
        frequent, times = counts.most_common(1)[0]
        return [
            Baseline("copy the source", "the German source as the English output", TextBaseline(lambda b: b["source_text"])),
            Baseline("most frequent target", f"always the training split's most frequent English sentence "
                     f"({frequent!r}, {times} times)", TextBaseline(lambda b: [frequent] * len(b["source_text"]))),
        ]

    def evaluate(self, network, batch, metrics, stage, datamodule=None):
        if isinstance(network, TextBaseline):  # texts only: BLEU and chrF, no perplexity
            hypotheses = network.hypotheses(batch)
            for name in ("bleu", "chrf", "length_ratio"):
                metrics[name].update(hypotheses, batch["target_text"])
            return torch.tensor(float("nan"))
        logits, target = network.scored(batch["src"], batch["src_len"], batch["tgt_in"], batch["tgt_out"])
        metrics["perplexity"].update(logits[None], target[None])
        beam = self.settings["beam"] if stage == "test" else 1
        update_output_metrics(metrics, self.translate(network, batch, beam, datamodule), batch, datamodule)
        return self.loss(logits, target)

    def samples_in(self, batch):
        return len(batch["src"])

    def tokens_in(self, batch):
        return batch["src_len"].sum() + (batch["tgt_out"] != PAD).sum()  # a tensor: read at the fit's end

    def artifacts(self, network, datamodule, out):
        datamodule.setup("test")
        network.eval()
        items = datamodule.splits["test"][:EXAMPLES]
        batch = datamodule.collate(items)
        device = next(network.parameters()).device
        batch = move_data_to_device(batch, device)
        beam = self.settings["beam"]
        outputs = self.translate(network, batch, beam, datamodule)
        hypotheses = [datamodule.decode(ids) for ids in outputs]
        metric_bleu, metric_chrf = SacreBLEUStat("bleu"), SacreBLEUStat("chrf")
        pictures = [attention_picture(network, batch, outputs, datamodule, Path(out) / "attention.png")] \
            if network.attention is not None else []
        return {
            "pictures": pictures,
            "examples": [{"source": s, "reference": r, "hypothesis": h}
                         for (s, r), h in zip(batch_pairs(items), hypotheses)],
            "bleu_signature": metric_bleu.signature(),
            "chrf_signature": metric_chrf.signature(),
            "corpus": datamodule.corpus.summary(),
            "splits": {k: len(v) for k, v in datamodule.splits.items()},
            "tokenizer": str(datamodule.tokenizer_path),
            "vocab_size": datamodule.vocab_size,
            "length_exponent": self.length_exponent(network, datamodule) if beam > 1 else None,
            **{f"length_exponent_val_{kind}": getattr(network, "length_exponent_val", {}).get(kind)
               for kind in ("bleu", "chrf", "length_ratio")},
        }

    def config(self):
        corpus = self.settings.get("corpus")
        fingerprint = {"corpus_md5": file_md5(corpus)} if corpus else {}
        return {**super().config(), **fingerprint, "attention": self.attention, "max_train_tokens": MAX_TRAIN_TOKENS,
                "vocab_size": {k: b.vocab_size for k, b in self.budgets.items()}, "pre_tokenizer": "metaspace + punctuation",
                "network": {k: asdict(b.network) for k, b in self.budgets.items()},
                "split": "sha1(source) buckets: 5% test, 5% validation, 90% train"}


@functools.lru_cache(maxsize=8)
def file_md5(path: str) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def attention_picture(network: Seq2Seq, batch: dict, outputs: list[list[int]], datamodule, path: Path) -> dict:
    """A picture of what the decoder read for one of the report's example translations: its
    attention weights over the source tokens at each output token and, with copying, p(copy) per
    output token. The example shown is the one of them with the most copying (the first without)."""
    plt = figures.pyplot()

    device = batch["src"].device
    shown = []
    for b, ids in enumerate(outputs):
        ids = [i for i in ids if i != PAD]
        ended = EOS in ids[:MAX_PICTURE_TOKENS]
        out_ids = ids[: ids.index(EOS) + 1] if ended else ids[:MAX_PICTURE_TOKENS]  # the end token shown if reached
        tgt_in = torch.tensor([[BOS, *out_ids[:-1]]], device=device)
        length = int(batch["src_len"][b])
        src, src_len = batch["src"][b : b + 1, :length], batch["src_len"][b : b + 1]
        with torch.no_grad():
            memory, source, state = network.encode(src, src_len)
            features = network.features(tgt_in, state, memory, source)[0]
        copy = None if features.generate is None else (1 - features.generate[0, :, 0]).cpu()
        shown.append((0.0 if copy is None else float(copy.mean()), b, out_ids, src[0].tolist(),
                      features.weights[0].cpu(), copy))
    score, b, out_ids, src_ids, weights, copy = max(shown, key=lambda x: (x[0], -x[1]))
    tokenizer = datamodule.load_tokenizer()
    names = lambda ids: [tokenizer.id_to_token(i) or "?" for i in ids]  # noqa: E731
    rows, columns = len(out_ids), len(src_ids)
    fig, axes = plt.subplots(1, 2 if copy is not None else 1, squeeze=False, dpi=90,
                             figsize=(2.5 + 0.35 * columns, 1.5 + 0.3 * rows),
                             gridspec_kw={"width_ratios": [columns, 1.2] if copy is not None else [1]})
    ax = axes[0, 0]
    ax.imshow(weights.numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(columns), names(src_ids), rotation=90, fontsize=7)
    ax.set_yticks(range(rows), names(out_ids), fontsize=7)
    ax.set_xlabel("source token")
    ax.set_ylabel("output token")
    ax.set_title("attention", fontsize=8)
    if copy is not None:
        axes[0, 1].imshow(copy.numpy()[:, None], cmap="Oranges", vmin=0, vmax=1, aspect="auto")
        axes[0, 1].set_xticks([])
        axes[0, 1].set_yticks(range(rows), [f"{p:.2f}" for p in copy.tolist()], fontsize=7)
        axes[0, 1].yaxis.tick_right()
        axes[0, 1].set_title("p(copy)", fontsize=8)
    figures.save(fig, path, pad=0.3)
    caption = ("attention over the source at each output token, and p(copy) per output token; the example "
               "translation with the most copying" if copy is not None else
               "attention over the source at each output token, first example translation")
    return {"path": str(path), "caption": caption, "example": b, "mean_copy": score if copy is not None else None}


def batch_pairs(items):
    return [pair for _, _, pair in items]


register_task(TranslationTask("translation-de-en", "German -> English, Ding dictionary sentences, encoder-decoder", False, False))
register_task(TranslationTask("translation-de-en-attention", "German -> English, encoder-decoder with attention", True, False))
register_task(TranslationTask("translation-tsv", "any source<TAB>target corpus (--task-option corpus=PATH)", False, True))
register_task(TranslationTask("translation-tsv-attention", "any source<TAB>target corpus, with attention", True, True))
