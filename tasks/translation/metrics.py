"""SacreBLEU's corpus metrics (BLEU, chrF, the length ratio) as torchmetrics, and their update from
a batch's decoded outputs."""

from __future__ import annotations

import numpy as np
import torch
import torchmetrics
from torch import Tensor

from tasks.translation.tokens import EOS


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


def update_output_metrics(metrics, outputs: list[list[int]], batch: dict, datamodule) -> None:
    """BLEU, chrF and length ratio of a batch's outputs (token ids) against its references, and
    the share of outputs that never emit the end token (`no_eos`)."""
    hypotheses = [datamodule.decode(ids) for ids in outputs]
    for name in ("bleu", "chrf", "length_ratio"):
        metrics[name].update(hypotheses, batch["target_text"])
    metrics["no_eos"].update(torch.tensor([float(EOS not in ids) for ids in outputs]))
