"""What the commands print: one console for results and one for errors (a line stays one line off
a terminal: a log file, CI, SLURM), the error exit, NAME=VALUE parsing, and the lines and tables
of a run matrix, a speed measurement and `status`. No torch: the command line imports it first."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import typer
from rich import box
from rich.console import Console
from rich.table import Table

# off a terminal a line stays one line: Rich would wrap it at 80 columns
console = Console(soft_wrap=not sys.stdout.isatty())
errors = Console(stderr=True, soft_wrap=not sys.stderr.isatty())


def say(text: str, **style: Any) -> None:
    console.print(text, highlight=False, **style)


def fail(message: str) -> typer.Exit:
    """Print `message` as an error; the exit (code 2) to raise."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def key_value(text: str, option: str, form: str, example: str) -> tuple[str, str]:
    """`text` split at its first '=' into a stripped (name, value); a clear error (exit 2) naming
    the option, the form it takes and an example, when it has no '=' or no name."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise fail(f"{option} must be {form} (e.g. {example}), got {text!r}")
    return name.strip(), value.strip()


def counts_line(counts: dict[str, int]) -> str:
    """`2 ok, 1 failed`: the counts that are not zero, in the dict's order."""
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v)


class MatrixProgress:
    """The lines of a run matrix as its runs start and end (`rnnbench run`'s `report` callback),
    and the runs started and not ended, for the message of an interrupted matrix."""

    def __init__(self, configs: list, out: Path):
        self.out, self.total = out, len(configs)
        self.position = {c.run_id: i + 1 for i, c in enumerate(configs)}
        self.in_flight: dict[str, str] = {}  # run id -> label

    def __call__(self, event: str, config, record: dict[str, Any]) -> None:
        where = f"[{self.position[config.run_id]}/{self.total}] {config.label}"
        if event == "start":
            self.in_flight[config.run_id] = config.label
            resume = self.out / "runs" / config.run_id / "resume" / "last.ckpt"
            say(f"{where} ..." + (" (resuming from its last checkpoint)" if resume.is_file() else ""))
            return
        self.in_flight.pop(config.run_id, None)
        if event == "already done":
            say(f"{where}: already done, skipped", style="dim")
        elif event == "running elsewhere":
            holder = record["holder"]
            say(f"{where}: running elsewhere (host {holder.get('host', '?')}, pid {holder.get('pid', '?')}), "
                "skipped; `rnnbench status` shows it", style="yellow")
        elif event == "ok":
            say(f"{where}: [green]ok[/] {record['metric_name']}={record['metric_value']:.4f} "
                f"({record['train_seconds']:.1f} s, {record['step_ms_median']:.1f} ms/step"
                + (f", resumed {record['resumed']}x" if record.get("resumed") else "")
                + (", started afresh: its resume checkpoint was unreadable"
                   if (record.get("config") or {}).get("resume_set_aside") else "") + ")")
        else:
            say(f"{where}: [red]{event}[/] {record['error']}")


class SpeedTables:
    """`rnnbench speed`'s tables, one per shape, filled as the rows come and printed at the end."""

    COLUMNS = ("fwd ms", "fwd+bwd ms", "vs fused", "floor ms", "tok/s", "GFLOP/s", "first call s", "MiB", "params")

    def __init__(self):
        self.tables: dict[str, Table] = {}

    def __call__(self, row: dict[str, Any]) -> None:
        if row["status"] != "ok":
            say(f"{row['cell']} {row['shape']}: {row['status']}: {row['error']}")
            return
        if row["shape"] not in self.tables:
            table = self.tables[row["shape"]] = Table(
                title=f"{row['shape']} on {row['device']}, precision {row['precision']}", box=box.SIMPLE_HEAD,
                padding=(0, 1), collapse_padding=True, pad_edge=False)
            table.add_column("cell", no_wrap=True)
            for column in self.COLUMNS:
                table.add_column(column, justify="right", min_width=max(len(word) for word in column.split()))
        def number(value, form: str) -> str:
            return "-" if value is None else format(value, form)

        self.tables[row["shape"]].add_row(
            row["cell"], f"{row['forward_ms']:.2f}", f"{row['forward_backward_ms']:.2f}",
            number(row["ratio_to_fused"], ".2f"), number(row["floor_forward_backward_ms"], ".2f"),
            f"{row['tokens_per_s'] / 1e3:.1f}k", number(row["flops_per_s"] and row["flops_per_s"] / 1e9, ".1f"),
            f"{row['first_call_s']:.2f}", f"{row['memory_bytes'] / 2**20:.2f}", f"{row['parameters']:,}")

    def print(self, rows: list[dict[str, Any]]) -> None:
        for table in self.tables.values():
            console.print(table)
        ok = [r for r in rows if r["status"] == "ok"]
        if ok:
            say(f"peak matmul on this device: {ok[0]['peak_flops_per_s'] / 1e9:.1f} GFLOP/s. floor ms: the matmuls "
                f"alone of a hand-written loop, forward+backward. MiB: {ok[0]['memory_kind'].removeprefix('cpu: ')}.")


def print_claims(out: Path, claims: list[tuple[str, dict[str, Any]]]) -> None:
    table = Table(title=f"runs training now from {out}", box=box.SIMPLE_HEAD)
    for column in ("run", "state", "host", "pid", "since"):
        table.add_column(column)
    for run_id, holder in claims:
        since = datetime.fromtimestamp(holder.get("since", holder["heartbeat"])).isoformat(" ", "seconds")
        table.add_row(run_id, "running", str(holder.get("host", "?")), str(holder.get("pid", "?")), since)
    console.print(table)


def print_submitted(out: Path, states: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> None:
    """The runs submitted to SLURM from OUT: their job, state and, when stored, metric."""
    table = Table(title=f"runs submitted from {out}", box=box.SIMPLE_HEAD)
    for column in ("run", "job", "state", "metric"):
        table.add_column(column)
    for s in states:
        row = rows.get(s["run_id"])
        label = f"{row['task']} {row['cell']} seed={row['seed']}" if row else s["run_id"]
        metric = f"{row['metric_name']}={row['metric_value']:.4f}" if row and row["metric_value"] is not None else "-"
        table.add_row(label, s["job_id"], s["state"], metric)
    console.print(table)
    counts: dict[str, int] = {}
    for s in states:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    say(counts_line(dict(sorted(counts.items()))))


def speed_progress(cells, warmup: int, repeats: int) -> tuple[Callable, Callable]:
    """`rnnbench speed`'s lines as a cell is set up and as a shape's cells are timed."""

    def starting(name, shape):
        compiled = " (the first call compiles: seconds to minutes)" if cells.get(name).compiled else ""
        say(f"  setting up {name} at {shape.name}{compiled} ...")

    def timing(names, shape):
        say(f"  timing {', '.join(names)} at {shape.name} in turn: {warmup} warm-up calls each, then "
            f"{repeats} rounds of forward and {repeats} of forward+backward ...")

    return starting, timing
