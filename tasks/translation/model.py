"""The translation network: an encoder-decoder of two instances of the chosen cell, with attention
over the encoder's outputs and copying from the source as options (searches over it: `decoding`)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from cells import build_cell
from tasks.base import ModelConfig, StateBridge
from tasks.translation.tokens import PAD


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

    The default: bounded by the tanh, it does not grow with the size of the states it compares
    (with the general score the quick GRU fitted its training split more slowly). `size`, the
    width of the tanh layer, is apart from the hidden size."""

    def __init__(self, query_size: int, key_size: int, size: int):
        super().__init__()
        self.query = nn.Linear(query_size, size, bias=False)
        self.key = nn.Linear(key_size, size)  # W_k k, (B, S, size)
        self.score = nn.Linear(size, 1, bias=False)

    def scores(self, queries: Tensor, projected: Tensor) -> Tensor:
        return self.score(torch.tanh(self.query(queries)[:, :, None] + projected[:, None])).squeeze(-1)


class GeneralAttention(SourceAttention):
    """score(q, k) = q . W k (Luong et al. 2015, "general"), softmax over real source steps.

    Cheaper than the additive score: no (B, T, S, size) tanh to compute and differentiate."""

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
    `rand_like(x) >= p`: torch's CPU dropout draws its mask with `bernoulli_`, which took more than
    twice as long on a 2-core CPU. Other devices keep torch's fused kernel."""

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
        one without copying does."""
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
