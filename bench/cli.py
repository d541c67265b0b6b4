"""rnnbench: benchmark recurrent cells across a task matrix.

Examples:

    rnnbench list                                              # cells and tasks
    rnnbench run --task mnist-row --cell lstm_fused --cell gru_fused --data-dir ../shared/data
    rnnbench run --task mnist-row --cell rnn_fused --seed 0 --seed 1 --seed 2 --budget smoke
    rnnbench report --out runs
    python -m bench list                                       # the same as rnnbench list
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

EXAMPLES = """Examples:

  rnnbench list

  rnnbench run --task mnist-row --cell lstm_fused --cell gru_fused --data-dir ../shared/data

  rnnbench run --task mnist-pixel --cell gru_handwritten --seed 0 --seed 1 --budget smoke

  rnnbench report --out runs
"""

app = typer.Typer(
    name="rnnbench",
    help="Benchmark recurrent cells (RNN, LSTM, GRU; fused and hand-written) across a task matrix.",
    epilog=EXAMPLES.replace("\n\n", "\n\n\b\n"),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
console = Console()
errors = Console(stderr=True)

DEFAULT_OUT = Path("runs")
DEFAULT_TASKS = ["mnist-row"]
DEFAULT_CELLS = ["rnn_fused", "lstm_fused", "gru_fused"]


class BudgetName(str, Enum):
    smoke = "smoke"
    quick = "quick"
    paper = "paper"


class Accelerator(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def fail(message: str) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


@app.command("list")
def list_cells() -> None:
    """List the registered cells and tasks with a one-line description each."""
    from cells import CELLS
    from tasks import TASKS

    table = Table(title="cells")
    for column in ("name", "architecture", "twin", "description"):
        table.add_column(column, overflow="fold")
    for spec in CELLS:
        table.add_row(spec.name, spec.architecture, spec.twin or "-", spec.description)
    console.print(table)
    table = Table(title="tasks")
    for column in ("name", "primary metric", "options", "description"):
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
    budget: Annotated[BudgetName, typer.Option(help="smoke: seconds (tests); quick: minutes on a laptop CPU; paper: the long protocol, for GPUs.")] = BudgetName.quick,
    out: Annotated[Path, typer.Option(help="Folder of the results store (results.sqlite), checkpoints and report.")] = DEFAULT_OUT,
    data_dir: Annotated[Optional[Path], typer.Option(help="Data folder (holding mnist/); default $RNNBENCH_DATA or ~/.cache/rnnbench/data. Missing files are downloaded and verified.")] = None,
    task_option: Annotated[Optional[list[str]], typer.Option("--task-option", "-o", help="NAME=VALUE, a task option (see `rnnbench list`); repeat for several. E.g. beam=5 or corpus=pairs.tsv.")] = None,
    layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = 1,
    hidden: Annotated[Optional[int], typer.Option(help="Hidden size; default: the budget's for the task.")] = None,
    bidirectional: Annotated[bool, typer.Option("--bidirectional/--unidirectional", help="Bidirectional (BRNN) encoder.")] = False,
    dropout: Annotated[float, typer.Option(help="Dropout between stacked layers (needs --layers > 1).")] = 0.0,
    devices: Annotated[int, typer.Option(help="Devices for each run; > 1 trains the run with DDP (spawned processes).")] = 1,
    accelerator: Annotated[Accelerator, typer.Option(help="auto: CUDA when available, else CPU.")] = Accelerator.auto,
    wandb: Annotated[bool, typer.Option("--wandb/--no-wandb", help="Log runs and the leaderboard to Weights & Biases (offline unless you are logged in).")] = False,
    download: Annotated[bool, typer.Option("--download/--no-download", help="Download missing data files.")] = True,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Lightning's progress bar; default: on a terminal.")] = None,
) -> None:
    """Train and test every combination of --task x --cell x --seed; store and report the results.

    Runs already in OUT/results.sqlite are skipped (failed ones are tried again). A run that
    fails is stored with its error and the others go on. OUT/report.md is rewritten at the end.
    """
    from bench.runner import expand, run_matrix
    from bench.store import ResultsStore
    from reports.markdown import write_report

    options = []
    for text in task_option or []:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise fail(f"--task-option must be NAME=VALUE, got {text!r}")
        options.append((name.strip(), value.strip()))
    try:
        configs = expand(
            task or DEFAULT_TASKS, cell or DEFAULT_CELLS, seed or [0], budget=budget.value, num_layers=layers,
            hidden_size=hidden, bidirectional=bidirectional, dropout=dropout, devices=devices,
            accelerator=accelerator.value, task_options=tuple(options),
        )
    except ValueError as err:
        raise fail(str(err)) from None
    if data_dir is not None and not data_dir.is_dir() and not download:
        raise fail(f"--data-dir {data_dir} is not a folder")
    total = len(configs)
    position = {c.run_id: i + 1 for i, c in enumerate(configs)}

    def report(event, config, record):
        where = f"[{position[config.run_id]}/{total}] {config.label}"
        if event == "start":
            console.print(f"{where} ...", highlight=False)
        elif event == "already done":
            console.print(f"{where}: already done, skipped", style="dim", highlight=False)
        elif event == "ok":
            console.print(
                f"{where}: [green]ok[/] {record['metric_name']}={record['metric_value']:.4f} "
                f"({record['train_seconds']:.1f} s, {record['step_ms_median']:.1f} ms/step)", highlight=False)
        else:
            console.print(f"{where}: [red]{event}[/] {record['error']}", highlight=False)

    console.print(f"{total} runs -> {out / 'results.sqlite'}", highlight=False)
    counts = run_matrix(configs, out, data_dir, use_wandb=wandb,
                        progress=sys.stdout.isatty() if progress is None else progress,
                        download=download, report=report)
    rows = ResultsStore(out).rows()
    path = write_report(rows, out)
    if wandb:
        from bench.wandb_tables import log_leaderboard

        log_leaderboard(rows, out)
    console.print(", ".join(f"{v} {k}" for k, v in counts.items() if v) + f"; report: {path}", highlight=False)
    if counts["failed"]:
        raise typer.Exit(code=1)


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Folder holding results.sqlite; report.md is written there.")] = DEFAULT_OUT,
) -> None:
    """Write OUT/report.md (and a plot per task) from the stored results."""
    from bench.store import ResultsStore
    from reports.markdown import write_report

    if not (out / "results.sqlite").is_file():
        raise fail(f"no results store at {out / 'results.sqlite'}; run `rnnbench run --out {out}` first")
    path = write_report(ResultsStore(out).rows(), out)
    console.print(f"report: {path}", highlight=False)


def quiet_libraries() -> None:
    """Keep the console to rnnbench's own lines: Lightning's info banners and tips are noise here."""
    import logging
    import warnings

    import lightning  # noqa: F401 - it sets its loggers' levels on import, so import before overriding

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")


def main() -> None:
    quiet_libraries()
    app()
