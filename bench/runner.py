"""Runs: one Lightning fit + test per (task, cell, seed, ...) and one stored record for each."""

from __future__ import annotations

import os
import signal
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch

from bench.checkpoints import AtomicCheckpointIO, ModelCheckpoint, finish_checkpoints, resume_state
from bench.claims import claim_run
from bench.config import RunConfig, expand, stored_config
from bench.environment import device_name, environment, git_revision
from bench.measure import CURVE_KEY, MEMORY_KIND, Measure, RandomStates, curve_rows
from bench.memory import MemoryWatch, check_fits
from bench.memory import enabled as memory_guard
from bench.module import BenchModule
from bench.precision import lightning_precision
from bench.quiet import quiet_libraries
from bench.signals import die_with_parent
from bench.store import DONE, ResultsStore, configuration_id, content_hash, stored_statuses
from cells import CELLS

__all__ = ["RunConfig", "expand", "execute", "run_and_store", "run_matrix", "stored_config"]


def wandb_mode() -> str:
    """WANDB_MODE if the user set it, else online when an API key is configured, else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import netrc

        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _base_record(config: RunConfig) -> dict[str, Any]:
    task = config.task_settings
    record = {
        "run_id": config.run_id, "task": config.task, "task_version": task.version, "cell": config.cell,
        "seed": config.seed, "budget": config.budget, "num_layers": config.num_layers,
        "hidden_size": config.resolved_hidden_size, "bidirectional": int(config.bidirectional), "devices": config.devices,
        "precision": config.resolved_precision, "nodes": config.nodes,
        "metric_name": task.primary_metric, "higher_is_better": int(task.higher_is_better),
        "device": device_name(config.device), "environment": environment(config.device),
        "git_revision": git_revision(),
        "config": stored_config(config),
        "started_at": _now(),
    }
    record["configuration_id"] = configuration_id(record["config"], record["device"])
    return record


def ensure_baselines(config: RunConfig, out: Path, data_dir: Path | None = None, download: bool = True,
                     store_name: str = "results.sqlite") -> int:
    """Score the task's baselines on the run's test split, once per task configuration and budget;
    return how many were computed now (0 when the store already holds them)."""
    task = config.task_settings
    budget = config.budget_settings
    task_config = task.baseline_config()  # model-only options left out: one set of baselines serves them all
    task_configuration_id = content_hash([task_config, config.budget])
    store = ResultsStore(out, store_name)
    if store.has("task_configuration_id", task_configuration_id, "baselines"):
        return 0
    datamodule = task.datamodule(data_dir, budget.batch_size, budget, download=download,
                                 run_dir=out / "runs" / config.run_id)
    datamodule.prepare_data()
    datamodule.setup("fit")
    baselines = task.baselines(datamodule)
    for baseline in baselines:
        metrics, samples = task.score_baseline(baseline, datamodule, budget.test_batches)
        store.save({
            "baseline_id": content_hash([task_config, config.budget, baseline.name]),
            "task_configuration_id": task_configuration_id, "task": task.name, "task_version": task.version,
            "task_options": task_config["options"], "budget": config.budget, "name": baseline.name,
            "description": baseline.description, "metric_name": task.primary_metric,
            "metric_value": metrics[task.primary_metric], "higher_is_better": int(task.higher_is_better),
            "metrics": metrics, "test_samples": samples, "task_config": task_config,
            "git_revision": git_revision(), "computed_at": _now(),
        }, table="baselines")
    return len(baselines)


def under_srun(tasks: int) -> bool:
    """Whether SLURM started this process as one of the `tasks` processes (devices x nodes) of one run."""
    return os.environ.get("SLURM_NTASKS") == str(tasks) and "SLURM_PROCID" in os.environ


def execute(config: RunConfig, out: Path, data_dir: Path | None = None, use_wandb: bool = False,
            progress: bool = False, download: bool = True) -> dict[str, Any]:
    """Train and test one run; return its record (status ok). Raises on failure.

    Each epoch's end saves a full checkpoint (`run_dir/resume/last.ckpt`: weights, optimiser,
    schedule, loops, the measuring callback, random states); a run started again after its process
    was killed goes on from there, and its record counts the resumes."""
    task = config.task_settings
    budget = config.budget_settings
    record = _base_record(config)
    run_dir = out / "runs" / config.run_id
    resume_from, resume = resume_state(run_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = task.datamodule(data_dir, budget.batch_size, budget, download=download, run_dir=run_dir)
    datamodule.prepare_data()  # here, before the network: a task may size its network by the data
    network = config.network(datamodule)
    check_fits(network, budget.optimizer, config.device)
    module = BenchModule(network, task, budget, config=record["config"], precision=record["precision"])

    monitor = f"val/{task.primary_metric}"
    mode = "max" if task.higher_is_better else "min"
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode,
                                 save_top_k=1, save_weights_only=True, enable_version_counter=False)
    # the full state at each epoch's end, for resuming (after the epoch's validation and hooks)
    last = ModelCheckpoint(dirpath=run_dir / "resume", filename="last", monitor=None, save_top_k=1,
                           save_on_train_epoch_end=True, enable_version_counter=False)
    measure = Measure(monitor=monitor, mode=mode)
    watch = [MemoryWatch()] if memory_guard() and config.device == "cpu" else []
    logger = False
    if use_wandb:
        from lightning.pytorch.loggers import WandbLogger

        # one id for the run: under ddp_spawn, fit, test and this process each open it, and resume it
        logger = WandbLogger(
            id=resume["wandb_id"], resume="allow",
            project=os.environ.get("WANDB_PROJECT", "rnnbench"), group=config.task, job_type="train",
            name=f"{config.task}/{config.cell}/seed{config.seed}", tags=[config.cell, CELLS.get(config.cell).architecture, config.budget],
            save_dir=str(out), config=record["config"], mode=wandb_mode(),
        )
    trainer = L.Trainer(
        accelerator=config.device, devices=config.devices,
        precision=lightning_precision(record["precision"]),
        # several devices: under srun (SLURM started one process per device) Lightning's SLURM
        # environment joins them; elsewhere Lightning spawns the processes
        strategy=(("ddp" if under_srun(config.devices * config.nodes) else "ddp_spawn")
                  if config.devices * config.nodes > 1 else "auto"),
        num_nodes=config.nodes,
        max_epochs=budget.max_epochs,
        limit_train_batches=budget.train_batches, limit_val_batches=budget.val_batches,
        limit_test_batches=budget.test_batches,
        num_sanity_val_steps=0, log_every_n_steps=10,  # clipping: BenchModule.on_before_optimizer_step
        logger=logger, callbacks=[checkpoint, last, measure, RandomStates(), *watch], enable_progress_bar=progress,
        enable_model_summary=False, default_root_dir=run_dir, plugins=[AtomicCheckpointIO()],
    )
    initial_gradients = task.state_gradients(network, datamodule)  # None for a task that does not record them
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        if trainer.interrupted:
            raise KeyboardInterrupt
        measured = {k.removeprefix("measure/"): v.item() for k, v in trainer.callback_metrics.items()
                    if k.startswith("measure/")}
        curve = curve_rows(trainer.callback_metrics[CURVE_KEY])
        tested = trainer.test(module, datamodule=datamodule, ckpt_path="best", verbose=False)[0]
        if trainer.interrupted:
            raise KeyboardInterrupt
        # the network holds the tested (best) weights here, also after ddp_spawn
        artifacts = task.artifacts(network, datamodule, run_dir)
        trained_gradients = task.state_gradients(network, datamodule)
        for picture in artifacts.get("pictures", []):  # stored relative to OUT, where the report is written
            picture["path"] = Path(os.path.relpath(picture["path"], out)).as_posix()
        if use_wandb:
            logger.log_metrics({f"summary/{k}": v for k, v in measured.items()})
    finally:
        if use_wandb:
            import wandb

            wandb.finish()
    accelerator = config.device
    record.update(
        status="ok",
        metric_value=tested[f"test/{task.primary_metric}"],
        best_val_metric=measured.get("best_val"),
        test_samples=int(tested.get("test/samples", 0)),
        metrics={k.removeprefix("test/"): v for k, v in tested.items()},
        train_seconds=measured["fit_seconds"],
        step_ms_median=measured["step_ms_median"], step_ms_iqr=measured["step_ms_iqr"],
        samples_per_s=measured["samples_per_s"], tokens_per_s=measured.get("tokens_per_s"),
        artifacts=artifacts or None,
        peak_memory_bytes=int(measured["peak_bytes"]),
        memory_kind=MEMORY_KIND[accelerator],
        saved_bytes=int(measured["saved_bytes"]) if "saved_bytes" in measured else None,
        params_bytes=int(measured["params_bytes"]), optimizer_bytes=int(measured["optimizer_bytes"]),
        parameters=sum(p.numel() for p in network.parameters() if p.requires_grad),
        epochs=int(measured["epochs"]), steps=int(measured["steps"]), curve=curve, device_share=_device_share,
        resumed=resume["resumed"],
        state_gradients=None if initial_gradients is None else {
            "init": initial_gradients["norms"], "trained": trained_gradients["norms"],
            "samples": initial_gradients["samples"], "of": "the top layer's forward direction"},
        finished_at=_now(),
    )
    if "set_aside" in resume:
        record["config"]["resume_set_aside"] = resume["set_aside"]
    return record


def run_and_store(config: RunConfig, out: Path, data_dir: Path | None = None, use_wandb: bool = False,
                  progress: bool = False, download: bool = True, keep_checkpoints: str = "none",
                  store_name: str = "results.sqlite", store_row: bool = True) -> dict[str, Any]:
    """Execute one run and store its record, a failure included; return the record. Then the run's
    checkpoints go as `keep_checkpoints` says (a failed run, tried again, starts afresh); a killed
    run keeps its resume checkpoint. `store_name`: the store file under OUT (a shard under SLURM);
    `store_row` False: another process of the same run stores it (DDP ranks under srun).

    The run is claimed first (`bench.claims`): while another live process holds it, nothing is
    done and the record's status is `running elsewhere` (with the holder); a run that another
    process finished meanwhile gives `already done`. Neither is stored."""
    claim = None
    if store_row:
        claim, holder = claim_run(out / "runs" / config.run_id)
        if claim is None:
            return {"status": "running elsewhere", "holder": holder}
    try:
        if store_row and stored_statuses(out).get(config.run_id) in DONE:
            return {"status": "already done"}
        try:
            if store_row:
                ensure_baselines(config, out, data_dir, download, store_name)
            record = execute(config, out, data_dir, use_wandb, progress, download)
        except (KeyboardInterrupt, SystemExit):
            raise  # an interrupted run is not a result: nothing is stored for it
        except Exception as err:  # noqa: BLE001 - any failure of one run is recorded and the matrix goes on
            record = {**_base_record(config), "status": "failed", "error": f"{type(err).__name__}: {err}",
                      "finished_at": _now()}
            record["config"]["traceback"] = traceback.format_exc(limit=-8)
        if store_row:
            ResultsStore(out, store_name).save(record)
            finish_checkpoints(out / "runs" / config.run_id, keep_checkpoints)  # after the row: a kill here loses nothing
        return record
    finally:
        if claim is not None:
            claim.release()


def _run_and_store_packed(args: tuple) -> tuple[RunConfig, dict[str, Any]]:
    return args[0], run_and_store(*args)


# how many workers of `--parallel` share this process's device (1: the run has it alone); stored
# on each row as `device_share`, so that its timings say they were taken on a shared device
_device_share = 1


def device_slots(parallel: int, gpus: int) -> tuple[list[int], dict[int, int]]:
    """The GPU of each of `parallel` workers, round-robin, and how many workers each GPU holds."""
    slots = [worker % gpus for worker in range(parallel)]
    return slots, {gpu: slots.count(gpu) for gpu in sorted(set(slots))}


def _worker_init(slots, accelerator: str, threads: int, share: dict[int, int]) -> None:
    """A worker of `--parallel`: a GPU (perhaps shared with other workers) or an equal share of the
    CPU threads."""
    global _device_share
    quiet_libraries()
    # the parent handles Ctrl-C (it reaches the whole process group) and ends the pool; a worker dies
    # with its parent, also one killed outright
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    slot = slots.get()
    if accelerator == "cuda":
        torch.cuda.set_device(slot)
    _device_share = share[slot]
    torch.set_num_threads(threads)


def run_matrix(
    configs: list[RunConfig], out: Path, data_dir: Path | None = None, use_wandb: bool = False,
    progress: bool = False, download: bool = True, report: Callable[[str, RunConfig, dict | None], None] = lambda *a: None,
    parallel: int = 1, keep_checkpoints: str = "none",
) -> dict[str, int]:
    """Run every config not already done; store each result as it ends. Returns counts by outcome.

    `parallel` > 1 runs that many runs at once, one per device: one per GPU on CUDA, on the CPU
    each with an equal share of the threads. For runs too small to fill a device alone.
    """
    store = ResultsStore(out)
    counts = {"ok": 0, "failed": 0, "skipped": 0, "already done": 0, "running elsewhere": 0}
    pending = []
    for config in configs:
        if store.done(config.run_id):
            counts["already done"] += 1
            report("already done", config, None)
        else:
            pending.append(config)
    if parallel > 1 and len(pending) > 1:
        import multiprocessing

        accelerator = pending[0].device
        if accelerator == "cuda":
            places, share = device_slots(parallel, torch.cuda.device_count())
        else:  # every worker shares the one CPU
            places, share = list(range(parallel)), {slot: parallel for slot in range(parallel)}
        context = multiprocessing.get_context("spawn")
        slots = context.Queue()
        for slot in places:
            slots.put(slot)
        threads = max(1, torch.get_num_threads() // parallel)
        with context.Pool(parallel, initializer=_worker_init, initargs=(slots, accelerator, threads, share)) as pool:
            for config in pending:
                report("start", config, None)
            args = [(c, out, data_dir, use_wandb, False, download, keep_checkpoints) for c in pending]
            for config, record in pool.imap_unordered(_run_and_store_packed, args):
                counts[record["status"]] += 1
                report(record["status"], config, record)
        return counts
    for config in pending:
        report("start", config, None)
        record = run_and_store(config, out, data_dir, use_wandb, progress, download, keep_checkpoints)
        counts[record["status"]] += 1
        report(record["status"], config, record)
    return counts
