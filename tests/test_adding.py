"""The adding problem: its data are a function of the seed, its baseline is the variance of the sum."""

from __future__ import annotations

import pytest
import torch

from bench.runner import RunConfig
from tasks import TASKS
from tasks.adding import SPLIT_SEEDS, adding_sequences


def test_sequences_are_reproducible_by_seed_and_marked_once_in_each_half():
    x, target = adding_sequences(500, 50, seed=7)
    again, target_again = adding_sequences(500, 50, seed=7)
    assert torch.equal(x, again) and torch.equal(target, target_again)
    other, _ = adding_sequences(500, 50, seed=8)
    assert not torch.equal(x, other)
    assert x.shape == (500, 50, 2) and target.shape == (500,)
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert torch.equal(markers[:, :25].sum(1), torch.ones(500)) and torch.equal(markers[:, 25:].sum(1), torch.ones(500))
    torch.testing.assert_close(target, (values * markers).sum(1))


def test_splits_are_disjoint_by_seed():
    assert len(set(SPLIT_SEEDS.values())) == 3
    train, _ = adding_sequences(200, 20, SPLIT_SEEDS["train"])
    test, _ = adding_sequences(200, 20, SPLIT_SEEDS["test"])
    assert not any(torch.equal(a, b) for a in train for b in test)


def test_predicting_one_scores_the_variance_of_a_sum_of_two_uniforms():
    task = TASKS.get("adding").configured({"length": "200"})
    data = task.datamodule(None, 64, "quick")
    data.setup("fit")
    (baseline,) = task.baselines(data)
    metrics, samples = task.score_baseline(baseline, data)
    assert samples == 10000
    assert metrics["mse"] == pytest.approx(2 / 12, abs=0.006)


def test_length_option_sets_the_sequence_and_rejects_nonsense():
    task = TASKS.get("adding").configured({"length": "30"})
    data = task.datamodule(None, 8, "smoke")
    data.setup("fit")
    assert data.train_set.tensors[0].shape[1:] == (30, 2)
    with pytest.raises(ValueError, match="length"):
        RunConfig(task="adding", cell="lstm_fused", task_options=(("length", "1"),))
    with pytest.raises(ValueError, match="length"):
        RunConfig(task="adding", cell="lstm_fused", task_options=(("length", "ten"),))
    assert RunConfig(task="adding", cell="lstm_fused", task_options=(("length", "30"),)).run_id != \
        RunConfig(task="adding", cell="lstm_fused").run_id
