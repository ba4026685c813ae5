"""Preview the training input: PNG grids of batches per dataset, augmented and not.

Usage:
    python -m data_pipelines.preview --config configs/demo.yaml --out preview/ \\
        [--set train.batch_size=8] [--batches 2]

Writes `OUT/<dataset>_batch<k>.png` (augmented) and `OUT/<dataset>_batch<k>_raw.png`
(the same images, un-augmented).
"""
import os
from typing import Any, List, Optional, Sequence

import tensorflow as tf

from effdet_tf.batch_schema import EXAMPLE_KEYS
from effdet_tf.cli import make_parser, run_cli
from effdet_tf.config import load_config
from data_pipelines.augment import YoloV4Augment
from data_pipelines.draw import batch_grid
from data_pipelines.pipeline import build_sources
from data_pipelines.sample_data import ensure_sample_data


def _numpy(batch: Any) -> dict:
    return {k: v.numpy() for k, v in batch.items()}


def write_previews(cfg: Any, out_dir: str, *, batches: int = 1,
                   augmenter: Optional[Any] = None) -> List[str]:
    """Writes annotated batch grids of every training dataset.

    Args:
        cfg: experiment config (`.data`, `.train.seed`, `.train.batch_size`).
        out_dir: output folder (created).
        batches: batches per dataset.
        augmenter: `aug(batch, seed)`; only raw grids are written when None.

    Returns:
        Paths written.

    Raises:
        DataError: a dataset has problems.
    """
    os.makedirs(out_dir, exist_ok=True)
    data = cfg.data
    sources = build_sources(data.datasets, "train",
                            on_corrupt=getattr(data, "on_corrupt", "fail"))
    names = [src.class_names for src in sources]
    seed = int(cfg.train.seed)
    written = []
    for src in sources:
        ds = src.dataset(data.image_size, data.max_boxes, shuffle=True, seed=seed, repeat=True,
                         on_corrupt=getattr(data, "on_corrupt", "fail"))
        ds = ds.map(lambda ex: {k: ex[k] for k in EXAMPLE_KEYS})
        ds = ds.batch(int(cfg.train.batch_size), drop_remainder=True)
        for k, batch in enumerate(ds.take(batches)):
            raw_path = os.path.join(out_dir, f"{src.name}_batch{k}_raw.png")
            batch_grid(_numpy(batch), names).save(raw_path)
            written.append(raw_path)
            if augmenter is not None:
                aug = augmenter(batch, tf.constant([seed % (2 ** 31), k], tf.int32))
                path = os.path.join(out_dir, f"{src.name}_batch{k}.png")
                batch_grid(_numpy(aug), names).save(path)
                written.append(path)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `python -m data_pipelines.preview`.

    Args:
        argv: command-line arguments.

    Returns:
        Exit code.
    """
    parser = make_parser("python -m data_pipelines.preview",
                         description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument("--out", required=True, help="output folder for the PNGs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, repeatable (e.g. train.batch_size=8)")
    parser.add_argument("--batches", type=int, default=1, help="batches per dataset")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    if cfg.data.sample_data:
        ensure_sample_data(cfg.data.sample_data, seed=0)
    augmenter = YoloV4Augment(cfg.data.image_size, **cfg.augmenter_kwargs())
    for path in write_previews(cfg, args.out, batches=args.batches, augmenter=augmenter):
        print(path)
    return 0


if __name__ == "__main__":
    run_cli(main)
