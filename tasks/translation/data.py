"""The translation data module: the corpus split, a BPE tokenizer trained on the training split and
saved with the run, and batches of pairs of similar length."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from tasks.translation.corpus import Corpus, entries_to_add, split_pairs
from tasks.translation.tokens import BOS, EOS, PAD, SPECIAL_TOKENS

MAX_TRAIN_TOKENS = 48  # longer training pairs (either side, in BPE tokens) are left out and counted
# a batch of dictionary entries holds `batch_size` of them, or more: count * longest entry's tokens
# (source + target) <= batch_size * this; sentences average 28 tokens, entries about 10
BATCH_TOKENS_PER_PAIR = 20


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
            # "design." and "design" are two words to learn from 18k sentences
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
