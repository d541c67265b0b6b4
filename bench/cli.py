"""rnnbench: benchmark recurrent cells across a task matrix.

Examples:

    rnnbench list                 # the registered cells, one line each
    python -m bench cells         # the same
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="rnnbench",
    help="Benchmark recurrent cells (RNN, LSTM, GRU; fused and hand-written) across a task matrix.",
    epilog="Examples:  rnnbench list",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("list")
def list_cells() -> None:
    """List the registered cells with a one-line description each."""
    from cells import CELLS

    table = Table(title="cells")
    for column in ("name", "architecture", "twin", "description"):
        table.add_column(column, overflow="fold")
    for spec in CELLS:
        table.add_row(spec.name, spec.architecture, spec.twin or "-", spec.description)
    Console().print(table)


app.command("cells", help="List the registered cells (same as `list`).")(list_cells)


def main() -> None:
    app()
