"""What the benchmark commands (`train.benchmark_recipe`, `train.benchmark_tasks`) share:
the command line, training (or reusing) every run of every seed, and the table cells."""
import argparse
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from effdet_tf.config import ExperimentConfig


def seed_stats(values: List[float]) -> Tuple[float, Optional[float]]:
    """The mean over seeds and the sample standard deviation (None for one seed)."""
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def mean_sd(values: List[float]) -> str:
    """A table cell: the value of one seed, or the mean ± standard deviation of several."""
    if not values:
        return ""
    mean, spread = seed_stats(values)
    return f"{mean:.3f}" if spread is None else f"{mean:.3f} ± {spread:.3f}"


def add_arguments(parser: argparse.ArgumentParser, runs: Sequence[str], *,
                  default_runs: Sequence[str], default_seeds: Sequence[int], out: str,
                  data_help: str) -> None:
    """Adds the benchmark options: --data-root, --runs, --seeds, --set, --tag, --out, --report.

    Args:
        parser: the command's parser.
        runs: the run names it knows.
        default_runs: runs trained by default.
        default_seeds: seeds trained by default.
        out: the default benchmark folder.
        data_help: what --data-root must hold.
    """
    parser.add_argument("--data-root", default=os.path.join("..", "shared", "datasets"),
                        help=data_help)
    parser.add_argument("--runs", nargs="+", choices=sorted(runs), default=list(default_runs))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(default_seeds))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config change for every run, e.g. train.ema_decay=0.999")
    parser.add_argument("--tag", default="defaults",
                        help="name of this variant; runs go to <out>/<tag>")
    parser.add_argument("--out", default=out)
    parser.add_argument("--report", action="store_true",
                        help="train nothing: the table of the runs that have finished")


def train_runs(configs: Dict[Tuple[str, int], ExperimentConfig], *, verbose: int = 2,
               report_only: bool = False) -> Dict[str, List[Dict[str, Any]]]:
    """Trains (or reuses) every `(run, seed)` config, in order.

    Args:
        configs: `(run, seed)` -> its config (all checked before the first training).
        verbose: Keras verbosity of each training.
        report_only: train nothing; collect the runs that have finished.

    Returns:
        Run name -> the summaries of its finished seeds (runs without any left out).
    """
    from train.compare import train_or_reuse  # pylint: disable=import-outside-toplevel  # heavy

    results: Dict[str, List[Dict[str, Any]]] = {run: [] for run, _ in configs}
    for index, ((run, seed), cfg) in enumerate(configs.items(), start=1):
        finished = os.path.isfile(os.path.join(cfg.run_path, "summary.json"))
        if report_only and not finished:
            print(f"[{index}/{len(configs)}] {run}, seed {seed}: not run yet ({cfg.run_path})")
            continue
        print(f"[{index}/{len(configs)}] {run}, seed {seed} -> {cfg.run_path}", flush=True)
        results[run].append(train_or_reuse(cfg, verbose))
    return {run: found for run, found in results.items() if found}


def run_and_report(build: Callable[[str, int], ExperimentConfig], runs: Sequence[str],
                   seeds: Sequence[int], *, out_dir: str, name: str,
                   tabulate: Callable[[Dict[str, List[Dict[str, Any]]], Sequence[str]], str],
                   overrides: Sequence[str] = (), verbose: int = 2,
                   report_only: bool = False) -> Dict[str, List[Dict[str, Any]]]:
    """Trains (or reuses) every run for every seed, then writes `<name>.md` and `.json`.

    Args:
        build: `build(run, seed)` -> the run's config.
        runs: run names, in the order they are trained.
        seeds: training seeds.
        out_dir: the benchmark folder.
        name: stem of the table files.
        tabulate: `tabulate(results, overrides)` -> the Markdown table.
        overrides: the `--set` changes every run used.
        verbose: Keras verbosity of each training.
        report_only: train nothing; tabulate the runs that have finished.

    Returns:
        Run name -> the summaries of its seeds.
    """
    configs = {(run, seed): build(run, seed) for seed in seeds for run in runs}
    os.makedirs(out_dir, exist_ok=True)
    results = train_runs(configs, verbose=verbose, report_only=report_only)
    text = tabulate(results, overrides)
    with open(os.path.join(out_dir, f"{name}.md"), "w", encoding="utf-8") as stream:
        stream.write(text)
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as stream:
        json.dump({"overrides": list(overrides), "runs": results}, stream, indent=1)
    print(text)
    return results


def parse_and_run(parser: argparse.ArgumentParser, argv: Any,
                  run_benchmark: Callable[..., Any]) -> int:
    """Parses the options of `add_arguments` and calls the command's `run_benchmark`."""
    args = parser.parse_args(argv)
    run_benchmark(args.runs, args.seeds, data_root=args.data_root,
                  out_dir=os.path.join(args.out, args.tag), overrides=args.set,
                  report_only=args.report)
    return 0
