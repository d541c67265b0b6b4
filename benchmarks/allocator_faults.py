"""Training steps of the quick translation model with glibc's malloc as it comes, and with freed memory kept.

    python benchmarks/allocator_faults.py --data-dir ../shared/data --cell lstm_fused --hidden 128

`bench.allocator.keep_freed_memory` (what `rnnbench run` does on CPU) cannot be undone in a
process, so each variant trains in a fresh process of its own: the task's data, network, AdamW
and clipping, over every `--every`-th training batch of an epoch; the two alternate, `--rounds`
times. Each prints the seconds of its steps, the CPU seconds spent in the kernel and the minor
page faults over them; the last line is the median ratio of seconds (kept / as it comes).
Timings on a shared machine drift, so only ratios measured in one command compare.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASK = "translation-de-en-attention"
VARIANTS = ("as it comes", "kept")


def child(args) -> dict:
    """One variant's steps in this process; the measurements as a dict."""
    from bench.allocator import keep_freed_memory

    kept = keep_freed_memory() if args.child == "kept" else False
    import torch
    from torch import nn

    from tasks import TASKS, ModelConfig
    from tasks.base import initialise_cells, optimizer_and_schedule

    task = TASKS.get(TASK).configured({})
    budget = task.budget("quick")
    with tempfile.TemporaryDirectory() as folder:
        data = task.datamodule(Path(args.data_dir) if args.data_dir else None, budget.batch_size, "quick",
                               run_dir=Path(folder))
        data.prepare_data()
        data.setup("fit")
        batches = list(data.train_dataloader())[:: args.every]
    torch.manual_seed(0)
    network = initialise_cells(task.network(ModelConfig(args.cell, args.hidden or budget.hidden_size), data, "quick"),
                               budget)
    optimizer, _ = optimizer_and_schedule(network.parameters(), budget, len(batches))
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for batch in batches:
        loss = task.training_loss(network, batch)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(network.parameters(), budget.grad_clip)
        optimizer.step()
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"kept": kept, "steps": len(batches), "seconds": seconds, "system": after.ru_stime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cell", default="lstm_fused")
    parser.add_argument("--hidden", type=int, default=None, help="hidden size (default: the quick budget's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, default=2, help="train on every N-th training batch (default 2)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("rounds", "every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.child:
        print(json.dumps(child(args)))
        return
    command = [sys.executable, __file__, "--cell", args.cell, "--every", str(args.every)]
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    command += ["--hidden", str(args.hidden)] if args.hidden else []
    print(f"{TASK}, {args.cell}, hidden {args.hidden or 'the budget'}'s; every {args.every}-th training batch",
          flush=True)
    ratios = []
    for round_ in range(1, args.rounds + 1):
        seconds = {}
        for variant in VARIANTS:
            done = subprocess.run(command + ["--child", variant], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"the {variant!r} process failed:\n{done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if variant == "kept" and not result["kept"]:
                raise SystemExit("keep_freed_memory did not take here (not glibc?): nothing to compare")
            seconds[variant] = result["seconds"]
            print(f"round {round_} {variant:11s}: {result['seconds']:6.1f} s for {result['steps']} steps, "
                  f"{result['system']:5.1f} s in the kernel, {result['faults']:9d} page faults", flush=True)
        ratios.append(seconds["kept"] / seconds["as it comes"])
    print(f"kept / as it comes: {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})",
          flush=True)


if __name__ == "__main__":
    main()
