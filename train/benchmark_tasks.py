"""Adding heads, measured: `python -m train.benchmark_tasks`.

Trains from random weights, on one budget (128 px, 10 epochs, batch 32, test splits),
each task alone or with its like and inside the four-head model, and prints a table per
head with the trivial baseline and the peer's figures (ultralytics YOLOv8s-cls on
clothing, same budget, quoted from issue #15; ultralytics is not needed here):

- `clothing`: one classification head (`category`) on clothing;
- `ccp_tags`: one multilabel head (`tags`) on ccp_tags;
- `two_head`: `category` + `tags` on one backbone (configs/clothing_tags.yaml);
- `detection`: the fruits and household detection heads on one backbone
  (configs/fruits_household.yaml), at this budget;
- `all_tasks`: fruits and household detection + `category` + `tags`
  (configs/all_tasks.yaml).

An epoch shows every training image of a run's datasets once (batches mixed in
proportion to the datasets' sizes), so every head sees its own images equally often in
every run: 10 passes over its data. `--set` changes every run, `--tag` names the folder;
finished runs are reused. Writes `tasks.md`, `tasks.json` and `tasks.png` in the folder.
A benchmark, run and recorded by hand (docs/results.md), not a test.
"""
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.config import ExperimentConfig, config_from_dict
from train.benchmark_runs import (add_arguments, mean_sd, parse_and_run, run_and_report,
                                  seed_stats)

BUDGET = {"data": {"image_size": 128, "max_boxes": 100},
          "model": {"backbone": "cspdarknet53"},
          "augment": {"jitter": 0.0},  # flip and HSV; see docs/design.md "Scale jitter"
          "train": {"epochs": 10, "batch_size": 32}}
HEADS = {
    "fruits": {"name": "fruits", "kind": "detection"},
    "household": {"name": "household", "kind": "detection"},
    "category": {"name": "category", "kind": "classification",
                 "options": {"label_smoothing": 0.1, "class_weights": "balanced"}},
    "tags": {"name": "tags", "kind": "multilabel"},
}
DATASETS = {
    "fruits": {"name": "fruits", "heads": ["fruits"]},
    "household": {"name": "household", "heads": ["household"]},
    "clothing": {"name": "clothing", "format": "image_folder", "heads": ["category"]},
    "ccp_tags": {"name": "ccp_tags", "format": "table", "table": "data.parquet",
                 "id_column": "uuid", "heads": ["tags"]},
}
RUNS = {"clothing": ("clothing",), "ccp_tags": ("ccp_tags",),
        "two_head": ("clothing", "ccp_tags"), "detection": ("fruits", "household"),
        "all_tasks": ("fruits", "household", "clothing", "ccp_tags")}
METRICS = {"category": ("accuracy", "top2_accuracy", "balanced_accuracy", "macro_f1"),
           "tags": ("micro_f1", "macro_f1", "mAP"),
           # The detection heads of `all_tasks` (COCO metrics; no trivial baseline).
           "fruits": ("AP", "AP50", "AP75", "AR100"),
           "household": ("AP", "AP50", "AP75", "AR100")}
# Quoted from issue #15: ultralytics 8.4.190 YOLOv8s-cls from yolov8s-cls.yaml
# (pretrained=False, its defaults), clothing, 128 px, 10 epochs, batch 32, test split.
PEER = {"category": {"accuracy": 0.680, "top2_accuracy": 0.844, "balanced_accuracy": 0.605,
                     "macro_f1": 0.593}}
PEER_NAME = "YOLOv8s-cls (ultralytics 8.4.190)"


def budget_config(run: str, seed: int, data_root: str, out_dir: str,
                  overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config of one benchmark run (`out_dir/<run>_s<seed>`).

    Args:
        run: a key of `RUNS`.
        seed: training seed.
        data_root: folder holding the datasets.
        out_dir: the benchmark folder.
        overrides: `key=value` changes on top of the project defaults.

    Returns:
        The validated config.
    """
    values: Dict[str, Any] = json.loads(json.dumps(BUDGET))
    values["name"] = f"{run}_s{seed}"
    datasets = [dict(DATASETS[name], root=os.path.join(data_root, name)) for name in RUNS[run]]
    values["data"]["datasets"] = datasets
    values["heads"] = [HEADS[d["heads"][0]] for d in datasets]
    values["train"].update(seed=seed, run_dir=os.path.join(out_dir, "{name}"))
    return config_from_dict(values, overrides, source=f"benchmark run {run}")


def _rows(results: Dict[str, List[Dict[str, Any]]], head: str) -> List[str]:
    keys = METRICS[head]
    lines = ["| model | run | seeds | " + " | ".join(keys) + " |", "|---" * (3 + len(keys)) + "|"]
    if head in PEER:
        lines.append(f"| {PEER_NAME} | {head} alone | 1 | "
                     + " | ".join(f"{PEER[head][k]:.3f}" for k in keys) + " |")
    baseline = None
    for run, summaries in results.items():
        found = [s["metrics"][head] for s in summaries if head in s.get("metrics", {})]
        if not found:
            continue
        baseline = found[0].get("baseline")
        lines.append(f"| effdet_tf | {run} | {len(found)} | "
                     + " | ".join(mean_sd([m[k] for m in found]) for k in keys) + " |")
    if baseline:
        lines.append("| trivial baseline | (training prior) | | "
                     + " | ".join(f"{baseline[k]:.3f}" for k in keys) + " |")
    return lines


def table(results: Dict[str, List[Dict[str, Any]]], overrides: Sequence[str]) -> str:
    """Markdown tables, one per head that any run has: the peer, every run, the baseline.

    Args:
        results: run name -> the summaries of its seeds (`summary.json` of each run).
        overrides: the `--set` values every run used (shown in the caption).

    Returns:
        The tables with a caption line.
    """
    changed = ", ".join(f"`{o}`" for o in overrides) or "none (project defaults)"
    lines = [f"Test splits, 128 px, 10 epochs (every image of a run's datasets once an "
             f"epoch), batch 32, random init; config changes: {changed}. ± is the standard "
             "deviation over seeds.", ""]
    for head in _heads(results):
        lines += [f"**{head}**", ""] + _rows(results, head) + [""]
    return "\n".join(lines)


def _heads(results: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """The heads of `METRICS` that some finished run has (the image-level ones if none)."""
    found = [head for head in METRICS
             if any(head in s.get("metrics", {}) for summaries in results.values()
                    for s in summaries)]
    return found or ["category", "tags"]


def plot(results: Dict[str, List[Dict[str, Any]]], path: str) -> str:
    """Bar chart: each head's metrics per run (mean over seeds, ± one standard deviation
    as an error bar), the peer and the baseline as lines."""
    # pylint: disable=import-outside-toplevel  # matplotlib only when plotting
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = _heads(results)
    colours = {run: f"C{i}" for i, run in enumerate(results)}  # one colour a run, every panel
    rows = (len(heads) + 1) // 2
    fig, axes = plt.subplots(rows, min(2, len(heads)), figsize=(14, 4.8 * rows), squeeze=False)
    for axis in axes.flat[len(heads):]:
        axis.set_axis_off()
    for axis, head in zip(axes.flat, heads):
        keys = METRICS[head]
        runs = [r for r, s in results.items() if any(head in x.get("metrics", {}) for x in s)]
        axis.set_title(f"head '{head}' on its test split")
        if not runs:
            axis.text(0.5, 0.5, "no finished run yet", ha="center", va="center",
                      transform=axis.transAxes)
            axis.set_axis_off()
            continue
        width = 0.8 / max(1, len(runs))
        baseline = None
        for i, run in enumerate(runs):
            found = [s["metrics"][head] for s in results[run] if head in s.get("metrics", {})]
            baseline = found[0].get("baseline")
            means, spreads = zip(*(seed_stats([m[k] for m in found]) for k in keys))
            # One seed has no spread: no error bar, and the legend says how many seeds.
            spread = None if len(found) == 1 else list(spreads)
            bars = axis.bar(np.arange(len(keys)) + (i - (len(runs) - 1) / 2) * width, means,
                            width, yerr=spread, capsize=3, error_kw={"linewidth": 1},
                            color=colours[run],
                            label=f"{run} ({len(found)} seed{'s' if len(found) > 1 else ''})")
            # Above the peer and baseline lines, on opaque white, so a line at the bar's
            # height does not strike the figure through.
            axis.bar_label(bars, fmt="%.3f", fontsize=7, zorder=5, bbox={
                "facecolor": "white", "edgecolor": "none", "pad": 0.5})
        for j, key in enumerate(keys):
            span = (j - 0.45, j + 0.45)
            if head in PEER:
                axis.plot(span, [PEER[head][key]] * 2, "k-", linewidth=2,
                          label=PEER_NAME if j == 0 else None)
            if baseline:
                axis.plot(span, [baseline[key]] * 2, "k:", linewidth=1.5,
                          label="trivial baseline" if j == 0 else None)
        axis.set_xticks(np.arange(len(keys)), keys)
        axis.set_ylim(0, 1)
        # Under the axes: bars near 1.0 would otherwise hide behind the legend.
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4)
        axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_benchmark(runs: Sequence[str], seeds: Sequence[int], *, data_root: str,
                  out_dir: str, overrides: Sequence[str] = (), verbose: int = 2,
                  report_only: bool = False) -> Dict[str, List[Dict[str, Any]]]:
    """Trains (or reuses) every run for every seed, then writes the table and chart.

    Args:
        runs: keys of `RUNS`, in the order they are trained.
        seeds: training seeds.
        data_root: folder holding the datasets.
        out_dir: benchmark folder.
        overrides: `key=value` config changes for every run.
        verbose: Keras verbosity of each training.
        report_only: train nothing; tabulate the runs that have finished.

    Returns:
        Run name -> the summaries of its seeds.
    """
    results = run_and_report(
        lambda run, seed: budget_config(run, seed, data_root, out_dir, overrides), runs, seeds,
        out_dir=out_dir, name="tasks", tabulate=table, overrides=overrides, verbose=verbose,
        report_only=report_only)
    plot(results, os.path.join(out_dir, "tasks.png"))
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m train.benchmark_tasks", description=__doc__)
    add_arguments(parser, RUNS, default_runs=list(RUNS), default_seeds=[0],
                  out=os.path.join("runs", "benchmark_tasks"),
                  data_help="folder holding clothing, ccp_tags, fruits and household")
    return parse_and_run(parser, argv, run_benchmark)


if __name__ == "__main__":
    run_cli(main)
