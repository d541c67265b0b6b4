"""Decoding a `Seq2Seq`: greedy, beam search, and the choice of the length exponent that ranks the
beam's finished hypotheses."""

from __future__ import annotations

import torch
import torchmetrics
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor

from tasks.translation.metrics import LengthRatio, SacreBLEUStat, update_output_metrics
from tasks.translation.model import Seq2Seq
from tasks.translation.tokens import BOS, EOS, PAD

# the test's length exponents tried on the validation split (`-o length=val`)
LENGTH_EXPONENTS = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5)


def max_output_length(batch) -> int:
    """The longest output decoding may give a batch: twice its longest source and 10 tokens."""
    return int(batch["src_len"].max()) * 2 + 10


@torch.no_grad()
def greedy(network: Seq2Seq, src: Tensor, src_len: Tensor, max_len: int) -> Tensor:
    """Each step's most probable token, until every output has ended or `max_len` tokens: (B, <= max_len)."""
    memory, source, state = network.encode(src, src_len)
    token = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    out = []
    for _ in range(max_len):
        logits, state = network.decode(token, state, memory, source)
        token = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        out.append(token)
        done |= token[:, 0] == EOS
        if done.all():
            break
    return torch.cat(out, dim=1)  # (B, <= max_len)


@torch.no_grad()
def beam_candidates(network: Seq2Seq, src: Tensor, src_len: Tensor, max_len: int,
                    beam: int) -> tuple[Tensor, Tensor, Tensor]:
    """Beam search's finished hypotheses, before ranking: tokens (B, K, T) with padding after
    the end token, their log-probabilities (B, K) and lengths (B, K). The search itself does
    not depend on how they are ranked (`rank`)."""
    batch = src.shape[0]
    memory, source, state = network.encode(src, src_len)
    memory, source = memory.repeat_interleave(beam, 0), source.repeat_interleave(beam)
    state = tuple(s.repeat_interleave(beam, 1) for s in state)  # (L, B*K, H)
    scores = torch.full((batch, beam), float("-inf"), device=src.device)
    scores[:, 0] = 0.0  # one live beam at the start
    tokens = torch.full((batch, beam, 1), BOS, dtype=torch.long, device=src.device)
    lengths = torch.zeros(batch, beam, device=src.device)
    ended = torch.zeros(batch, beam, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logits, state = network.decode(tokens[:, :, -1].reshape(-1, 1), state, memory, source)
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


def rank(candidates: tuple[Tensor, Tensor, Tensor], alpha: float) -> Tensor:
    """The best of each sentence's candidates by log-probability / length ** alpha: (B, T)."""
    tokens, scores, lengths = candidates
    best = (scores / lengths.clamp(min=1) ** alpha).argmax(-1)  # (B,)
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), best]


def beam_search(network: Seq2Seq, src: Tensor, src_len: Tensor, max_len: int, beam: int,
                alpha: float = 1.0) -> Tensor:
    """Beam search; finished hypotheses are ranked by log-probability / length ** alpha (1.0: per
    token; smaller favours shorter outputs, larger longer ones)."""
    return rank(beam_candidates(network, src, src_len, max_len, beam), alpha)


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
        candidates = beam_candidates(network, batch["src"], batch["src_len"], max_output_length(batch), beam)
        for alpha, by_kind in metrics.items():
            update_output_metrics(by_kind, rank(candidates, alpha).tolist(), batch, datamodule)
    return {kind: {alpha: float(metrics[alpha][kind].compute()) for alpha in LENGTH_EXPONENTS} for kind in kinds}


def choose_length_exponent(scores: dict[str, dict[float, float]], by: str) -> float:
    """The length exponent `-o length_by` picks from `scores_by_length_exponent`'s validation scores:
    `bleu`, the highest BLEU; `length`, the outputs' length ratio nearest 1; any other key of
    `scores` (`chrf`), its highest. Ties: the a nearest 1."""
    key = {a: -abs(ratio - 1.0) for a, ratio in scores["length_ratio"].items()} if by == "length" else scores[by]
    return max(LENGTH_EXPONENTS, key=lambda a: (key[a], -abs(a - 1.0)))

