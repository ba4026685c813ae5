"""Says what is wrong with a config's datasets, and writes a cleaned view to train on.

  python -m data_pipelines.inspect --config C [--datasets NAME ...] [--run RUN] --out DIR

Works on every source format (COCO, image folder, table). Writes to DIR:

- report.md: one page per dataset: counts, what was found, worst examples;
- issues.csv: file, split, issue, score (0 worst .. 1 clean), detail, exclude;
- <dataset>/: counts.png, sizes.png (boxes.png or tags.png), counts.csv, sizes.csv,
  examples.png (worst examples), label_issues.png (with --run), exclude.txt, and for
  detection anchor_fit.csv (per class: training boxes with no anchor at IoU >= 0.5 at
  the config's image size and anchors, `data_pipelines.anchor_fit`).

Image issues (cleanvision): exact and near duplicates within and across splits
(`leakage`), blurry, dark, light, low-information, grayscale, odd size and aspect, and
unreadable files. Detection: boxes outside the image, degenerate, tiny and duplicate boxes,
images without boxes. With --run, likely wrong labels of the classification and
multi-label datasets (cleanlab on the run's probabilities for the training split).

exclude.txt lists what the stated rules leave out (report.md repeats them): unreadable and
blank images, all but one of each duplicate group (the evaluation split's copy
stays), images with a box outside them or a malformed one, and the label issues with
--exclude-label-issues. Add `exclude: DIR/<dataset>/exclude.txt` to a dataset's config
entry to train and evaluate without those files; the data is never touched.
"""
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from effdet_tf.anchors import ASPECT_RATIOS
from effdet_tf.cli import make_parser, run_cli
from effdet_tf.config import ExperimentConfig, load_config
from effdet_tf.errors import ConfigError, DataError
from data_pipelines import inspect_report as report
from data_pipelines.anchor_fit import write_anchor_fit
from data_pipelines.box_issues import find_box_issues
from data_pipelines.image_issues import find_image_issues
from data_pipelines.inspect_catalog import SPLITS, build_catalog
from data_pipelines.inspect_plots import write_analysis

RULES = ("Left out (exclude.txt): unreadable and blank images; all but one image "
         "of each exact or near duplicate group (the copy in test, else val, stays); "
         "detection images with a box wholly outside them or a malformed/zero-size box; "
         "likely wrong labels only with --exclude-label-issues. Everything else is reported "
         "and kept.")


def select_datasets(cfg: ExperimentConfig, names: Optional[Sequence[str]]) -> List[Any]:
    """The config's datasets named in `names` (all when None), each folder checked.

    Raises:
        ConfigError: a name is not a dataset of the config.
        DataError: a dataset folder does not exist.
    """
    known = {d.name: d for d in cfg.data.datasets}
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise ConfigError(f"--datasets: '{unknown[0]}' is not a dataset of the config "
                          f"({', '.join(known)})")
    chosen = [known[n] for n in names] if names else list(cfg.data.datasets)
    for dataset in chosen:
        if not os.path.isdir(dataset.root):
            raise DataError(f"dataset '{dataset.name}': folder {dataset.root} does not exist")
        if dataset.exclude and not os.path.isfile(dataset.exclude):
            raise DataError(f"dataset '{dataset.name}': exclude file {dataset.exclude} does "
                            "not exist")
    return chosen


def _move_into(staging: str, out_dir: str) -> None:
    """Moves what `staging` holds into `out_dir`, replacing files and folders of the same
    names (other files of `out_dir` stay)."""
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(staging):
        target = os.path.join(out_dir, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.remove(target)
        os.replace(os.path.join(staging, name), target)


def _write(catalogs: Sequence[Any], rows: List[Dict[str, Any]], label_rows: List[Dict],
           datasets: Sequence[Any], staging: str, out_dir: str, header: List[str],
           cfg: ExperimentConfig) -> Dict:
    """Writes every file into `staging`; returns `{dataset: exclude.txt path (final)}`."""
    issues = report.issues_frame(rows + label_rows)
    issues.to_csv(os.path.join(staging, "issues.csv"), index=False)
    lines, excludes = list(header), {}
    for catalog, dataset in zip(catalogs, datasets):
        folder = os.path.join(staging, catalog.name)
        print(f"writing the analysis of {catalog.name} ...", flush=True)
        analysis = write_analysis(catalog, folder)
        analysis["lines"] = list(analysis.get("lines", [])) + write_anchor_fit(
            catalog, folder, cfg.data.image_size,
            cfg.model.anchor_aspect_ratios or ASPECT_RATIOS)
        final = os.path.join(out_dir, catalog.name, report.EXCLUDE_FILE)
        files = {"exclude": report.write_dataset_exclude(catalog, issues, folder, final,
                                                         dataset.exclude)}
        examples = report.worst_examples(catalog, issues)
        if examples:
            files["examples"] = report.thumbnail_sheet(
                examples, os.path.join(folder, "examples.png"),
                f"{catalog.name}: worst examples of each issue")
        labelled = report.label_examples(catalog, label_rows)
        if labelled:
            files["labels"] = report.thumbnail_sheet(
                labelled, os.path.join(folder, "label_issues.png"),
                f"{catalog.name}: likeliest wrong labels (worst first)")
        lines += report.dataset_section(catalog, issues, analysis, files, staging, final)
        excludes[catalog.name] = final
    with open(os.path.join(staging, "report.md"), "w", encoding="utf-8") as stream:
        stream.write("\n".join(lines) + "\n")
    return excludes


def inspect_datasets(cfg: ExperimentConfig, out_dir: str, *,
                     names: Optional[Sequence[str]] = None, run: Optional[str] = None,
                     splits: Sequence[str] = SPLITS, image_checks: bool = True,
                     n_jobs: Optional[int] = 1, exclude_label_issues: bool = False,
                     command: str = "") -> Dict[str, str]:
    """Inspects datasets of a config and writes the report files to `out_dir`.

    Everything is written to a staging folder first and moved into `out_dir` at the end,
    so a failure leaves nothing half-written.

    Args:
        cfg: the experiment config.
        out_dir: the output folder (made if missing; files of the same names replaced).
        names: datasets to inspect (None: all).
        run: a run folder of `train.fit` for the label issues (None: no label check).
        splits: the splits to read (those a dataset lacks are skipped).
        image_checks: run the cleanvision image checks.
        n_jobs: cleanvision's processes (None: one per core).
        exclude_label_issues: put the likely wrong labels in `exclude.txt`.
        command: the command line, quoted in the report.

    Returns:
        `{dataset: its exclude.txt}`.

    Raises:
        ConfigError, DataError: bad arguments or data (one line), before any long work.
    """
    if run and not os.path.isdir(run):
        raise ConfigError(f"--run: {run} is not a folder")
    datasets = select_datasets(cfg, names)
    start = time.perf_counter()
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".inspect-", dir=parent)
    try:
        catalogs, rows = [], []
        for step, dataset in enumerate(datasets, start=1):
            print(f"[{step}/{len(datasets)}] reading {dataset.name} ({dataset.format}) ...",
                  flush=True)
            catalog = build_catalog(dataset, splits)
            catalogs.append(catalog)
            if image_checks:
                print(f"  image checks on {len(catalog.images)} images (cleanvision) ...",
                      flush=True)
                rows += find_image_issues(catalog, n_jobs=n_jobs)
            rows += find_box_issues(catalog, cfg.data.image_size)
        label_rows: List[Dict[str, Any]] = []
        if run:
            from data_pipelines.label_issues import run_label_issues  # pylint: disable=import-outside-toplevel  # loads a model
            print(f"label checks with the model of {run} (cleanlab) ...", flush=True)
            label_rows = run_label_issues(run, catalogs, exclude=exclude_label_issues)
        header = ["# Data inspection", "", f"`{command}`" if command else "", "",
                  f"{len(datasets)} dataset(s), splits {', '.join(splits)}; image checks "
                  f"{'on' if image_checks else 'off'}; label checks "
                  f"{'with run ' + run if run else 'off (no --run)'}. {RULES}", ""]
        excludes = _write(catalogs, rows, label_rows, datasets, staging, out_dir, header, cfg)
        _move_into(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"inspected {sum(len(c.images) for c in catalogs)} images in "
          f"{time.perf_counter() - start:.0f} s; report: {os.path.join(out_dir, 'report.md')}")
    return excludes


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m data_pipelines.inspect", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML experiment config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                        help="datasets to inspect (default: all of the config's)")
    parser.add_argument("--run", default=None,
                        help="a train.fit run folder: check labels with its model")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes for the image checks (0: one per core)")
    parser.add_argument("--no-image-checks", action="store_true",
                        help="skip the cleanvision image checks")
    parser.add_argument("--exclude-label-issues", action="store_true",
                        help="also leave out the likely wrong labels")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    if cfg.data.sample_data:
        from data_pipelines.sample_data import ensure_sample_data  # pylint: disable=import-outside-toplevel
        ensure_sample_data(cfg.data.sample_data, seed=0)
    command = "python -m data_pipelines.inspect " + " ".join(
        sys.argv[1:] if argv is None else argv)
    excludes = inspect_datasets(
        cfg, args.out, names=args.datasets, run=args.run, splits=args.splits,
        image_checks=not args.no_image_checks, n_jobs=args.jobs or None,
        exclude_label_issues=args.exclude_label_issues, command=command.strip())
    print("to train without the files it lists, add to each dataset's config entry:")
    for name, path in excludes.items():
        print(f"  {name}:  exclude: {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
