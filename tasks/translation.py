"""Translation with an RNN encoder-decoder (Cho et al. 2014; Sutskever et al. 2014).

    rnnbench run --task translation-de-en --cell lstm_fused --cell gru_fused --cell rnn_fused
    rnnbench run --task translation-de-en-attention --cell gru_fused --bidirectional --task-option beam=10
    rnnbench run --task translation-tsv --task-option corpus=deu.txt --cell lstm_fused

The encoder and the decoder are two instances of the chosen cell (any registered cell); the
encoder may be bidirectional, its final state is bridged to the decoder's initial state. The
`-attention` variants add attention over the encoder outputs (the additive score v . tanh(W q +
U k) of Bahdanau et al. 2015, or `-o score=general` for Luong et al. 2015's q . W k), applied to the decoder's
outputs (the placement of Luong et al. 2015), so that teacher forcing runs the decoder over the
whole target in one call of the cell; they also copy from the source (`-o output=copy`, the
default: the output layer's distribution mixed with the attention on the source's tokens, See et
al. 2017's pointer-generator). Source and target share one BPE vocabulary (Hugging Face
`tokenizers`) trained on the training split and saved with the run; on the quick budget the output
layer's weights are the embedding's (`-o embeddings=tied|apart`). The Ding tasks can also
train on the dictionary's word and phrase entries (`-o entries=N`; `entries_to_add` says which).
Validation decodes greedily; the test decodes with beam search (width 5, or `--task-option
beam=K`; 1 decodes greedily). Metrics: corpus BLEU and chrF with SacreBLEU's standard settings
(signatures stored with the run), and token-level perplexity under teacher forcing.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import lightning as L
from lightning.fabric.utilities.apply_func import move_data_to_device
import numpy as np
import torch
import torchmetrics
from torch import Tensor, nn
from torch.utils.data import DataLoader

from cells import build_cell
from reports import figures
from tasks.base import (Baseline, Budget, ModelConfig, Option, StateBridge, Task, non_negative_int, positive_int,
                        register_task)
from tasks.data import DataError
from tasks.translation_data import Corpus, entries_to_add, find_ding, parse_ding, parse_tsv, split_pairs

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]
MAX_TRAIN_TOKENS = 48  # longer training pairs (either side, in BPE tokens) are left out and counted
EXAMPLES = 6
MAX_PICTURE_TOKENS = 40  # output tokens shown in the attention picture
# the dictionary entries a Ding task trains on beside the sentences by default (`-o entries=N`).
# Measured with `rnnbench run`, the quick LSTM (docs/results.md): 20,000 in 14 epochs, three seeds, BLEU
# 5.16 / chrF 22.17 against version 6's 4.71 / 21.19, but in 700-866 s of training against 417-432;
# 10,000 in 12 epochs (seed 0) 4.30 / 20.13 in 660 s. Over the quick budget's 8 minutes, so 0
DICTIONARY_ENTRIES = 0
# a batch of dictionary entries holds `batch_size` of them, or more: count * longest entry's tokens
# (source + target) <= batch_size * this; sentences average 28 tokens, entries about 10
BATCH_TOKENS_PER_PAIR = 20


# ---------------------------------------------------------------- metrics


class SacreBLEUStat(torchmetrics.Metric):
    """A SacreBLEU corpus metric (BLEU or chrF, 0-100) from summed sufficient statistics.

    Summing the per-sentence statistics and scoring the sum is how SacreBLEU computes a corpus
    score; keeping only the sums makes the metric add up across batches and DDP processes.
    """

    full_state_update = False

    def __init__(self, kind: str):
        super().__init__()
        from sacrebleu.metrics import BLEU, CHRF

        self.kind = kind
        self.scorer = {"bleu": BLEU, "chrf": CHRF}[kind]()
        width = len(self.scorer._extract_corpus_statistics(["a"], [["a"]])[0])
        self.add_state("stats", default=torch.zeros(width, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, hypotheses: list[str], references: list[str]) -> None:
        stats = np.asarray(self.scorer._extract_corpus_statistics(hypotheses, [references]), dtype=np.float64)
        self.stats += torch.from_numpy(stats.sum(axis=0)).to(self.stats.device)

    def compute(self) -> Tensor:
        counts = [int(round(v)) for v in self.stats.tolist()]
        return torch.tensor(self.scorer._compute_score_from_stats(counts).score, dtype=torch.float64)

    def signature(self) -> str:
        self.scorer.corpus_score(["a"], [["a"]])  # a signature needs one scoring
        return str(self.scorer.get_signature())


class LengthRatio(SacreBLEUStat):
    """Hypothesis length over reference length, in SacreBLEU's BLEU tokens (its brevity-penalty ratio)."""

    def __init__(self):
        super().__init__("bleu")

    def compute(self) -> Tensor:
        return self.stats[0] / self.stats[1].clamp(min=1)  # BLEU's statistics start (hyp_len, ref_len)


# ---------------------------------------------------------------- data


class TranslationData(L.LightningDataModule):
    def __init__(self, load_corpus, batch_size: int, vocab_size: int, run_dir: Path | None,
                 split_punctuation: bool = True, val_batches: int | None = None, dictionary_entries: int = 0):
        super().__init__()
        self.val_batches = val_batches
        self.dictionary_entries = dictionary_entries  # how many of the corpus's entries to train on
        self.load_corpus, self.batch_size, self.vocab_size_wanted = load_corpus, batch_size, vocab_size
        self.split_punctuation = split_punctuation
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.tokenizer = None

    @property
    def tokenizer_path(self) -> Path:
        if self.run_dir is None:
            raise ValueError("the translation task needs a run folder to save its tokenizer in")
        return self.run_dir / "tokenizer.json"

    def prepare_data(self) -> None:
        """Parse, split, and train the BPE tokenizer on the training split (once per run)."""
        if self.tokenizer_path.is_file():
            return
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        corpus = self.load_corpus()
        splits = split_pairs(corpus)
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        if self.split_punctuation:
            # punctuation as tokens of its own, as a tokenizer before BPE (Moses) does: without it
            # "design." and "design" are two words to learn from 18k sentences (version 5: LSTM
            # seed 1, 15 epochs, test BLEU 4.88 / chrF 21.6 against 4.04 / 19.8 without)
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=self.vocab_size_wanted, min_frequency=2,
                                      special_tokens=SPECIAL_TOKENS, show_progress=False)
        tokenizer.train_from_iterator((text for pair in splits["train"] for text in pair), trainer=trainer)
        self.tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tokenizer_path.with_suffix(".tmp")
        tokenizer.save(str(tmp))
        tmp.replace(self.tokenizer_path)

    def load_tokenizer(self):
        if self.tokenizer is None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        return self.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.load_tokenizer().get_vocab_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.load_tokenizer().encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        if EOS in ids:
            ids = ids[: ids.index(EOS)]
        return self.load_tokenizer().decode(ids, skip_special_tokens=True)

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "splits"):
            return
        self.corpus: Corpus = self.load_corpus()
        pairs = split_pairs(self.corpus)
        self.splits = {}
        for name, split in pairs.items():
            sources, targets = self.encode([s for s, _ in split]), self.encode([t for _, t in split])
            items = list(zip(sources, targets, split))
            if name == "train":
                kept = [i for i in items if len(i[0]) <= MAX_TRAIN_TOKENS and len(i[1]) <= MAX_TRAIN_TOKENS]
                if len(kept) < len(items):
                    self.corpus.counts[f"training pairs over {MAX_TRAIN_TOKENS} tokens left out"] = len(items) - len(kept)
                items = kept
            self.splits[name] = items
        self.entries = []  # (source ids, target ids, pair): trained on beside the training sentences
        if self.dictionary_entries and self.corpus.entries:
            chosen = entries_to_add(self.corpus, pairs, self.dictionary_entries)
            sources, targets = self.encode([s for s, _ in chosen]), self.encode([t for _, t in chosen])
            self.entries = [(s, t, pair) for s, t, pair in zip(sources, targets, chosen)
                            if 0 < len(s) <= MAX_TRAIN_TOKENS and 0 < len(t) <= MAX_TRAIN_TOKENS]
        self.corpus.entries_trained_on = len(self.entries)

    @staticmethod
    def collate(items) -> dict:
        sources = [torch.tensor(s) for s, _, _ in items]
        targets = [torch.tensor(t) for _, t, _ in items]
        pad = nn.utils.rnn.pad_sequence
        bos, eos = torch.tensor([BOS]), torch.tensor([EOS])
        return {
            "src": pad(sources, batch_first=True, padding_value=PAD),  # (B, S)
            "src_len": torch.tensor([max(len(s), 1) for s in sources]),  # (B,)
            "tgt_in": pad([torch.cat([bos, t]) for t in targets], batch_first=True, padding_value=PAD),  # (B, T)
            "tgt_out": pad([torch.cat([t, eos]) for t in targets], batch_first=True, padding_value=PAD),  # (B, T)
            "source_text": [p[0] for _, _, p in items],
            "target_text": [p[1] for _, _, p in items],
        }

    def batches(self, name: str) -> list[list]:
        """Batches of pairs of similar length, so that little of a batch is padding.

        Training: the pairs shuffled (seeded by the run's seed), cut into chunks of 50 batches,
        each chunk sorted by length and cut into batches; the loader shuffles the batches.
        Dictionary entries (`-o entries`), when trained on, are shuffled and sorted the same way
        after the sentences, apart from them, into batches of `batch_size` entries or more: a
        batch takes entries while their count times its longest entry's tokens (source and
        target) stays within `batch_size * BATCH_TOKENS_PER_PAIR`, so that a batch of short
        entries costs about what a batch of sentences does; the sentences' batches are the same
        with or without entries. Validation and test: sorted by length. Either way the items are
        whole batches, so that DDP shards them across processes like any data set.
        """
        generator = torch.Generator().manual_seed(torch.initial_seed())
        batches = self._sorted_batches(self.splits[name], generator if name == "train" else None, 0)
        if name == "train" and self.entries:
            batches += self._sorted_batches(self.entries, generator, self.batch_size * BATCH_TOKENS_PER_PAIR)
        return batches

    def _sorted_batches(self, items: list, generator: torch.Generator | None, tokens: int) -> list[list]:
        """`items` in the order of `generator` (None: as they are, all in one chunk), chunks of 50
        batches sorted by length, cut into batches of `batch_size` items, or more while their
        count times the longest item's tokens stays within `tokens`."""
        if generator is not None:
            order, chunk = torch.randperm(len(items), generator=generator).tolist(), self.batch_size * 50
        else:
            order, chunk = list(range(len(items))), max(len(items), 1)
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: (len(items[i][0]), len(items[i][1])))
            batch, longest = [], 0
            for i in part:
                size = len(items[i][0]) + len(items[i][1])
                if len(batch) >= self.batch_size and (len(batch) + 1) * max(longest, size) > tokens:
                    batches.append(batch)
                    batch, longest = [], 0
                batch.append(items[i])
                longest = max(longest, size)
            batches.append(batch)
        return batches

    def val_batches_to_tune(self):
        """The validation batches a run validates on (the budget's `val_batches`, else all)."""
        for index, batch in enumerate(self.val_dataloader()):
            if self.val_batches is not None and index >= self.val_batches:
                return
            yield batch

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        # each item is a whole batch: automatic batching off, collate applied per item
        return DataLoader(self.batches(name), batch_size=None, shuffle=shuffle, collate_fn=self.collate)

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val", False)

    def test_dataloader(self):
        return self._loader("test", False)


# ---------------------------------------------------------------- model


class SourceAttention(nn.Module):
    """Attention over the source's steps: `scores` compares the queries with the keys' projection
    (`project`, computed once per source, not at every decoding step); `weights` is their softmax
    over the real source steps (the decoder takes the context from them)."""

    key: nn.Linear  # the keys' projection

    def project(self, keys: Tensor) -> Tensor:
        return self.key(keys)

    def scores(self, queries: Tensor, projected: Tensor) -> Tensor:
        raise NotImplementedError

    def weights(self, queries: Tensor, projected: Tensor, mask: Tensor) -> Tensor:
        # queries (B, T, Q), projected keys (B, S, P), mask (B, S) True at real steps -> weights (B, T, S)
        return self.scores(queries, projected).masked_fill(~mask[:, None], float("-inf")).softmax(-1)


class AdditiveAttention(SourceAttention):
    """score(q, k) = v . tanh(W_q q + W_k k) (Bahdanau et al. 2015), softmax over real source steps.

    The default since version 8: bounded by the tanh, it does not grow with the size of the
    states it compares. With the general score the quick GRU fitted its training split more
    slowly than the LSTM and scored 2.2 BLEU behind it; with this one, one seed of the bare loop
    (benchmarks/translation_variants.py) moved its test BLEU from 2.94 to 4.26 (docs/results.md). `size`,
    the width of the tanh layer, is apart from the hidden size since version 9."""

    def __init__(self, query_size: int, key_size: int, size: int):
        super().__init__()
        self.query = nn.Linear(query_size, size, bias=False)
        self.key = nn.Linear(key_size, size)  # W_k k, (B, S, size)
        self.score = nn.Linear(size, 1, bias=False)

    def scores(self, queries: Tensor, projected: Tensor) -> Tensor:
        return self.score(torch.tanh(self.query(queries)[:, :, None] + projected[:, None])).squeeze(-1)


class GeneralAttention(SourceAttention):
    """score(q, k) = q . W k (Luong et al. 2015, "general"), softmax over real source steps.

    The default of versions 3 to 7: on a 2-core CPU the additive score's (B, T, S, size) tanh and
    its backward took half of a training step of version 2 (hidden 256: 301 ms a step against 152
    ms without attention; not measured the same way since version 5 computes the output layer at
    real positions only)."""

    def __init__(self, query_size: int, key_size: int, size: int):
        super().__init__()
        self.key = nn.Linear(key_size, query_size, bias=False)  # W k, (B, S, Q)

    def scores(self, queries: Tensor, projected: Tensor) -> Tensor:
        return queries @ projected.transpose(1, 2)  # (B, T, S)


ATTENTION = {"general": GeneralAttention, "additive": AdditiveAttention}
OUTPUTS = ("copy", "generate")  # `-o output`: with copying from the source (the default), or the output layer alone


class Source(NamedTuple):
    """What the decoder reads of the source besides the encoder's outputs: mask (B, S), True at
    real steps, the source's token ids (B, S), which copying puts probability on, and with
    attention its projection of the encoder's outputs (`project`, (B, S, ...)), computed once:
    decoding step by step would otherwise project the same outputs at every step."""

    mask: Tensor
    ids: Tensor
    keys: Tensor | None = None

    def repeat_interleave(self, times: int) -> "Source":
        return Source(*(None if t is None else t.repeat_interleave(times, 0) for t in self))

    def ids_at_steps(self, steps: int) -> Tensor:
        """The source's ids for each of `steps` decoder steps: (B, steps, S), a view."""
        return self.ids[:, None].expand(-1, steps, -1)


class Features(NamedTuple):
    """What the output distribution is computed from: the attentional vectors, dropout applied,
    (B, T, H); with attention, its weights (B, T, S); with copying, the probability of generating
    rather than copying (B, T, 1); else None."""

    output: Tensor
    weights: Tensor | None = None
    generate: Tensor | None = None

    def at(self, real: Tensor) -> "Features":
        """The rows at the (B, T) positions where `real` is True: (N, ...)."""
        return Features(*(None if t is None else t[real] for t in self))


class Dropout(nn.Dropout):
    """`nn.Dropout` (inverted: the kept values scaled by 1 / (1 - p)), its mask drawn on CPU as
    `rand_like(x) >= p`. torch's CPU dropout draws its mask with `bernoulli_`, measured slow on this
    project's 2-core CPU: `F.dropout` of a (64, 30, 256) tensor took 4.8 ms, this 2.1 ms, and a quick
    translation GRU step with it costs about 0.92x one with `nn.Dropout` (`benchmarks/
    translation_step_cost.py`, docs/results.md). Other devices keep torch's fused kernel."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or self.p >= 1 or x.device.type != "cpu":
            return super().forward(x)
        keep = (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * keep.mul_(1 / (1 - self.p))


class TiedOutput(nn.Module):
    """The output layer whose weights are the embedding's (Press & Wolf 2017; Inan et al. 2017):
    logits = P(x) . E^T + b, P a linear map from the features to the embedding size where the two
    differ. Fewer parameters to fit on a small corpus (Sennrich & Zhang 2019 tie them in low-resource
    translation), and the (N, V) matmul is the embedding's width, not the hidden size."""

    def __init__(self, embedding: nn.Embedding, features: int):
        super().__init__()
        self.tied = [embedding]  # a reference, not a submodule: its weight is the Seq2Seq's own
        self.project = nn.Linear(features, embedding.embedding_dim, bias=False) \
            if features != embedding.embedding_dim else nn.Identity()
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(self.project(x), self.tied[0].weight, self.bias)


class Seq2Seq(nn.Module):
    """`embed`: the embedding size (apart from the hidden size); `dropout`: on the embeddings and
    on the decoder's features before the output layer; `label_smoothing`: of the training loss
    (regularisation for a small corpus); `copy` (with attention): the output distribution mixes
    the output layer's softmax with the attention weights put on the source's tokens, weighted by
    a learned probability of generating (the pointer-generator of See et al. 2017; Gu et al.
    2016's copying), possible because source and target share one vocabulary: names, numbers and
    cognates pass through whole. `decode` then gives log-probabilities of the mixture, which
    serve wherever logits do (softmax, argmax, beam search, perplexity). `tie`: the output layer's
    weights are the embedding's (`TiedOutput`); with attention the attentional vector is then the
    embedding's size."""

    def __init__(self, model: ModelConfig, vocab_size: int, attention: bool, embed: int = 256, dropout: float = 0.0,
                 label_smoothing: float = 0.0, score: str = "additive", copy: bool = False, attention_size: int = 0,
                 tie: bool = False):
        super().__init__()
        hidden = model.hidden_size
        self.label_smoothing = label_smoothing  # of the training loss
        self.drop = Dropout(dropout)
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=PAD)  # shared: one BPE vocabulary
        self.encoder = build_cell(model.cell, embed, hidden, model.num_layers, model.bidirectional, model.dropout)
        self.decoder = build_cell(model.cell, embed, hidden, model.num_layers, False, model.dropout)
        directions = self.encoder.num_directions
        self.bridge = StateBridge(self.encoder, self.decoder)
        self.attention = ATTENTION[score](hidden, directions * hidden, attention_size or hidden) if attention else None
        features = embed if tie and attention else hidden  # the attentional vector's size
        self.combine = nn.Linear(hidden + directions * hidden, features) if attention else None
        self.generator = TiedOutput(self.embedding, features) if tie else nn.Linear(hidden, vocab_size)
        if copy and not attention:
            raise ValueError("copying from the source needs attention")
        # p(generate) from the attentional vector, the context and the input embedding (See et al. 2017)
        self.generate = nn.Linear(features + directions * hidden + embed, 1) if copy else None

    def encode(self, src: Tensor, src_len: Tensor):
        memory, state = self.encoder(self.drop(self.embedding(src)), lengths=src_len)  # (B, S, D*H)
        mask = torch.arange(src.shape[1], device=src.device)[None] < src_len.to(src.device)[:, None]  # (B, S)
        keys = None if self.attention is None else self.attention.project(memory)
        return memory, Source(mask, src, keys), self.bridge(state)

    def features(self, tgt_in: Tensor, state, memory: Tensor, source: Source) -> tuple[Features, tuple]:
        """What the output distribution is computed from (`Features`), and the decoder's state."""
        embedded = self.drop(self.embedding(tgt_in))
        output, state = self.decoder(embedded, state)  # (B, T, H)
        if self.attention is None:
            return Features(self.drop(output)), state
        weights = self.attention.weights(output, source.keys, source.mask)  # (B, T, S)
        context = weights @ memory  # (B, T, D*H)
        output = self.drop(torch.tanh(self.combine(torch.cat([output, context], dim=-1))))
        if self.generate is None:
            return Features(output, weights), state
        generate = torch.sigmoid(self.generate(torch.cat([output, context, embedded], dim=-1)))  # (B, T, 1)
        return Features(output, weights, generate), state

    def distribution(self, features: Features, source_ids: Tensor) -> Tensor:
        """Logits over the vocabulary (..., V); with copying, log-probabilities of the mixture.
        `source_ids` (..., S): the source token each attention weight falls on."""
        if features.generate is None:
            return self.generator(features.output)
        vocabulary = self.generator(features.output).softmax(-1)
        copied = torch.zeros_like(vocabulary).scatter_add_(-1, source_ids, features.weights)
        mixed = features.generate * vocabulary + (1 - features.generate) * copied
        return mixed.clamp_min(torch.finfo(mixed.dtype).tiny).log()

    def decode(self, tgt_in: Tensor, state, memory: Tensor, source: Source):
        features, state = self.features(tgt_in, state, memory, source)
        return self.distribution(features, source.ids_at_steps(tgt_in.shape[1])), state  # (B, T, V)

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        memory, source, state = self.encode(src, src_len)
        return self.decode(tgt_in, state, memory, source)[0]

    def _scored_features(self, src, src_len, tgt_in, tgt_out) -> tuple[Features, Tensor, Tensor]:
        memory, source, state = self.encode(src, src_len)
        real = tgt_out != PAD
        features = self.features(tgt_in, state, memory, source)[0].at(real)
        return features, source.ids_at_steps(tgt_in.shape[1])[real], tgt_out[real]  # ids (N, S)

    def scored(self, src: Tensor, src_len: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing with the output layer and its softmax computed at the real target
        positions only, (N, V), with their targets (N,): padding takes a third of the positions of
        a quick training batch (batches are sorted by source length), and the output layer is the
        largest cost of a step. The loss over these equals the loss over all positions with the
        padding ignored."""
        features, ids, target = self._scored_features(src, src_len, tgt_in, tgt_out)
        return self.distribution(features, ids), target

    def training_loss(self, src: Tensor, src_len: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> Tensor:
        """Label-smoothed cross-entropy at the real target positions. With copying, the mixture's
        -log p(target) is computed from the target's own probabilities only (no (N, V) mixture),
        and the smoothing term is the output layer's (the generating part): a step then costs what
        one without copying does (10 training steps of the quick LSTM, 1.59 against 1.58 s)."""
        features, ids, target = self._scored_features(src, src_len, tgt_in, tgt_out)
        if features.generate is None:
            return nn.functional.cross_entropy(self.generator(features.output), target,
                                               label_smoothing=self.label_smoothing)
        vocabulary = self.generator(features.output).log_softmax(-1)  # (N, V)
        generated = vocabulary.gather(1, target[:, None])[:, 0].exp()
        copied = (features.weights * (ids == target[:, None])).sum(-1)
        generate = features.generate[:, 0]
        nll = -(generate * generated + (1 - generate) * copied).clamp_min(torch.finfo(generated.dtype).tiny).log()
        return ((1 - self.label_smoothing) * nll - self.label_smoothing * vocabulary.mean(-1)).mean()

    @torch.no_grad()
    def greedy(self, src: Tensor, src_len: Tensor, max_len: int) -> Tensor:
        memory, source, state = self.encode(src, src_len)
        token = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_len):
            logits, state = self.decode(token, state, memory, source)
            token = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            out.append(token)
            done |= token[:, 0] == EOS
            if done.all():
                break
        return torch.cat(out, dim=1)  # (B, <= max_len)

    @torch.no_grad()
    def beam_candidates(self, src: Tensor, src_len: Tensor, max_len: int, beam: int) -> tuple[Tensor, Tensor, Tensor]:
        """Beam search's finished hypotheses, before ranking: tokens (B, K, T) with padding after
        the end token, their log-probabilities (B, K) and lengths (B, K). The search itself does
        not depend on how they are ranked (`rank`)."""
        batch = src.shape[0]
        memory, source, state = self.encode(src, src_len)
        memory, source = memory.repeat_interleave(beam, 0), source.repeat_interleave(beam)
        state = tuple(s.repeat_interleave(beam, 1) for s in state)  # (L, B*K, H)
        scores = torch.full((batch, beam), float("-inf"), device=src.device)
        scores[:, 0] = 0.0  # one live beam at the start
        tokens = torch.full((batch, beam, 1), BOS, dtype=torch.long, device=src.device)
        lengths = torch.zeros(batch, beam, device=src.device)
        ended = torch.zeros(batch, beam, dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            logits, state = self.decode(tokens[:, :, -1].reshape(-1, 1), state, memory, source)
            logp = logits[:, -1].log_softmax(-1).view(batch, beam, -1)  # (B, K, V)
            # an ended beam continues only with padding, at no cost
            frozen = torch.full_like(logp[0, 0], float("-inf"))
            frozen[PAD] = 0.0
            logp = torch.where(ended[..., None], frozen, logp)
            total = (scores[..., None] + logp).view(batch, -1)  # (B, K*V)
            scores, index = total.topk(beam, dim=-1)
            origin, token = index // logp.shape[-1], index % logp.shape[-1]  # (B, K)
            flat = (origin + torch.arange(batch, device=src.device)[:, None] * beam).view(-1)
            state = tuple(s.index_select(1, flat) for s in state)
            tokens = torch.cat([tokens.view(batch * beam, -1)[flat].view(batch, beam, -1), token[..., None]], dim=-1)
            ended, lengths = ended.gather(1, origin), lengths.gather(1, origin)
            lengths = lengths + (~ended).float()
            ended = ended | (token == EOS)
            if ended.all():
                break
        return tokens[:, :, 1:], scores, lengths

    @staticmethod
    def rank(candidates: tuple[Tensor, Tensor, Tensor], alpha: float) -> Tensor:
        """The best of each sentence's candidates by log-probability / length ** alpha: (B, T)."""
        tokens, scores, lengths = candidates
        best = (scores / lengths.clamp(min=1) ** alpha).argmax(-1)  # (B,)
        return tokens[torch.arange(tokens.shape[0], device=tokens.device), best]

    def beam_search(self, src: Tensor, src_len: Tensor, max_len: int, beam: int, alpha: float = 1.0) -> Tensor:
        """Beam search; finished hypotheses are ranked by log-probability / length ** alpha (1.0: per
        token; on the quick LSTM, 0.6 gave outputs 0.79x the references' length and BLEU 3.8,
        1.0 gave 0.90x and 4.0, 1.5 gave 1.32x and 2.9)."""
        return self.rank(self.beam_candidates(src, src_len, max_len, beam), alpha)


class TextBaseline(nn.Module):
    """A baseline translator: `hypotheses(batch)` gives its output texts for a batch."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer  # batch -> list of texts

    def hypotheses(self, batch: dict) -> list[str]:
        return self.answer(batch)


# ---------------------------------------------------------------- task


def _one_of(choices):
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


_attention_score, _output, _embeddings = _one_of(tuple(ATTENTION)), _one_of(OUTPUTS), _one_of(("apart", "tied"))
_length_by = _one_of(("bleu", "length"))


# the test's length exponents tried on the validation split (`-o length=val`)
LENGTH_EXPONENTS = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5)


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


# dropout: 0.3 on quick in versions 5 to 9; version 5's three LSTM seeds at 0.2 scored lower (BLEU 4.54
# against 4.71), version 10's (0.2 with the output layer tied to the embedding) did not: three seeds of
# `rnnbench run` each (docs/results.md): GRU BLEU 4.36 / chrF 21.11 against version 9's 4.23 / 20.56, every seed
# over BLEU 4; LSTM 5.21 / 22.19 against 5.06 / 22.57; a step 0.75-0.88x the cost (`benchmarks/
# translation_step_cost.py`: the output layer's matmul 128 wide, not 256); version 11's 0.1 (three seeds each,
# docs/results.md): GRU BLEU 4.55 / chrF 22.63 (22.53-22.73), LSTM 5.32 / 23.11, each with the length exponent by
# the outputs' length (`-o length_by=length`); at 0.2 with it the GRU's chrF had stayed under 22
# the additive score 128 wide on quick (version 9; version 8's was the hidden size, 256): its
# (B, T, S, size) tanh and backward cost about a fifth of a step at 256, and a step costs 0.86x
# at 128 (`benchmarks/translation_step_cost.py`). One seed of the bare loop trained alike at 256, 128
# and 64 (the same training loss; the GRU's test BLEU fell with the width, the LSTM's did not); three
# seeds of `rnnbench run` scored a little under version 8 (LSTM BLEU 5.06 against 5.49, p = 0.07) in
# 0.72x (GRU) and 0.83x (LSTM) of its training time (docs/results.md)
@dataclass(frozen=True)
class TranslationBudget(Budget):
    """A budget with the translation network's settings and the BPE vocabulary's size (the
    task's config stores both, by budget)."""

    vocab_size: int = 4000
    network: Seq2SeqSettings = Seq2SeqSettings(128, 0.1, 0.1)


BUDGETS = {
    "smoke": TranslationBudget(max_epochs=1, batch_size=32, hidden_size=32, lr=3e-3, train_batches=6, val_batches=1,
                    test_batches=2, vocab_size=400, network=Seq2SeqSettings(32, 0.0, 0.0),
                    note="6 training batches: checks the path, not quality"),
    # version 2 (additive attention, lr 2e-3, BPE 2000, greedy test, 10 epochs) took 11.4 min for the
    # attention LSTM on a 2-core CPU and scored BLEU 1.80, chrF 17.1; measured figures in docs/results.md
    # version 3 trained 9 epochs; its validation BLEU was still rising at the end. Measured with a bare
    # loop of this model (one seed, test with beam 5): 9 epochs BLEU 3.90 / chrF 19.4, 11 epochs
    # 4.14 / 20.1, 13 epochs 4.61 / 20.6; version 4 trained 12 epochs, what fitted 8 minutes on a
    # 2-core CPU then. Version 5's LSTM epochs cost 10-19 % less (the output layer at real positions
    # only; the GRU's 5-12 %), so 14 epochs take about 7 minutes at the speed version 4's 12 were
    # measured at (an estimate: the machine that ran version 5 was slower; docs/results.md). Cheaper quick steps
    # tried for the 8 minutes on a 2-core AMD EPYC, where version 11 takes 10.5-12 min (docs/results.md, "Toward
    # the 8-minute floor"): hidden 128 made a step about 0.7x as costly and kept the GRU's quality, but
    # runs took 8.1-8.8 min and the LSTM's chrF fell to 21.72; fewer epochs cost the GRU's chrF (12: 21.54).
    # Hidden 128 with the LSTM's forget-gate bias 1 and validation every 2nd epoch (rnnbench 048cfd2,
    # three seeds each): the GRU met the quality floors in 8.4-8.7 min a run, the LSTM's chrF was 22.12,
    # 21.98, 21.11; at hidden 128 neither its dropout (0-0.2) nor its lr (3e-3-6e-3) lifted it over 22. A step at
    # hidden 192 or 160 costs 0.75-0.83x one at 256 (the embedding, output layer and attention keep their width);
    # at hidden 192 (seed 0) both cells met the quality floors in 9.6 (LSTM) and 10.2 min (GRU) a run
    "quick": TranslationBudget(max_epochs=14, batch_size=64, hidden_size=256, lr=4e-3, vocab_size=4000,
                    network=Seq2SeqSettings(128, 0.1, 0.1, attention=128, tie=True),
                    note="14 epochs, hidden 256, embedding 128 (tied to the output layer), dropout 0.1, label smoothing "
                    "0.1, attention 128, "
                    "BPE 4000 (punctuation split off), beam 5, length exponent by the validation outputs' length"),
    "paper": TranslationBudget(max_epochs=30, batch_size=64, hidden_size=512, lr=1e-3, vocab_size=8000,
                    network=Seq2SeqSettings(256, 0.3, 0.1), note="30 epochs, hidden 512"),
}


class TranslationTask(Task):
    # 2: embedding size apart from the hidden size, dropout, label smoothing; 3: general attention
    # score (`-o score=additive`: version 2's), beam 5 at the test by default; 4: 12 epochs on quick;
    # 5: punctuation split off before BPE, 14 epochs on quick; 6: the test's length exponent
    # chosen on the validation split (`-o length=val`; version 5 ranked per token, `-o length=1`).
    # `-o entries=N` (dictionary entries trained on) came later; its default, 0, is version 6.
    # 7: the attention tasks copy from the source (`-o output=copy`; `-o output=generate` is version 6);
    # 8: the additive attention score by default (`-o score=general` is version 7); 9: the additive
    # score 128 wide on quick (`-o attention_size=256` is version 8's width) and dropout's mask drawn
    # by `rand_like` on CPU (`Dropout`); 10: on quick, the output layer tied to the embedding and dropout 0.2
    # (`-o embeddings=apart -o dropout=0.3` is version 9's model); 11: on quick, dropout 0.1, and the
    # length exponent the one whose validation outputs' length comes nearest the references'
    # (`-o dropout=0.2 -o length_by=bleu` is version 10)
    version = 11
    primary_metric = "bleu"
    target = 4.0  # the quick floor with attention
    higher_is_better = True
    budgets = BUDGETS

    def __init__(self, name: str, description: str, attention: bool, tsv: bool):
        self.name, self.description, self.attention, self.tsv = name, description, attention, tsv
        # beam search by default: greedy decoding of the quick LSTM scored BLEU 2.0 where a beam of
        # 5 scored 3.9 (greedy outputs ran 1.56x the references' length, 12.6 % never ended)
        self.options = {
            "beam": Option(5, positive_int, "beam width for the test; 1 decodes greedily", model_only=True),
            "length": Option("val", _length_exponent, "beam search ranks its hypotheses by log-probability / "
                             "length ** this: a number, or val: the one of "
                             f"{', '.join(map(str, LENGTH_EXPONENTS))} chosen on the validation split by -o length_by",
                             model_only=True),
            "length_by": Option("length", _length_by, "with -o length=val, what chooses the length exponent on the "
                                "validation split: length (the outputs' length nearest the references'; version 11) "
                                "or bleu (the highest BLEU; version 10)", model_only=True),
        }
        self.options["dropout"] = Option(None, _dropout, "dropout on the embeddings and on the decoder's features "
                                         "before the output layer (default: the budget's, quick "
                                         f"{BUDGETS['quick'].network.dropout})", model_only=True)
        self.options["embeddings"] = Option(None, _embeddings, "tied: the output layer's weights are the "
                                            "embedding's (Press & Wolf 2017); apart: its own (default: the budget's, "
                                            f"quick {'tied' if BUDGETS['quick'].network.tie else 'apart'})", model_only=True)
        if attention:
            self.options["score"] = Option("additive", _attention_score, "attention score: additive (v . tanh(W q + "
                                           "U k), Bahdanau et al. 2015) or general (q . W k, Luong et al. 2015; "
                                           "version 7's)",
                                           model_only=True)
            self.options["attention_size"] = Option(None, positive_int, "the additive score's size (the width of "
                                                    "its tanh layer; default: the budget's, quick "
                                                    f"{BUDGETS['quick'].network.attention}, else the hidden size; version 8's "
                                                    "is the hidden size)", model_only=True)
            self.options["output"] = Option("copy", _output, "copy: the output layer's distribution mixed with the "
                                            "attention on the source's tokens (a pointer-generator, See et al. 2017); "
                                            "generate: the output layer alone (version 6)", model_only=True)
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
            ids = network.beam_search(batch["src"], batch["src_len"], max_output_length(batch), beam, alpha)
        else:
            ids = network.greedy(batch["src"], batch["src_len"], max_output_length(batch))
        return ids.tolist()

    def length_exponent(self, network, datamodule) -> float:
        """The test's length exponent: `-o length`'s number, or (`val`, the default) the one of
        LENGTH_EXPONENTS whose beam-search outputs on the validation split score the highest BLEU
        (`-o length_by=bleu`) or come nearest the references' length (`length`; ties: the nearest
        to 1), chosen once per network from one search, since the search does not depend on the
        ranking. Decoding settings are tuned on held-out data, not the test (as
        GNMT's length penalty, Wu et al. 2016). Three quick seeds each (docs/results.md): the GRU, whose
        outputs ran 0.82-0.85x the references' length ranked per token, got 1.2-1.3 and chrF 17.1
        against 16.1 (BLEU 2.39 against 2.44); the LSTM got 0.9-1.1 and the same scores."""
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


def update_output_metrics(metrics, outputs: list[list[int]], batch: dict, datamodule) -> None:
    """BLEU, chrF and length ratio of a batch's outputs (token ids) against its references, and
    the share of outputs that never emit the end token (`no_eos`)."""
    hypotheses = [datamodule.decode(ids) for ids in outputs]
    for name in ("bleu", "chrf", "length_ratio"):
        metrics[name].update(hypotheses, batch["target_text"])
    metrics["no_eos"].update(torch.tensor([float(EOS not in ids) for ids in outputs]))


def scores_by_length_exponent(network: Seq2Seq, batches, beam: int, datamodule) -> dict[str, dict[float, float]]:
    """Corpus BLEU, chrF, length ratio and the share of outputs without an end token (`no_eos`) of
    `batches` decoded by one beam search, its hypotheses ranked at each of LENGTH_EXPONENTS:
    {"bleu": {a: score}, "chrf": ..., "length_ratio": ..., "no_eos": ...}. The search does not
    depend on the ranking, so this costs one search whatever the grid."""
    device = next(network.parameters()).device
    kinds = {"bleu": SacreBLEUStat, "chrf": SacreBLEUStat, "length_ratio": lambda _: LengthRatio(),
             "no_eos": lambda _: torchmetrics.MeanMetric()}
    metrics = {alpha: {kind: make(kind) for kind, make in kinds.items()} for alpha in LENGTH_EXPONENTS}
    for batch in batches:
        batch = move_data_to_device(batch, device)
        candidates = network.beam_candidates(batch["src"], batch["src_len"], max_output_length(batch), beam)
        for alpha, by_kind in metrics.items():
            update_output_metrics(by_kind, network.rank(candidates, alpha).tolist(), batch, datamodule)
    return {kind: {alpha: float(metrics[alpha][kind].compute()) for alpha in LENGTH_EXPONENTS} for kind in kinds}


def choose_length_exponent(scores: dict[str, dict[float, float]], by: str) -> float:
    """The length exponent `-o length_by` picks from `scores_by_length_exponent`'s validation scores:
    `bleu`, the highest BLEU; `length`, the outputs' length ratio nearest 1; any other key of
    `scores` (`chrf`), its highest. Ties: the a nearest 1."""
    key = {a: -abs(ratio - 1.0) for a, ratio in scores["length_ratio"].items()} if by == "length" else scores[by]
    return max(LENGTH_EXPONENTS, key=lambda a: (key[a], -abs(a - 1.0)))


def max_output_length(batch) -> int:
    """The longest output decoding may give a batch: twice its longest source and 10 tokens."""
    return int(batch["src_len"].max()) * 2 + 10


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
