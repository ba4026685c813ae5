"""The training recipe against the best peer: `python -m train.benchmark_recipe`.

Trains our model from random weights on the fixed budget of the recipe benchmark
(128 px, 10 epochs, batch 16, test splits) with the project defaults, and prints a table
next to the peer's figures, quoted as the reference (ultralytics YOLOv8s trained on the
same data and budget on this kind of 2-core machine; ultralytics is not needed here):

- `household`: one detection head on household;
- `fruits`: one detection head on fruits;
- `two_head`: one model with a fruits head and a household head, each batch mixed from
  both, the same number of training images as the peer's merged run (10 x 1,311).

`--set key=value` changes every run (a lever of the recipe, one at a time) and `--tag`
names the folder they go to, so each lever is one command and one table. Finished runs
are reused: an interrupted benchmark continues where it stopped. Writes `recipe.md` and
`recipe.json` in the folder. A benchmark, run and recorded by hand (docs/results.md),
not a test: one run takes about 5 (fruits) to 30 (two-head) minutes on 2 CPU cores.
"""
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.config import ExperimentConfig, config_from_dict
from train.benchmark_runs import add_arguments, mean_sd, parse_and_run, run_and_report

BUDGET = {"data": {"image_size": 128, "max_boxes": 100},
          "model": {"backbone": "cspdarknet53"},
          "train": {"epochs": 10, "batch_size": 16}}
DATASETS = ("fruits", "household")
RUNS = {"household": ("household",), "fruits": ("fruits",), "two_head": DATASETS}
METRICS = ("AP", "AP50", "AP75", "AR100")
# Quoted from issue #18: ultralytics 8.4.190, YOLOv8s from yolov8s.yaml (pretrained=False,
# its defaults), the same budget on the same kind of machine. One 3-class model per
# dataset alone, one 6-class model on the merged 1,311 training images.
PEER = {
    ("household", "household"): {"AP": 0.260, "AP50": 0.495, "AP75": 0.249, "AR100": 0.544},
    ("two_head", "fruits"): {"AP": 0.241, "AP50": 0.414},
    ("two_head", "household"): {"AP": 0.305, "AP50": 0.497},
}
PEER_NAME = "YOLOv8s (ultralytics 8.4.190)"


def budget_config(run: str, seed: int, data_root: str, out_dir: str,
                  overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config of one benchmark run.

    Args:
        run: a key of `RUNS`.
        seed: training seed.
        data_root: folder holding the `fruits` and `household` datasets.
        out_dir: the benchmark folder; the run goes to `out_dir/<run>_s<seed>`.
        overrides: `key=value` changes on top of the project defaults.

    Returns:
        The validated config.
    """
    values: Dict[str, Any] = json.loads(json.dumps(BUDGET))
    values["name"] = f"{run}_s{seed}"
    values["data"]["datasets"] = [{"name": name, "root": os.path.join(data_root, name)}
                                  for name in RUNS[run]]
    values["train"].update(seed=seed, run_dir=os.path.join(out_dir, "{name}"))
    return config_from_dict(values, overrides, source=f"benchmark run {run}")


def table(results: Dict[str, List[Dict[str, Any]]], overrides: Sequence[str]) -> str:
    """Markdown table: the peer's figures, then ours per run and head, with ratios.

    Args:
        results: run name -> the summaries of its seeds (`summary.json` of each run).
        overrides: the `--set` values every run used (shown in the caption).

    Returns:
        The table with a caption line.
    """
    changed = ", ".join(f"`{o}`" for o in overrides) or "none (project defaults)"
    lines = [f"Test splits, 128 px, 10 epochs, batch 16, random init; config changes: "
             f"{changed}. ± is the standard deviation over seeds.", "",
             "| model | run | head | seeds | " + " | ".join(METRICS)
             + f" | AP / {PEER_NAME} |", "|---" * (5 + len(METRICS)) + "|"]
    for (run, head), peer in PEER.items():
        lines.append(f"| {PEER_NAME} | {run} | {head} | 1 | "
                     + " | ".join(f"{peer[k]:.3f}" if k in peer else "" for k in METRICS)
                     + " | 1.00 |")
    for run, summaries in results.items():
        for head in RUNS[run]:
            values = {k: [s["metrics"][head][k] for s in summaries] for k in METRICS}
            peer = PEER.get((run, head)) or PEER.get(("two_head", head))
            ratio = f"{np.mean(values['AP']) / peer['AP']:.2f}" if peer else ""
            lines.append(f"| effdet_tf | {run} | {head} | {len(summaries)} | "
                         + " | ".join(mean_sd(values[k]) for k in METRICS) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def run_benchmark(runs: Sequence[str], seeds: Sequence[int], *, data_root: str,
                  out_dir: str, overrides: Sequence[str] = (), verbose: int = 2,
                  report_only: bool = False) -> Dict[str, List[Dict[str, Any]]]:
    """Trains (or reuses) every run for every seed, then writes and prints the table.

    Args:
        runs: keys of `RUNS`, in the order they are trained.
        seeds: training seeds (each run is trained once per seed).
        data_root: folder holding the `fruits` and `household` datasets.
        out_dir: benchmark folder.
        overrides: `key=value` config changes for every run.
        verbose: Keras verbosity of each training.
        report_only: train nothing; tabulate the runs that have finished.

    Returns:
        Run name -> the summaries of its seeds.
    """
    results = run_and_report(
        lambda run, seed: budget_config(run, seed, data_root, out_dir, overrides), runs, seeds,
        out_dir=out_dir, name="recipe", tabulate=table, overrides=overrides, verbose=verbose,
        report_only=report_only)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m train.benchmark_recipe", description=__doc__)
    add_arguments(parser, RUNS, default_runs=["household", "fruits", "two_head"],
                  default_seeds=[0, 1],
                  out=os.path.join("runs", "benchmark_recipe"),
                  data_help="folder holding the fruits and household COCO datasets")
    return parse_and_run(parser, argv, run_benchmark)


if __name__ == "__main__":
    run_cli(main)
