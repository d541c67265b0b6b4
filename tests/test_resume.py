"""Long runs that resume: a run whose process is killed goes on from its last epoch's checkpoint
when the same command runs again, and ends as if it had not stopped; finished runs keep only the
checkpoints asked for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.store import ResultsStore
from cells import CELLS, register_cell
from cells.lstm import LSTMFused

# long sequences through a Python-loop cell: an epoch lasts about half a second, so the kill, sent as
# soon as the first epoch's checkpoint exists, lands well inside a later epoch
COMMAND = ["run", "--task", "adding", "-o", "length=400", "--cell", "lstm_handwritten", "--budget", "smoke",
           "--no-progress"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_as_if_uninterrupted(tmp_path):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    process = subprocess.Popen([sys.executable, "-m", "bench", *COMMAND, "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(killed.glob("runs/*/resume/last.ckpt")):
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert ResultsStore(killed).rows() == [], "a killed run stores no row"

    again = invoke(*COMMAND, "--out", str(killed))
    assert again.exit_code == 0, again.output
    assert "resuming from its last checkpoint" in again.output and "resumed 1x" in again.output
    result = invoke(*COMMAND, "--out", str(straight))
    assert result.exit_code == 0, result.output

    (resumed,), (uninterrupted,) = ResultsStore(killed).rows(), ResultsStore(straight).rows()
    assert resumed["resumed"] == 1 and uninterrupted["resumed"] == 0
    assert resumed["epochs"] == uninterrupted["epochs"] == 3 and resumed["steps"] == uninterrupted["steps"] == 12
    assert [c["epoch"] for c in resumed["curve"]] == [1, 2, 3]
    # the same batches, weights and optimiser state after the resume: the same numbers
    assert resumed["metric_value"] == pytest.approx(uninterrupted["metric_value"], rel=1e-6)
    assert [c["val"] for c in resumed["curve"]] == pytest.approx([c["val"] for c in uninterrupted["curve"]], rel=1e-6)
    assert not list(killed.glob("runs/*/resume")), "a finished run drops its resume checkpoint"


@pytest.mark.parametrize("keep, kept", [("none", set()), ("best", {"best.ckpt"}), ("last", {"last.ckpt"})])
def test_a_finished_run_keeps_the_checkpoints_asked_for(keep, kept, tmp_path):
    result = invoke("run", "--task", "adding", "-o", "length=5", "--cell", "gru_fused", "--budget", "smoke",
                    "--keep-checkpoints", keep, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert {p.name for p in (run_dir / "checkpoints").glob("*")} == kept
    assert not (run_dir / "resume").exists()


class NaNFromSecondEpoch(LSTMFused):
    """Finite through the first epoch (4 training batches, one validation batch), NaN after."""

    calls = 0

    def _run(self, x, state, lengths):
        output, state = super()._run(x, state, lengths)
        if self.training:
            NaNFromSecondEpoch.calls += 1
        if NaNFromSecondEpoch.calls > 4:
            return output * float("nan"), tuple(s * float("nan") for s in state)
        return output, state


def test_a_failed_run_drops_its_resume_checkpoint_and_starts_afresh_when_tried_again(tmp_path):
    register_cell("nan_from_second_epoch_for_tests", NaNFromSecondEpoch, "test-only")
    try:
        for _attempt in range(2):
            NaNFromSecondEpoch.calls = 0
            result = invoke("run", "--task", "adding", "-o", "length=5", "--cell", "nan_from_second_epoch_for_tests",
                            "--budget", "smoke", "--out", str(tmp_path))
            assert result.exit_code == 1, result.output
            assert "resuming" not in result.output, "a failed run is not resumed"
            (row,) = ResultsStore(tmp_path).rows()
            assert row["status"] == "failed" and "steps 5-8" in row["error"], row["error"]
            assert not list(tmp_path.glob("runs/*/resume")), "the first epoch's checkpoint went with the failure"
    finally:
        CELLS.remove("nan_from_second_epoch_for_tests")


def _rank_draws(rank: int, world: int, init: str, out: str) -> None:
    """One DDP process: draws as many numbers as its rank + 1 (processes draw unlike amounts), saves
    the states (gathered from all), scrambles its generators, reads the states back and draws."""
    import json
    import random

    import numpy as np
    import torch

    from bench.measure import RandomStates

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    torch.rand(rank + 1), [random.random() for _ in range(rank + 1)], np.random.rand(rank + 1)
    callback = RandomStates()
    saved = callback.state_dict()

    def draws():
        return [torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist()]

    expected = draws()
    torch.manual_seed(1234), random.seed(1234), np.random.seed(1234)
    callback.load_state_dict(saved)
    after_load = draws()
    try:  # a checkpoint of fewer processes than this run has
        callback.load_state_dict({"ranks": saved["ranks"][:1]})
        fewer = "loaded"
    except ValueError as err:
        fewer = str(err)
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"expected": expected, "after_load": after_load, "fewer": fewer, "processes_saved": len(saved["ranks"]),
                   "states_differ": not torch.equal(saved["ranks"][0]["torch"], saved["ranks"][1]["torch"])}, f)
    torch.distributed.destroy_process_group()


def test_under_ddp_each_process_gets_back_its_own_random_states(tmp_path):
    import json

    import torch.multiprocessing as mp

    mp.spawn(_rank_draws, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "draws")), nprocs=2)
    for rank in range(2):
        result = json.loads((tmp_path / f"draws.{rank}").read_text())
        assert result["processes_saved"] == 2 and result["states_differ"]
        assert result["after_load"] == result["expected"], f"process {rank} did not get its own states back"
    assert json.loads((tmp_path / "draws.0").read_text())["fewer"] == "loaded"
    assert json.loads((tmp_path / "draws.1").read_text())["fewer"] == (
        "the checkpoint holds the random states of 1 processes, not of process 1: a run resumes with as many devices "
        "as it started with")


def test_a_checkpoint_of_one_process_resumes_that_process():
    import random

    from bench.measure import RandomStates

    random.seed(5)
    saved = RandomStates().state_dict()
    expected = random.random()
    random.seed(6)
    RandomStates().load_state_dict(saved["ranks"][0])  # an earlier rnnbench's checkpoint: the states alone
    assert random.random() == expected


def test_the_runner_checkpoints_keep_lightnings_state_keys(tmp_path):
    """The runner's ModelCheckpoint formats its key once; the key (under which a checkpoint holds the
    callback's state, so what older checkpoints resume by) is Lightning's own."""
    from lightning.pytorch.callbacks import ModelCheckpoint as Lightnings

    from bench.checkpoints import ModelCheckpoint

    for settings in ({"monitor": "val/accuracy", "mode": "max", "save_weights_only": True},
                     {"monitor": None, "save_on_train_epoch_end": True}):
        ours = ModelCheckpoint(dirpath=tmp_path, **settings)
        assert ours.state_key == Lightnings(dirpath=tmp_path, **settings).state_key
        assert ours.state_key is ours.state_key  # formatted once


def test_an_unreadable_resume_checkpoint_is_set_aside_named_and_the_run_starts_afresh(tmp_path):
    command = ["run", "--task", "adding", "-o", "length=5", "--cell", "gru_fused", "--budget", "smoke"]
    first = invoke(*command, "--keep-checkpoints", "last", "--out", str(tmp_path / "first"))
    assert first.exit_code == 0, first.output
    (done,) = ResultsStore(tmp_path / "first").rows()
    whole = (tmp_path / "first" / "runs" / done["run_id"] / "checkpoints" / "last.ckpt").read_bytes()

    resume = tmp_path / "second" / "runs" / done["run_id"] / "resume"
    resume.mkdir(parents=True)
    (resume / "last.ckpt").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    (resume / "run.json").write_text('{"resumed": 2, "wandb_id"')  # and its record damaged too
    again = invoke(*command, "--out", str(tmp_path / "second"))
    assert again.exit_code == 0, again.output
    assert f"the resume checkpoint {resume / 'last.ckpt'} cannot be read" in again.output
    assert "set aside as last.ckpt.unreadable-" in again.output and "the run starts afresh" in again.output
    assert "started afresh: its resume checkpoint was unreadable" in again.output
    (row,) = ResultsStore(tmp_path / "second").rows()
    assert row["status"] == "ok" and row["resumed"] == 0 and row["epochs"] == done["epochs"]
    assert row["metric_value"] == pytest.approx(done["metric_value"], rel=1e-6), "a fresh start, as the first run"
    (kept,) = (resume.parent).glob("last.ckpt.unreadable-*")
    assert kept.read_bytes() == whole[: len(whole) // 2] and row["config"]["resume_set_aside"] == str(kept)


def test_a_file_that_is_not_a_full_checkpoint_is_unreadable(tmp_path):
    from bench.checkpoints import readable_checkpoint

    torch.save({"weights": torch.zeros(2)}, tmp_path / "weights.ckpt")
    assert "not a full Lightning checkpoint" in readable_checkpoint(tmp_path / "weights.ckpt")
    (tmp_path / "text.ckpt").write_text("hello")
    assert readable_checkpoint(tmp_path / "text.ckpt").startswith("UnpicklingError")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert readable_checkpoint(tmp_path / "empty.ckpt") is not None
