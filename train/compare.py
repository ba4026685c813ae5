"""Two-head model vs one single-head model per dataset: `python -m train.compare --config C`.

Trains the multi-head model of the config and, for each of its datasets, the same
architecture with that dataset's head only: same epochs, seed, augmentation and
optimiser settings. Each model is evaluated with COCO AP on each dataset's test split.
Writes `comparison.md` (table with differences and a noise verdict), `comparison.png`
(bar chart) and `comparison.json`. Finished runs are reused, so an interrupted
comparison continues where it stopped.
"""
import dataclasses
import json
import os
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.config import ExperimentConfig, load_config

# |difference| under this AP is called "within noise" when only one seed was run.
SINGLE_SEED_TOLERANCE = 0.02


def variant(cfg: ExperimentConfig, *, heads: Sequence[str], seed: int,
            out_dir: str, label: str) -> ExperimentConfig:
    """A copy of `cfg` restricted to some heads, with its own seed and run folder.

    Args:
        cfg: the base config.
        heads: names of the heads kept (with the datasets that train them).
        seed: training seed.
        out_dir: comparison folder; the run goes to `out_dir/<label>_s<seed>`.
        label: run label ("two_head" or a head name).

    Returns:
        The new config.
    """
    new = cfg.with_heads(heads)
    new.name = f"{label}_s{seed}"
    new.train = dataclasses.replace(new.train, seed=seed,
                                    run_dir=os.path.join(out_dir, "{name}"))
    return new


def forward_ms(model: Any, image_size: int, repeats: int = 10) -> float:
    """Median CPU latency of one forward pass at batch 1, in milliseconds."""
    images = np.zeros((1, image_size, image_size, 3), np.float32)
    model.predict_on_batch(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(images)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def train_or_reuse(cfg: ExperimentConfig, verbose: int) -> Dict[str, Any]:
    """Trains a variant, or reads its summary when it already finished."""
    from train.fit import run_training  # pylint: disable=import-outside-toplevel  # heavy
    from train.run_dir import load_run  # pylint: disable=import-outside-toplevel  # heavy
    from train.throughput import device_name  # pylint: disable=import-outside-toplevel  # heavy

    summary_file = os.path.join(cfg.run_path, "summary.json")
    if os.path.isfile(summary_file):
        with open(summary_file, encoding="utf-8") as stream:
            summary = json.load(stream)
        print(f"reusing finished run {cfg.run_path}")
    else:
        summary = run_training(cfg, verbose=verbose)
    if "params" not in summary:
        _, detector, _ = load_run(cfg.run_path, weights="final")
        summary["params"] = int(detector.count_params())
        summary["forward_ms"] = round(forward_ms(detector, cfg.data.image_size), 1)
        summary["forward_device"] = device_name()
        with open(summary_file, "w", encoding="utf-8") as stream:
            json.dump(summary, stream, indent=1)
    return summary


def _stats(values: List[float]) -> Dict[str, float]:
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def summarise(results: Dict[str, List[Dict[str, Any]]], heads: Sequence[str]) -> Dict[str, Any]:
    """Per dataset: single-head and two-head AP/AP50 (mean, std over seeds) and verdict."""
    table = {}
    for head in heads:
        row: Dict[str, Any] = {}
        for kind, runs in (("single", results[head]), ("two_head", results["two_head"])):
            for key in ("AP", "AP50"):
                row[f"{kind}_{key}"] = _stats([r["metrics"][head][key] for r in runs])
            row[f"{kind}_params"] = runs[0]["params"]
            row[f"{kind}_ms"] = float(np.median([r["forward_ms"] for r in runs]))
        row["device"] = results["two_head"][0].get("forward_device", "CPU")
        diff = row["two_head_AP"]["mean"] - row["single_AP"]["mean"]
        seeds = len(results[head])
        if seeds > 1:
            noise = 2 * max(row["two_head_AP"]["std"], row["single_AP"]["std"], 1e-3)
            rule = f"abs(diff) <= 2 std over {seeds} seeds ({noise:.3f})"
        else:
            noise = SINGLE_SEED_TOLERANCE
            rule = f"abs(diff) <= {noise} AP (one seed)"
        if abs(diff) <= noise:
            verdict = "matches (within noise)"
        else:
            verdict = "two-head better" if diff > 0 else "two-head WORSE"
        row.update(diff_AP=diff, within_noise=abs(diff) <= noise, matches=diff >= -noise,
                   verdict=verdict, rule=rule,
                   diff_AP50=row["two_head_AP50"]["mean"] - row["single_AP50"]["mean"])
        table[head] = row
    return table


def markdown(table: Dict[str, Any], cfg: ExperimentConfig, seeds: Sequence[int]) -> str:
    """The comparison as a markdown table with the verdict per dataset."""
    def fmt(stat):
        return f"{stat['mean']:.3f}" + (f" ± {stat['std']:.3f}" if len(seeds) > 1 else "")

    device = next(iter(table.values()))["device"] if table else "CPU"
    lines = [f"Test-split COCO metrics, {cfg.train.epochs} epochs at {cfg.data.image_size} px, "
             f"seeds {list(seeds)}, backbone weights: "
             f"{cfg.model.backbone_weights or 'random init'}.", "",
             "| dataset | single-head AP | two-head AP | diff AP | single-head AP50 | "
             "two-head AP50 | diff AP50 | params single / two-head | ms single / two-head "
             f"({device}, batch 1) | two-head vs single-head |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for head, row in table.items():
        lines.append(
            f"| {head} | {fmt(row['single_AP'])} | {fmt(row['two_head_AP'])} | "
            f"{row['diff_AP']:+.3f} | {fmt(row['single_AP50'])} | {fmt(row['two_head_AP50'])} | "
            f"{row['diff_AP50']:+.3f} | {row['single_params']:,} / {row['two_head_params']:,} | "
            f"{row['single_ms']:.0f} / {row['two_head_ms']:.0f} | "
            f"{row['verdict']} ({row['rule']}) |")
    return "\n".join(lines) + "\n"


def bar_chart(table: Dict[str, Any], png: str) -> None:
    """Grouped bars of AP and AP50, single-head vs two-head, per dataset."""
    # pylint: disable=import-outside-toplevel  # matplotlib only for the chart
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = list(table)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    xs = np.arange(len(heads))
    for ax, key in zip(axes, ("AP", "AP50")):
        for offset, kind, label in ((-0.2, "single", "single-head"),
                                    (0.2, "two_head", "two-head")):
            means = [table[h][f"{kind}_{key}"]["mean"] for h in heads]
            stds = [table[h][f"{kind}_{key}"]["std"] for h in heads]
            ax.bar(xs + offset, means, 0.4, yerr=stds, capsize=4, label=label)
        ax.set_xticks(xs, heads)
        ax.set_ylabel(f"test {key}")
        top = max(table[h][f"{k}_{key}"]["mean"] + table[h][f"{k}_{key}"]["std"]
                  for h in heads for k in ("single", "two_head"))
        ax.set_ylim(0, min(1.0, max(0.05, 1.25 * top)))
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    fig.suptitle("Two-head model vs single-head models (COCO, test splits)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def run_comparison(cfg: ExperimentConfig, *, seeds: Sequence[int], out_dir: str,
                   verbose: int = 2) -> Dict[str, Any]:
    """Trains and evaluates all variants for all seeds; writes table, chart and JSON.

    Args:
        cfg: the multi-dataset config.
        seeds: training seeds.
        out_dir: comparison folder.
        verbose: Keras verbosity for each training.

    Returns:
        The per-dataset comparison table.
    """
    heads = cfg.head_names
    results: Dict[str, List[Dict[str, Any]]] = {"two_head": []}
    for seed in seeds:
        results["two_head"].append(train_or_reuse(variant(
            cfg, heads=heads, seed=seed, out_dir=out_dir, label="two_head"),
            verbose))
        for head in heads:
            results.setdefault(head, []).append(train_or_reuse(variant(
                cfg, heads=[head], seed=seed, out_dir=out_dir, label=f"single_{head}"),
                verbose))
    table = summarise(results, heads)
    text = markdown(table, cfg, seeds)
    with open(os.path.join(out_dir, "comparison.md"), "w", encoding="utf-8") as stream:
        stream.write(text)
    with open(os.path.join(out_dir, "comparison.json"), "w", encoding="utf-8") as stream:
        json.dump({"table": table, "runs": results}, stream, indent=1, default=str)
    bar_chart(table, os.path.join(out_dir, "comparison.png"))
    print(text)
    return table


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m train.compare", description=__doc__)
    parser.add_argument("--config", required=True, help="multi-dataset YAML config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=None, help="folder (None: runs/compare_<name>)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    out_dir = args.out or os.path.join("runs", f"compare_{cfg.name}")
    os.makedirs(out_dir, exist_ok=True)
    run_comparison(cfg, seeds=args.seeds, out_dir=out_dir)
    print(f"comparison.md, comparison.png and comparison.json in {out_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
