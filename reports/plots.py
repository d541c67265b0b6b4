"""The report's pictures per task, drawn from leaderboard entries (matplotlib, no display)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from reports import figures
from reports.leaderboard import unit_label, unit_scale



def plot_metric_vs_time(task: str, entries: list[dict[str, Any]], path: Path) -> Path:
    """Test metric (mean, 95 % confidence interval as error bar) against mean training time, one point per
    configuration."""
    fig, ax = figures.pyplot().subplots(figsize=(6, 4), dpi=100)
    for e in entries:
        mean, half_width = e["metric"]
        ax.errorbar(e["train_s"], mean, yerr=half_width or 0, fmt="o", capsize=3, label=f"{e['cell']} {e['label']}")
    name = entries[0]["metric_name"]
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"test {unit_label(name)}")
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figures.save(fig, path)


def _curve_lines(e: dict[str, Any], scale: float) -> tuple[list[float], list[float], list[float], list[float], list[float]] | None:
    """Mean over seeds per epoch (the epochs every seed has): epochs, seconds, mean, low, high."""
    curves = [r.get("curve") for r in e["runs"] if r.get("curve")]
    if not curves:
        return None
    length = min(len(c) for c in curves)
    epochs = [curves[0][i]["epoch"] for i in range(length)]
    seconds = [statistics.fmean(c[i]["seconds"] for c in curves) for i in range(length)]
    values = [[c[i]["val"] * scale for c in curves] for i in range(length)]
    return epochs, seconds, [statistics.fmean(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def _two_panels(integer_x: tuple[bool, bool]):
    """Two panels side by side sharing their y axis; an x axis of epochs or time steps gets whole-number ticks."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = figures.pyplot().subplots(1, 2, figsize=(11, 4), dpi=100, sharey=True)
    for ax, integer in zip(axes, integer_x):
        if integer:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def _save_panels(fig, axes, title: str, path: Path) -> Path:
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    return figures.save(fig, path)


def plot_curves(task: str, entries: list[dict[str, Any]], path: Path) -> Path | None:
    """Validation metric against epoch and against training time, one line per configuration
    (mean over seeds; the band spans the seeds' lowest to highest)."""
    name = entries[0]["metric_name"]
    lines = [(e, _curve_lines(e, unit_scale(name))) for e in entries]
    lines = [(e, c) for e, c in lines if c]
    if not lines:
        return None
    fig, axes = _two_panels((True, False))
    for e, (epochs, seconds, mean, low, high) in lines:
        for ax, x in zip(axes, (epochs, seconds)):
            (line,) = ax.plot(x, mean, marker="o", markersize=3, label=f"{e['cell']} {e['label']} (n={e['n']})")
            if e["n"] > 1:
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("training time (s)")
    axes[0].set_ylabel(f"validation {unit_label(name)}")
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save_panels(fig, axes, f"{task}: learning curves", path)


def plot_state_gradients(task: str, entries: list[dict[str, Any]], path: Path) -> Path | None:
    """‖∂L/∂h_t‖ against the time step t, at initialisation and after training, log scale, one line
    per configuration (mean over seeds): how far back in time the loss's gradient reaches."""
    lines = [(e, [r["state_gradients"] for r in e["runs"] if r.get("state_gradients")]) for e in entries]
    lines = [(e, g) for e, g in lines if g]
    if not lines:
        return None
    fig, axes = _two_panels((True, True))
    for e, records in lines:
        for ax, when in zip(axes, ("init", "trained")):
            length = min(len(g[when]) for g in records)
            mean = [statistics.fmean(g[when][t] for g in records) for t in range(length)]
            # exactly zero (below even float64's range) cannot be drawn on a log scale: a gap
            ax.plot(range(1, length + 1), [v if v > 0 else float("nan") for v in mean],
                    label=f"{e['cell']} {e['label']} (n={e['n']})")
    for ax, title in zip(axes, ("at initialisation", "after training")):
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("‖∂L/∂h_t‖, mean over a fixed test batch")
    return _save_panels(fig, axes, f"{task}: gradient of the loss with respect to the hidden state at each step", path)
