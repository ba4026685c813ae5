"""Predictions next to the truth on test images: `python -m train.prediction_grid --run RUN`.

One PNG with a row per dataset of the run and its first `--per-dataset` test images (in
image-id order, so the same images every time): the heads' detections drawn as by
`train.predict` (filled labels `head:class score`, one colour per head) and the
ground-truth boxes dashed on top, so a reader sees at a glance what is found, what is
missed and what is made up.
"""
import os
from typing import Optional, Sequence

import numpy as np

from effdet_tf.cli import make_parser, run_cli


def _truth_boxes(source, image_id: int) -> np.ndarray:
    """`[K, 4]` xyxy ground-truth boxes of one image (crowd boxes left out)."""
    anns = source.coco.loadAnns(source.coco.getAnnIds(imgIds=[image_id], iscrowd=False))
    xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def prediction_grid(run: str, out_png: str, *, per_dataset: int = 3, score: float = 0.3,
                    split: str = "test", weights: str = "final") -> str:
    """Draws the run's predictions and the ground truth on the first test images.

    Args:
        run: run folder written by `train.fit`.
        out_png: the PNG to write.
        per_dataset: images per dataset (columns).
        score: minimum score drawn.
        split: split the images come from.
        weights: "final", "best" or "last".

    Returns:
        `out_png`.
    """
    # pylint: disable=import-outside-toplevel,too-many-locals  # heavy imports; one figure
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from train.data import eval_dataset
    from train.predict import detect_image, draw, read_rgb
    from train.run_dir import load_run

    cfg, detector, classes = load_run(run, weights=weights)
    rows = len(cfg.data.datasets)
    fig, axes = plt.subplots(rows, per_dataset, figsize=(4.2 * per_dataset, 4.6 * rows),
                             squeeze=False)
    for row, dataset in enumerate(cfg.data.datasets):
        _, source = eval_dataset(cfg, row, split)
        image_dir = source.image_dir
        images = sorted(source.coco.dataset["images"], key=lambda img: img["id"])
        for col in range(per_dataset):
            axis = axes[row, col]
            axis.axis("off")
            if col >= len(images):
                continue
            info = images[col]
            picture = read_rgb(os.path.join(image_dir, info["file_name"]))
            found = detect_image(detector, picture, cfg.data.image_size, classes,
                                 score_threshold=score,
                                 iou_threshold=cfg.eval.iou_threshold,
                                 max_detections=cfg.eval.max_detections)
            axis.imshow(np.asarray(draw(picture, found, cfg.head_names)))
            for x1, y1, x2, y2 in _truth_boxes(source, info["id"]):
                for colour, width in (("black", 3.0), ("white", 1.5)):
                    axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                                             edgecolor=colour, linewidth=width,
                                             linestyle=(0, (4, 3))))
            truth = len(_truth_boxes(source, info["id"]))
            axis.set_title(f"{dataset.name} {split} image {info['id']}: "
                           f"{len(found)} found, {truth} true", fontsize=10)
    fig.suptitle(f"{os.path.basename(os.path.normpath(run))}: detections with score >= "
                 f"{score} (filled labels) and ground truth (dashed)", fontsize=12)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out_png) or ".", exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point."""
    parser = make_parser("python -m train.prediction_grid", description=__doc__)
    parser.add_argument("--run", required=True, help="run folder written by train.fit")
    parser.add_argument("--out", default=None,
                        help="PNG to write (None: RUN/plots/predictions_<split>.png)")
    parser.add_argument("--per-dataset", type=int, default=3, help="images per dataset")
    parser.add_argument("--score", type=float, default=0.3, help="minimum score drawn")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--weights", default="final", choices=("best", "last", "final"))
    args = parser.parse_args(argv)
    out = args.out or os.path.join(args.run, "plots", f"predictions_{args.split}.png")
    print(prediction_grid(args.run, out, per_dataset=args.per_dataset, score=args.score,
                          split=args.split, weights=args.weights))
    return 0


if __name__ == "__main__":
    run_cli(main)
