"""rnnbench: benchmark recurrent cells across a task matrix.

Examples:

    rnnbench list                                              # cells and tasks
    rnnbench run --task mnist-row --cell lstm_fused --cell gru_fused --data-dir ../shared/data
    rnnbench run --task mnist-row --cell rnn_fused --seed 0 --seed 1 --seed 2 --budget smoke
    rnnbench speed --cell gru_handwritten --cell gru_compiled  # cell-level speed and memory
    rnnbench report --out runs --target mnist-row=97
    rnnbench export --out runs --format csv                    # stored rows for pandas or a spreadsheet
    python -m bench list                                       # the same as rnnbench list
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from bench.console import (MatrixProgress, SpeedTables, console, counts_line, errors, fail, key_value, print_claims,
                           print_submitted, say, speed_progress)

from bench.choices import ACCELERATORS, BUDGETS, DEVICES, KEEP_CHECKPOINTS, LAUNCHERS, PRECISIONS, choices
from reports.export import FORMATS as EXPORT_FORMATS
from reports.rows import TABLES

EXAMPLES = """Examples:

  rnnbench list

  rnnbench run --task mnist-row --cell lstm_fused --cell gru_fused --data-dir ../shared/data

  rnnbench run --task mnist-pixel --cell gru_handwritten --seed 0 --seed 1 --budget smoke

  rnnbench run --task translation-de-en-attention --cell gru_fused --bidirectional -o beam=10

  rnnbench run --task adding -o length=200 --cell rnn_fused --cell lstm_fused --cell gru_fused

  rnnbench speed --cell lstm_fused --cell lstm_compiled --shape mnist-row

  rnnbench report --out runs --target mnist-row=97

  rnnbench export --out runs --format csv
"""

app = typer.Typer(
    name="rnnbench",
    help="Benchmark recurrent cells (RNN, LSTM, GRU; fused and hand-written) across a task matrix.",
    epilog=EXAMPLES.replace("\n\n", "\n\n\b\n"),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

DEFAULT_OUT = Path("runs")
DEFAULT_TASKS = ["mnist-row"]
DEFAULT_CELLS = ["rnn_fused", "lstm_fused", "gru_fused"]


BudgetName = choices("BudgetName", BUDGETS)
Accelerator = choices("Accelerator", ACCELERATORS)
Launcher = choices("Launcher", LAUNCHERS)
KeepCheckpoints = choices("KeepCheckpoints", KEEP_CHECKPOINTS)
Precision = choices("Precision", ("auto", *PRECISIONS))
Device = choices("Device", DEVICES)
ExportFormat = choices("ExportFormat", EXPORT_FORMATS)
StoreTable = choices("StoreTable", tuple(TABLES))


PRECISION_HELP = ("Numeric precision of every cell in the command: 32 (strict FP32, TF32 off), tf32, bf16-mixed, "
                  "16-mixed (the last three need CUDA); auto: 32 on CPU, tf32 on CUDA. Stored on every row.")


def write_store_report(store, out: Path, goals: dict[str, float] | None = None) -> Path:
    """OUT/report.md and its pictures from everything the store holds."""
    from reports.markdown import write_report

    return write_report(store.rows(), out, store.rows("speed"), store.rows("baselines"),
                        targets() if goals is None else goals, published())


def published() -> dict[str, list[dict]]:
    """Each task's published results (`Task.published`), for the report and W&B."""
    from tasks import TASKS

    return {task.name: [p.row() for p in task.published] for task in TASKS if task.published}


def open_store(out: Path, readonly: bool = False):
    """The results store in OUT, or a clear error (exit 2, nothing changed) when OUT or the store is
    unusable; `readonly`: a command that only reads (OUT must exist; nothing is written)."""
    from bench.store import ResultsStore, StoreError

    try:
        return ResultsStore(out, readonly=readonly)
    except StoreError as err:
        raise fail(str(err)) from None


def merge_if_sharded(out: Path):
    """Fold SLURM's shards into the store when there are any (the one write of a reading command);
    return the store, read-only when there was nothing to fold."""
    from bench.store import StoreError, merge_shards, shard_paths

    if not shard_paths(out):
        return open_store(out, readonly=True)
    open_store(out)
    try:
        merge_shards(out)
    except StoreError as err:
        raise fail(str(err)) from None
    return open_store(out, readonly=True)


@app.command("list")
def list_cells() -> None:
    """List the registered cells and tasks with a one-line description each."""
    from cells import CELLS
    from tasks import TASKS

    table = Table(title="cells")
    for column in ("name", "architecture", "twin"):
        table.add_column(column, no_wrap=True)
    table.add_column("description", overflow="fold")
    for spec in CELLS:
        table.add_row(spec.name, spec.architecture, spec.twin or "-", spec.description)
    console.print(table)
    table = Table(title="tasks")
    table.add_column("name", no_wrap=True)
    for column in ("primary metric", "options", "description"):
        table.add_column(column, overflow="fold")
    for task in TASKS:
        options = ", ".join(f"{name}={option.default} ({option.help})" for name, option in task.options.items())
        table.add_row(task.name, task.primary_metric + (" (higher is better)" if task.higher_is_better else ""),
                      options or "-", task.description)
    console.print(table)


app.command("cells", help="List the registered cells and tasks (same as `list`).")(list_cells)


@app.command(epilog=EXAMPLES.replace("\n\n", "\n\n\b\n"))
def run(
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", help="Task name; repeat for several. Default: mnist-row.")] = None,
    cell: Annotated[Optional[list[str]], typer.Option("--cell", "-c", help="Cell name; repeat for several. Default: rnn_fused, lstm_fused, gru_fused.")] = None,
    seed: Annotated[Optional[list[int]], typer.Option("--seed", "-s", help="Seed; repeat for several. Default: 0.")] = None,
    budget: Annotated[BudgetName, typer.Option(help="smoke: seconds (tests); quick: minutes on a laptop CPU; paper: the long protocol, for GPUs.")] = BudgetName["quick"],
    out: Annotated[Path, typer.Option(help="Folder of the results store (results.sqlite), checkpoints and report.")] = DEFAULT_OUT,
    data_dir: Annotated[Optional[Path], typer.Option(help="Data folder (holding mnist/); default $RNNBENCH_DATA or ~/.cache/rnnbench/data. Missing files are downloaded and verified.")] = None,
    task_option: Annotated[Optional[list[str]], typer.Option("--task-option", "-o", help="NAME=VALUE, a task option (see `rnnbench list`); repeat for several. E.g. beam=10 or corpus=pairs.tsv.")] = None,
    layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = 1,
    hidden: Annotated[Optional[int], typer.Option(help="Hidden size; default: the budget's for the task.")] = None,
    bidirectional: Annotated[bool, typer.Option("--bidirectional/--unidirectional", help="Bidirectional (BRNN) encoder.")] = False,
    dropout: Annotated[float, typer.Option(help="Dropout between stacked layers (needs --layers > 1).")] = 0.0,
    devices: Annotated[int, typer.Option(help="Devices for each run; > 1 trains the run with DDP (spawned processes).")] = 1,
    nodes: Annotated[int, typer.Option(help="Nodes for each run, --devices on each (with --launcher slurm): one multi-node DDP job.")] = 1,
    parallel: Annotated[int, typer.Option(help="Runs at once: round-robin on the GPUs (more than the GPUs puts several on each), or sharing the CPU's threads; for runs too small to fill a device. Each row says how many shared its device.")] = 1,
    accelerator: Annotated[Accelerator, typer.Option(help="auto: CUDA when available, else CPU.")] = Accelerator["auto"],
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)] = Precision["auto"],
    wandb: Annotated[bool, typer.Option("--wandb/--no-wandb", help="Log runs and the leaderboard to Weights & Biases (offline unless you are logged in).")] = False,
    download: Annotated[bool, typer.Option("--download/--no-download", help="Download missing data files.")] = True,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Lightning's progress bar; default: on a terminal.")] = None,
    launcher: Annotated[Launcher, typer.Option(help="local: run here (the default); slurm: submit the pending runs as one SLURM job array (submitit) and return, or wait with --wait.")] = Launcher["local"],
    partition: Annotated[Optional[str], typer.Option(help="SLURM: the partition (default: the cluster's).")] = None,
    time_min: Annotated[int, typer.Option(help="SLURM: time limit of each run, in minutes.")] = 60,
    gpus_per_run: Annotated[int, typer.Option(help="SLURM: GPUs per run (with --devices N: give N).")] = 0,
    cpus_per_run: Annotated[int, typer.Option(help="SLURM: CPUs per run (per device with --devices).")] = 2,
    array_parallelism: Annotated[int, typer.Option(help="SLURM: array tasks running at once.")] = 256,
    requeues: Annotated[int, typer.Option(help="SLURM: how often a run at its time limit is requeued to go on from its last epoch (pre-emption requeues without limit).")] = 3,
    slurm_option: Annotated[Optional[list[str]], typer.Option(help="SLURM: KEY=VALUE passed to sbatch as --KEY=VALUE (e.g. account=proj, qos=high); repeatable.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="SLURM: wait for the array to finish, then merge and report.")] = False,
    memory_guard: Annotated[bool, typer.Option("--memory-guard/--no-memory-guard", help="Refuse a run whose weights, gradients and optimiser state exceed the memory available, and stop one that drives the machine's available memory under 5 % (stored as failed, with the figures).")] = True,
    keep_checkpoints: Annotated[KeepCheckpoints, typer.Option(help="What a finished run keeps under OUT/runs/<run_id>/checkpoints: none, best (the tested weights) or last (the full state of the last epoch). Unfinished runs keep their resume checkpoint.")] = KeepCheckpoints["none"],
) -> None:
    """Train and test every combination of --task x --cell x --seed; store and report the results.

    Runs already in OUT/results.sqlite are skipped (failed ones are tried again). A run that
    fails is stored with its error and the others go on. A run whose process was killed goes on
    from its last epoch's checkpoint when the same command runs again. OUT/report.md is
    rewritten at the end.
    """
    from bench.runner import expand, run_matrix

    if not memory_guard:  # in the environment: --parallel workers and SLURM's array tasks read it too
        os.environ["RNNBENCH_NO_MEMORY_GUARD"] = "1"

    options: dict[str, str] = {}
    for text in task_option or []:
        name, value = key_value(text, "--task-option", "NAME=VALUE", "length=100")
        if options.setdefault(name, value) != value:
            raise fail(f"--task-option {name} given twice ({options[name]} and {value}): one run has one value; "
                       "run the command once per value")
    try:
        configs = expand(  # a value repeated (--seed 0 --seed 0) is one run
            list(dict.fromkeys(task or DEFAULT_TASKS)), list(dict.fromkeys(cell or DEFAULT_CELLS)),
            list(dict.fromkeys(seed or [0])), budget=budget.value, num_layers=layers,
            hidden_size=hidden, bidirectional=bidirectional, dropout=dropout, devices=devices, nodes=nodes,
            accelerator=accelerator.value, precision=precision.value, task_options=tuple(options.items()),
        )
    except ValueError as err:
        raise fail(str(err)) from None
    if parallel < 1:
        raise fail(f"--parallel must be a positive integer, got {parallel}")
    if nodes > 1 and launcher != Launcher["slurm"]:
        raise fail(f"--nodes {nodes}: runs span several nodes only through a scheduler; add --launcher slurm")
    if parallel > 1 and devices > 1:
        raise fail("--parallel spreads runs one per device; it cannot be combined with --devices > 1")
    if data_dir is not None and not data_dir.is_dir() and not download:
        raise fail(f"--data-dir {data_dir} is not a folder")
    open_store(out)  # OUT and its store are checked before anything runs
    from bench.store import merge_shards

    merge_shards(out)  # runs finished on a cluster count as done here
    if launcher == Launcher["slurm"]:
        slurm_matrix(configs, out, data_dir, wandb, download, keep_checkpoints.value, wait, partition=partition,
                     time_min=time_min, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run,
                     array_parallelism=array_parallelism, requeues=requeues, options=slurm_option or [])
        return
    report = MatrixProgress(configs, out)
    say(f"{len(configs)} runs -> {out / 'results.sqlite'}")
    from bench.signals import Interrupted, signals_interrupt

    try:
        with signals_interrupt():
            counts = run_matrix(configs, out, data_dir, use_wandb=wandb,
                                progress=sys.stdout.isatty() if progress is None else progress,
                                download=download, report=report, parallel=parallel,
                                keep_checkpoints=keep_checkpoints.value)
    except ValueError as err:  # a matrix that cannot start (e.g. more --parallel than GPUs)
        raise fail(str(err)) from None
    except Interrupted as signal:
        runs = "; ".join(report.in_flight.values()) or "none had started"
        errors.print(f"interrupted by {signal.name}: stopped {runs}. Nothing was stored for it; its last epoch's "
                     "checkpoint is kept: the same command resumes it.", highlight=False)
        raise typer.Exit(code=signal.exit_code) from None
    store = open_store(out)
    rows = store.rows()
    path = write_store_report(store, out)
    if wandb:
        from bench.wandb_tables import log_leaderboard

        log_leaderboard(rows, out, store.rows("baselines"), targets(), published())
    say(counts_line(counts) + f"; report: {path}")
    if counts["failed"]:
        raise typer.Exit(code=1)


def slurm_matrix(configs, out: Path, data_dir, use_wandb: bool, download: bool, keep_checkpoints: str, wait: bool,
                 options: list[str], **settings) -> None:
    """`run --launcher slurm`: submit the pending runs as one job array; with --wait, follow it to
    the end, merge the shards and write the report."""
    from bench.slurm import SlurmOptions, submit_matrix
    from bench.slurm import wait as wait_for
    from bench.store import StoreError, merge_shards

    extra = [key_value(text, "--slurm-option", "KEY=VALUE, passed to sbatch as --KEY=VALUE", "account=proj")
             for text in options]
    try:
        job, pending = submit_matrix(configs, out, data_dir, use_wandb, download, keep_checkpoints,
                                     SlurmOptions(extra=tuple(extra), **settings), say)
    except (ValueError, StoreError) as err:
        raise fail(str(err)) from None
    except Exception as err:  # noqa: BLE001 - sbatch's refusal (bad partition, limits) is the user's to read
        raise fail(f"SLURM refused the job array: {type(err).__name__}: {err}") from None
    if job is None:
        return
    say(f"submitted {len(pending)} runs as SLURM job array {job} (logs in {out / 'slurm'}); "
        f"`rnnbench status --out {out}` shows them")
    if not wait:
        return
    counts = wait_for(out, [c.run_id for c in pending], lambda counts: say("  " + counts_line(dict(sorted(counts.items())))))
    merge_shards(out)
    path = write_store_report(open_store(out), out)
    say(counts_line(dict(sorted(counts.items()))) + f"; report: {path}")
    if any(k != "ok" for k in counts):
        raise typer.Exit(code=1)


@app.command()
def status(
    out: Annotated[Path, typer.Option(help="Folder of the results store.")] = DEFAULT_OUT,
) -> None:
    """Show the runs that a process is training now (their claims under OUT/runs) and the runs
    submitted to SLURM from OUT: ok / failed from the store and its shards, PENDING / RUNNING from
    the queue, lost when neither knows them."""
    from bench.claims import live_claims
    from bench.slurm import run_states

    open_store(out, readonly=True)
    claims = live_claims(out)
    if claims:
        print_claims(out, claims)
    states = run_states(out)
    if not states:
        if not claims:
            say(f"no run is training now, and no SLURM submissions are recorded in "
                f"{out / 'slurm' / 'jobs.json'}")
        return
    store = merge_if_sharded(out)
    print_submitted(out, states, {r["run_id"]: r for r in store.rows()})


@app.command()
def merge(
    out: Annotated[Path, typer.Option(help="Folder holding results.sqlite and shards/.")] = DEFAULT_OUT,
) -> None:
    """Fold the shards that SLURM array tasks wrote (OUT/shards/*.sqlite) into OUT/results.sqlite
    (idempotent; a run stored twice keeps one row)."""
    from bench.store import StoreError, merge_shards, shard_paths

    open_store(out, readonly=True)
    if not shard_paths(out):
        say(f"no shards in {out / 'shards'}: nothing to merge")
        return
    open_store(out)
    try:
        counts = merge_shards(out)
    except StoreError as err:
        raise fail(str(err)) from None
    say(f"merged: {counts['runs']} runs, {counts['baselines']} baselines, {counts['speed']} speed rows "
        f"new or replaced")


@app.command()
def speed(
    cell: Annotated[Optional[list[str]], typer.Option("--cell", "-c", help="Cell name; repeat for several. Default: every registered cell.")] = None,
    shape: Annotated[Optional[list[str]], typer.Option("--shape", help="A named shape (mnist-row, mnist-pixel, mnist-scan-row, mnist-scan-diagonal, fastrnns, deepbench-...) or B,T,I,H[,L[,D]]; repeat for several.")] = None,
    shape_set: Annotated[Optional[str], typer.Option(help="A set of shapes: cpu (mnist-row), mnist, scans (PixelRNN's 2-D layers on MNIST images, one cell per gating), gpu (fastrnns and DeepBench-like). Default: cpu on CPU, gpu on CUDA.")] = None,
    device: Annotated[Device, typer.Option(help="cpu or cuda; cuda without a GPU records the cells as skipped.")] = Device["cpu"],
    out: Annotated[Path, typer.Option(help="Folder of the results store; rows go to its table `speed`.")] = DEFAULT_OUT,
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing.")] = 5,
    repeats: Annotated[int, typer.Option(help="Timed calls (rounds) per cell; median and interquartile range are reported.")] = 100,
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP + " The peak matmul is measured at the same precision.")] = Precision["auto"],
) -> None:
    """Time forward and forward+backward of each cell at each shape; store and report them.

    Each hand-written or compiled cell is set against its fused twin measured in the same
    command (ratio < 1: faster than the fused kernel).
    """
    from bench.precision import resolve_precision
    from bench.speed import SHAPE_SETS, parse_shape, run_speed
    from cells import CELLS

    try:
        names = cell or CELLS.names()
        for name in names:
            CELLS.get(name)
        if shape_set is not None and shape_set not in SHAPE_SETS:
            raise ValueError(f"--shape-set must be one of {', '.join(SHAPE_SETS)}, got {shape_set!r}")
        chosen = shape or SHAPE_SETS[shape_set or ("gpu" if device == Device["cuda"] else "cpu")]
        shapes = [parse_shape(s) for s in chosen]
        if warmup < 0 or repeats < 1:
            raise ValueError(f"--warmup must be >= 0 and --repeats >= 1, got {warmup} and {repeats}")
        chosen_precision = resolve_precision(precision.value, device.value)
    except ValueError as err:
        raise fail(str(err)) from None
    store = open_store(out)
    tables = SpeedTables()
    say(f"measuring {len(names)} cells x {len(shapes)} shapes on {device.value} at precision {chosen_precision} "
        f"({', '.join(s.describe() for s in shapes)})")
    starting, timing = speed_progress(CELLS, warmup, repeats)
    rows = run_speed(names, shapes, device.value, store, warmup, repeats, tables, starting=starting, timing=timing,
                     precision=chosen_precision)
    tables.print(rows)
    path = write_store_report(store, out)
    say(f"report: {path}")


def targets(texts: list[str] | None = None) -> dict[str, float]:
    """The report's time-to-target values: each task's default (`Task.target`), then `TASK=VALUE`s."""
    from tasks import TASKS

    out = {task.name: task.target for task in TASKS if task.target is not None}
    for text in texts or []:
        name, value = key_value(text, "--target", "TASK=VALUE", "mnist-row=97")
        if name not in TASKS:
            raise fail(f"--target {text!r}: unknown task {name!r}; tasks: {', '.join(TASKS.names())}")
        try:
            out[name] = float(value)
        except ValueError:
            raise fail(f"--target {text!r}: {value!r} is not a number (the validation value to reach, "
                       "in the report's units: percent for accuracy and IoU)") from None
    return out


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Folder holding results.sqlite; report.md is written there.")] = DEFAULT_OUT,
    target: Annotated[Optional[list[str]], typer.Option(
        help="TASK=VALUE: add a column of the training seconds until validation first reached VALUE "
             "(in the report's units: percent for accuracy and IoU). Repeatable; each task has a default "
             "(docs/usage.md, The report).")] = None,
) -> None:
    """Write OUT/report.md (and pictures per task) from the stored results."""

    goals = targets(target)
    open_store(out, readonly=True)
    if not (out / "results.sqlite").is_file():
        raise fail(f"no results store at {out / 'results.sqlite'}; run `rnnbench run --out {out}` first")
    store = merge_if_sharded(out)
    path = write_store_report(store, out, goals)
    say(f"report: {path}")


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="Folder holding results.sqlite.")] = DEFAULT_OUT,
    format: Annotated[ExportFormat, typer.Option("--format", help="File format.")] = ExportFormat["csv"],
    table: Annotated[StoreTable, typer.Option(help="Which stored table.")] = StoreTable["runs"],
    to: Annotated[Optional[Path], typer.Option(help="Folder to write into (default: OUT/export).")] = None,
    target: Annotated[Optional[list[str]], typer.Option(help="TASK=VALUE, as for `report`.")] = None,
) -> None:
    """Write the stored rows (and, for runs, one row per configuration with the report's figures)
    as CSV or JSON."""
    from reports.export import export as write_export

    goals = targets(target)
    open_store(out, readonly=True)
    if not (out / "results.sqlite").is_file():
        raise fail(f"no results store at {out / 'results.sqlite'}; run `rnnbench run --out {out}` first")
    dest = to if to is not None else out / "export"
    if dest.exists() and not dest.is_dir():
        raise fail(f"--to {dest}: exists and is not a folder")
    store = open_store(out, readonly=True)
    rows = {table.value: store.rows(table.value)}
    for path in write_export(rows, table.value, format.value, dest, goals):
        say(f"wrote {path}")


def main() -> None:
    from bench.quiet import quiet_libraries
    from bench.store import StoreError, disk_full_paths, no_space

    quiet_libraries()
    try:
        app()
    except StoreError as err:  # met past the commands' own checks (a row damaged by hand, a damaged jobs.json)
        errors.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
    except Exception as err:  # noqa: BLE001 - a full disk is the user's to fix, not a traceback to read
        if not no_space(err):
            raise
        paths = disk_full_paths(err)
        where = f" while writing {paths[0]}" + (f" (then {', '.join(paths[1:])})" if paths[1:] else "") if paths else ""
        errors.print(f"[bold red]error:[/] no space left on the device{where}"
                     + f" ({type(err).__name__}); free some space and run the same command again: finished runs "
                     "are stored, an interrupted one resumes from its last checkpoint", highlight=False)
        sys.exit(1)
