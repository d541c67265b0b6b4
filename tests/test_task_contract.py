"""Every registered task honours the same contract, on real data with the smoke budget."""

from __future__ import annotations

import math

import pytest
import torch

from bench.config import RunConfig
from bench.runner import execute
from bench.choices import BUDGETS
from tasks import TASKS, ModelConfig


@pytest.fixture(scope="module")
def tsv_corpus(shared_data, tmp_path_factory):
    from tasks.translation.corpus import find_ding, parse_ding

    path = tmp_path_factory.mktemp("corpus") / "pairs.tsv"
    pairs = parse_ding(find_ding(shared_data)).pairs[:500]
    path.write_text("".join(f"{de}\t{en}\n" for de, en in pairs), encoding="utf-8")
    return path


def options_for(name: str, tsv_corpus) -> tuple[tuple[str, str], ...]:
    return (("corpus", str(tsv_corpus)),) if "corpus" in TASKS.get(name).options else ()


@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract(name, shared_data, tsv_corpus, tmp_path):
    task = TASKS.get(name).configured(dict(options_for(name, tsv_corpus)))
    assert task.name == name and task.version >= 1 and task.description
    assert set(task.budgets) == set(BUDGETS)
    assert task.primary_metric in task.metrics(), "the primary metric must be one of the task's metrics"

    torch.manual_seed(0)
    budget = task.budget("smoke")
    data = task.datamodule(shared_data, budget.batch_size, task.budget("smoke"), download=False, run_dir=tmp_path)
    data.prepare_data()
    data.setup("fit")
    model = ModelConfig("gru_handwritten", 8, bidirectional=True)
    try:
        task.check_model(model)
    except ValueError:  # a task whose network has no direction to choose (the two-dimensional scans)
        model = ModelConfig("gru_handwritten", 8)
        task.check_model(model)
    network = task.network(model, data, task.budget("smoke"))

    batch = next(iter(data.train_dataloader()))
    assert task.samples_in(batch) == budget.batch_size
    loss = task.training_loss(network, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in network.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing}"

    metrics = task.metrics()
    network.eval()
    with torch.no_grad():
        val_loss = task.evaluate(network, next(iter(data.val_dataloader())), metrics, "val", data)
    assert torch.isfinite(val_loss)
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert all(math.isfinite(v) for v in values.values()), values

    # the cells whose gates read no h (minGRU, minLSTM) fit the task's network too, or are refused by name
    # (the scan and the C++ kernel: the two forms that share no code with the loop)
    for cell in ("mingru_scan", "minlstm_scan", "mingru_kernel", "minlstm_kernel"):
        other = ModelConfig(cell, 8, bidirectional=model.bidirectional)
        try:
            task.check_model(other)
        except ValueError as err:
            assert name.startswith(("mnist-scan", "mnist-density")) and f"cell {cell!r}" in str(err)
            continue
        torch.manual_seed(0)
        network = task.network(other, data, task.budget("smoke"))
        loss = task.training_loss(network, batch)
        assert torch.isfinite(loss), cell
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in network.parameters() if p.requires_grad), cell


def _accepts(task, option: str, text: str) -> bool:
    try:
        task.options[option].parse(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name", TASKS.names())
def test_every_budget_sets_only_options_the_task_has_and_a_run_shows_them(name):
    """A budget's task options (quick pixel scans: side=14) are the task's own, with values its
    options accept; a run under that budget carries them in its options, identity and label, and
    `--task-option` overrides them. A budget's hidden sizes by architecture name known ones."""
    from cells import CELLS

    task = TASKS.get(name)
    architectures = {CELLS.get(c).architecture for c in CELLS.names()}
    for budget_name, budget in task.budgets.items():
        for option, value in budget.task_options:
            assert option in task.options, f"{name} {budget_name}: no option {option!r}"
            task.configured({option: str(value)})  # a value the option accepts
            config = RunConfig(task=name, cell="gru_fused", budget=budget_name)
            assert config.options[option] == str(value) and f" {option}={value} " in config.label
            assert config.task_settings.settings[option] == task.options[option].parse(str(value))
            other = next(v for v in ("28", "7", "4", "row", "diagonal") if v != str(value) and _accepts(task, option, v))
            assert RunConfig(task=name, cell="gru_fused", budget=budget_name,
                             task_options=((option, other),)).options[option] == other, "the user's value wins"
        for architecture, hidden in budget.hidden_by_architecture:
            assert architecture in architectures and hidden >= 1, (budget_name, architecture, hidden)
            cell = next(c for c in CELLS.names() if CELLS.get(c).architecture == architecture)
            assert RunConfig(task=name, cell=cell, budget=budget_name).resolved_hidden_size == hidden


@pytest.mark.parametrize("name", TASKS.names())
def test_task_runs_end_to_end(name, shared_data, tsv_corpus, tmp_path):
    config = RunConfig(task=name, cell="lstm_fused", budget="smoke", hidden_size=8,
                       task_options=options_for(name, tsv_corpus))
    record = execute(config, tmp_path, shared_data, download=False)
    assert record["status"] == "ok" and record["task"] == name
    assert record["metric_name"] == TASKS.get(name).primary_metric and math.isfinite(record["metric_value"])
    smoke = TASKS.get(name).budget("smoke")
    assert record["test_samples"] > 0 and record["steps"] == smoke.max_epochs * smoke.train_batches


@pytest.mark.parametrize("name", TASKS.names())
def test_task_baselines_are_scored_on_the_test_split_once(name, shared_data, tsv_corpus, tmp_path):
    from bench.runner import ensure_baselines
    from bench.store import ResultsStore

    config = RunConfig(task=name, cell="lstm_fused", budget="smoke", task_options=options_for(name, tsv_corpus))
    assert ensure_baselines(config, tmp_path, shared_data, download=False) >= 1
    rows = ResultsStore(tmp_path).rows("baselines")
    task = config.task_settings
    budget = task.budget("smoke")
    data = task.datamodule(shared_data, budget.batch_size, task.budget("smoke"), download=False, run_dir=tmp_path / "data")
    data.prepare_data()
    data.setup("test")
    covered = sum(task.samples_in(b) for _, b in zip(range(budget.test_batches), data.test_dataloader()))
    for row in rows:
        assert row["task"] == name and row["budget"] == "smoke" and row["metric_name"] == task.primary_metric
        assert math.isfinite(row["metric_value"]) and row["metrics"][task.primary_metric] == row["metric_value"]
        assert all(math.isfinite(v) for v in row["metrics"].values()), row["metrics"]
        assert row["test_samples"] == covered, "a baseline covers exactly the test samples a run's test covers"
        assert row["description"]
        # the options that change the data; model-only ones share the baselines
        assert row["task_options"] == {k: v for k, v in task.settings.items() if not task.options[k].model_only}
    assert len({r["name"] for r in rows}) == len(rows)
    # once per task configuration: a second run of the same configuration computes nothing
    assert ensure_baselines(config, tmp_path, shared_data, download=False) == 0
    assert len(ResultsStore(tmp_path).rows("baselines")) == len(rows)


def test_majority_class_baseline_is_the_share_of_that_digit_in_the_test_set(shared_data):
    from tasks.mnist_data import load_mnist

    task = TASKS.get("mnist-row")
    data = task.datamodule(shared_data, 500, task.budget("quick"), download=False)
    data.prepare_data()
    data.setup("fit")
    (baseline,) = task.baselines(data)
    metrics, samples = task.score_baseline(baseline, data)
    mnist = load_mnist(shared_data, download=False)
    train_labels = mnist["train_labels"].long()[torch.as_tensor(data.train_set.indices)]
    majority = int(torch.bincount(train_labels).argmax())
    share = float((mnist["test_labels"].long() == majority).float().mean())
    assert samples == 10000 and metrics["accuracy"] == pytest.approx(share, abs=1e-6)
    assert majority == 1 and share == pytest.approx(0.1135)
