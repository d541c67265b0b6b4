"""A run's checkpoints: the best weights (tested), the full state at each epoch's end (resumed
from), written atomically, checked before a resume, and kept or removed when the run ends."""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
from lightning.pytorch import callbacks
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bench.choices import KEEP_CHECKPOINTS, check
from bench.store import no_space


class ModelCheckpoint(callbacks.ModelCheckpoint):
    """Lightning's, with its `state_key` formatted once: Lightning reads every callback's key on
    every hook call (a profiler label, even with no profiler), and ModelCheckpoint's formats its
    settings each time, a share of the harness's host time per step. The class keeps Lightning's
    name, so the key, under which checkpoints hold the callback's state, is the same."""

    @functools.cached_property
    def state_key(self) -> str:
        return super().state_key


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file and renames it into place: a process killed while
    writing leaves the previous checkpoint whole (torch's own save writes the file in place)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        partial = Path(f"{path}.partial")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, path)
        except BaseException as err:
            partial.unlink(missing_ok=True)  # a full disk leaves no half checkpoint behind
            if no_space(err):
                raise OSError(errno.ENOSPC, "no space left on the device", str(path)) from err
            raise


def readable_checkpoint(path: Path) -> str | None:
    """None when `path` loads as a checkpoint, else why not (a truncated or damaged file, one that
    is not a checkpoint): found before training, not as torch's "internal miniz error" after the
    data and network were built."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to load is an unreadable checkpoint
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"
    if not isinstance(state, dict) or "state_dict" not in state or "loops" not in state:
        return "not a full Lightning checkpoint (no state_dict or loop state)"
    return None


def resume_state(run_dir: Path, warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
                 ) -> tuple[Path | None, dict[str, Any]]:
    """The checkpoint to resume from (None: start afresh) and the run's resume record
    (`resumed`: how many times it resumed; `wandb_id`: one W&B run across the resumes), updated
    and written for this start.

    A resume checkpoint that cannot be read is moved aside to `run_dir/last.ckpt.unreadable-<time>`
    (kept for a post-mortem, not removed when the run ends), `warn` names it and why, and the run
    starts afresh: its epochs are lost either way, and failing would leave the matrix stuck on it.
    The record keeps the path (`set_aside`). A damaged run.json is read as none (a fresh W&B id)."""
    folder = run_dir / "resume"
    last, saved = folder / "last.ckpt", folder / "run.json"
    try:
        previous = json.loads(saved.read_text()) if last.is_file() and saved.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        previous = {}
    previous = previous if isinstance(previous, dict) else {}
    why = readable_checkpoint(last) if last.is_file() else None
    set_aside = previous.get("set_aside") if isinstance(previous.get("set_aside"), str) else None
    if why is not None:
        aside = run_dir / f"last.ckpt.unreadable-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        os.replace(last, aside)
        warn(f"the resume checkpoint {last} cannot be read ({why}): set aside as {aside.name}; the run starts afresh")
        set_aside = str(aside)
    resumed = previous.get("resumed", -1)
    state = {"resumed": resumed + 1 if last.is_file() and isinstance(resumed, int) else 0,
             "wandb_id": previous["wandb_id"] if isinstance(previous.get("wandb_id"), str) else uuid.uuid4().hex[:12]}
    if set_aside is not None:  # kept across later resumes
        state["set_aside"] = set_aside
    folder.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(state))
    return (last if last.is_file() else None), state


def finish_checkpoints(run_dir: Path, keep: str) -> None:
    """After a run ended: `none` removes its checkpoints, `best` keeps checkpoints/best.ckpt (the
    tested weights), `last` keeps the last full checkpoint as checkpoints/last.ckpt; the resume
    folder goes in every case (a finished run is not resumed)."""
    check("keep_checkpoints", keep, KEEP_CHECKPOINTS)
    last = run_dir / "resume" / "last.ckpt"
    if keep == "last" and last.is_file():
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        os.replace(last, run_dir / "checkpoints" / "last.ckpt")
    if keep != "best":
        (run_dir / "checkpoints" / "best.ckpt").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "resume", ignore_errors=True)
