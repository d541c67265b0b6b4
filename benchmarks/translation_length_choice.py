"""Test scores of stored translation runs at every length exponent, and which one each rule picks.

    rnnbench run --task translation-de-en-attention --cell gru_fused --seed 0 --keep-checkpoints best
    python benchmarks/translation_length_choice.py --out runs --data-dir ../shared/data

Beam search ranks its finished hypotheses by log-probability / length ** a; a run's test uses the
a of LENGTH_EXPONENTS chosen on the validation split by `-o length_by`: the outputs' length nearest
the references' (`length`, version 11) or the highest BLEU (`bleu`, version 10); the highest chrF
is shown beside them. For every translation run in OUT/results.sqlite whose tested weights were
kept (`--keep-checkpoints best`), this rebuilds the network from the stored options, loads those
weights, runs one beam search over the validation split and one over the test split, and prints
BLEU, chrF and the length ratio at each a on both, the share of test outputs without an end
token, the a each rule would choose and the test scores it would get. The run's own stored test
BLEU is printed beside the one recomputed here at the run's exponent: they agree when the
rebuild is faithful.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from bench.runner import RunConfig
from bench.store import ResultsStore
from tasks import TASKS
from tasks.translation import LENGTH_EXPONENTS, TranslationTask, choose_length_exponent, scores_by_length_exponent


RULES = {"length": "length nearest 1", "bleu": "BLEU", "chrf": "chrF"}


def rebuild(row: dict, out: Path, data_dir: Path | None):
    options = {name: str(value) for name, value in row["config"]["task_config"]["options"].items()
               if value is not None}
    config = RunConfig(task=row["task"], cell=row["cell"], seed=row["seed"], budget=row["budget"],
                       num_layers=row["num_layers"], hidden_size=row["hidden_size"],
                       bidirectional=bool(row["bidirectional"]), dropout=row["config"]["dropout"], accelerator="cpu",
                       precision="32", task_options=tuple(options.items()))
    task = config.task_spec()
    budget = task.budget(config.budget)
    run_dir = out / "runs" / row["run_id"]
    datamodule = task.datamodule(data_dir, budget.batch_size, config.budget, download=False, run_dir=run_dir)
    datamodule.prepare_data()  # the run's own tokenizer, kept in its folder
    datamodule.setup("test")
    network = config.network(task, datamodule)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    network.load_state_dict({k.removeprefix("network."): v for k, v in state.items()})  # strict: same structure
    return task, datamodule, network.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs"), help="the runs' folder (results.sqlite)")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    rows = [row for row in ResultsStore(args.out).rows()
            if row["status"] == "ok" and isinstance(TASKS.get(row["task"]), TranslationTask)
            and (args.out / "runs" / row["run_id"] / "checkpoints" / "best.ckpt").is_file()]
    if not rows:
        raise SystemExit(f"no translation run in {args.out} kept its tested weights (run with --keep-checkpoints best)")
    # the rules of `-o length_by` (length, bleu) and the highest validation chrF, for comparison
    picks: dict[str, list[dict[str, float]]] = {"length": [], "bleu": [], "chrf": []}
    for row in rows:
        task, datamodule, network = rebuild(row, args.out, args.data_dir)
        beam = task.settings["beam"]
        with torch.no_grad():
            val = scores_by_length_exponent(network, datamodule.val_batches_to_tune(), beam, datamodule)
            test = scores_by_length_exponent(network, datamodule.test_dataloader(), beam, datamodule)
        stored = row["artifacts"]["length_exponent"]
        print(f"\n{row['task']} {row['cell']} seed {row['seed']} ({row['run_id']}): stored test BLEU "
              f"{row['metrics']['bleu']:.4f} at a = {stored}, recomputed {test['bleu'][stored]:.4f}")
        print("   a | val BLEU  chrF  length | test BLEU  chrF  length  no_eos %")
        for a in LENGTH_EXPONENTS:
            print(f" {a:.1f} | {val['bleu'][a]:8.2f} {val['chrf'][a]:5.2f} {val['length_ratio'][a]:7.3f} | "
                  f"{test['bleu'][a]:9.2f} {test['chrf'][a]:5.2f} {test['length_ratio'][a]:7.3f} "
                  f"{100 * test['no_eos'][a]:9.2f}")
        for by, picked in picks.items():
            a = choose_length_exponent(val, by)
            picked.append({"a": a, **{kind: test[kind][a] for kind in test}})
            print(f"  by validation {RULES[by]}: a = {a}: test BLEU {test['bleu'][a]:.2f}, chrF {test['chrf'][a]:.2f}, "
                  f"length {test['length_ratio'][a]:.3f}, no_eos {100 * test['no_eos'][a]:.2f} %")
    print("\nmean over the runs (test):")
    for by, picked in picks.items():
        print(f"  by validation {RULES[by]}: BLEU {statistics.mean(p['bleu'] for p in picked):.2f} "
              f"(min {min(p['bleu'] for p in picked):.2f}), chrF {statistics.mean(p['chrf'] for p in picked):.2f} "
              f"(min {min(p['chrf'] for p in picked):.2f}), length {min(p['length_ratio'] for p in picked):.3f}-"
              f"{max(p['length_ratio'] for p in picked):.3f}, no_eos up to {100 * max(p['no_eos'] for p in picked):.2f} %")


if __name__ == "__main__":
    main()
