"""The adding problem: its data are a function of the seed, its baseline is the variance of the sum."""

from __future__ import annotations

import pytest
import torch

from bench.config import RunConfig
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
    data = task.datamodule(None, 64, task.budget("quick"))
    data.setup("fit")
    (baseline,) = task.baselines(data)
    metrics, samples = task.score_baseline(baseline, data)
    assert samples == 10000
    assert metrics["mse"] == pytest.approx(2 / 12, abs=0.006)


def test_length_option_sets_the_sequence_and_rejects_nonsense():
    task = TASKS.get("adding").configured({"length": "30"})
    data = task.datamodule(None, 8, task.budget("smoke"))
    data.setup("fit")
    assert data.train_set.tensors[0].shape[1:] == (30, 2)
    with pytest.raises(ValueError, match="length"):
        RunConfig(task="adding", cell="lstm_fused", task_options=(("length", "1"),))
    with pytest.raises(ValueError, match="length"):
        RunConfig(task="adding", cell="lstm_fused", task_options=(("length", "ten"),))
    assert RunConfig(task="adding", cell="lstm_fused", task_options=(("length", "30"),)).run_id != \
        RunConfig(task="adding", cell="lstm_fused").run_id


def test_quick_lstm_starts_with_forget_gate_bias_one_and_other_cells_as_torch_makes_them():
    """Version 2: on quick the LSTM's forget gate starts open (bias 1 in bias_ih, 0 in bias_hh); the
    GRU and the tanh RNN, which have no forget gate, get exactly the weights torch gives them."""
    from tasks.base import ModelConfig, initialise_cells

    task = TASKS.get("adding")
    budget = task.budget("quick")
    assert task.version == 2 and budget.forget_bias == 1.0
    torch.manual_seed(0)
    lstm = initialise_cells(task.network(ModelConfig("lstm_fused", 64)), budget).encoder.weights()
    assert torch.all(lstm["bias_ih_l0"][64:128] == 1.0) and torch.all(lstm["bias_hh_l0"][64:128] == 0.0)
    assert not torch.all(lstm["bias_ih_l0"][:64] == 1.0)  # the other gates keep torch's draw
    for cell in ("gru_fused", "rnn_fused"):
        torch.manual_seed(0)
        plain = task.network(ModelConfig(cell, 64)).state_dict()
        torch.manual_seed(0)
        initialised = initialise_cells(task.network(ModelConfig(cell, 64)), budget).state_dict()
        assert all(torch.equal(plain[k], initialised[k]) for k in plain), cell
