"""Model size and speed table: `python -m effdet_tf.model_stats`.

Prints parameters of the backbone, the BiFPN and every head, the total, the forward
multiply-adds at the chosen size (counted analytically from the conv / dense layers,
the convention of automl's "2.54B FLOPs" for D0), and the CPU forward latency (median,
batch 1) of the multi-head model against a single-head model measured in the same run.
"""
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence

import keras
import numpy as np

from effdet_tf.bifpn import LAYER_PREFIX
from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import ConfigError
from effdet_tf.detection_head import DetectionHead

DEFAULT_HEADS = "fruits=3,household=3"


def _conv_macs(layer: Any, input_shape: tuple, output_shape: tuple) -> int:
    """Multiply-adds of one conv / dense layer call (0 for other layers)."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        cin = input_shape[-1]
        pixels = output_shape[1] * output_shape[2]
        return int(pixels * (kh * kw * cin * layer.depth_multiplier
                             + cin * layer.depth_multiplier * layer.filters))
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return int(output_shape[1] * output_shape[2] * kh * kw * input_shape[-1]
                   * layer.depth_multiplier)
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = input_shape[-1] // layer.groups
        return int(output_shape[1] * output_shape[2] * kh * kw * cin * layer.filters)
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(output_shape[1:-1] or [1]) * input_shape[-1] * layer.units)
    return 0


def _graph_macs(model: keras.Model) -> int:
    """Multiply-adds of the conv / dense layers of a functional model (recursing)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += _graph_macs(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.SeparableConv2D,
                                keras.layers.DepthwiseConv2D,
                                keras.layers.Dense)):
            total += _conv_macs(layer, tuple(layer.input.shape), tuple(layer.output.shape))
    return total


def head_macs(head: DetectionHead, level_sizes: Sequence[int]) -> int:
    """Multiply-adds of a detection head over all levels (its convs are shared).

    Args:
        head: the head.
        level_sizes: feature map side per level.

    Returns:
        The count.
    """
    total = 0
    channels = head.channels
    for side in level_sizes:
        shape = (1, side, side, channels)
        for conv in list(head.class_convs) + list(head.box_convs):
            total += _conv_macs(conv, shape, shape)
        for conv in (head.class_predict, head.box_predict):
            total += _conv_macs(conv, shape, (1, side, side, conv.filters))
    return total


def parameter_table(model: Any) -> Dict[str, int]:
    """Parameters (trainable and BN statistics) per part of a detector.

    Args:
        model: a `MultiHeadDetector`.

    Returns:
        `{"backbone", "bifpn", "head:<name>" ..., "total"}`.
    """
    counts = {"backbone": model.backbone.count_params(),
              "bifpn": sum(layer.count_params() for layer in model.layers
                           if layer.name.startswith(LAYER_PREFIX))}
    for name, head in model.task_heads.items():
        counts[f"head:{name}"] = head.count_params()
    counts["total"] = model.count_params()
    return counts


def forward_macs(model: Any) -> Dict[str, int]:
    """Forward multiply-adds at batch 1 per part of a detector.

    Args:
        model: a `MultiHeadDetector`.

    Returns:
        `{"backbone", "bifpn", "head:<name>" ..., "total"}`.
    """
    sizes = [model.image_size // 2 ** level for level in range(3, 8)]
    backbone = _graph_macs(model.backbone)
    macs = {"backbone": backbone, "bifpn": _graph_macs(model) - backbone}
    for name, head in model.task_heads.items():
        macs[f"head:{name}"] = head_macs(head, sizes)
    macs["total"] = sum(macs.values())
    return macs


def median_latencies(models: Sequence[Any], image_size: int, *, runs: int,
                     warmup: int) -> List[float]:
    """Median seconds of `predict_on_batch` on one image, models timed in alternation.

    The models run in turn within every round, so load from other processes on the
    machine slows them alike and the ratio stays meaningful.

    Args:
        models: Keras models taking `[1, image_size, image_size, 3]`.
        image_size: input side.
        runs: timed rounds.
        warmup: untimed rounds first (the first one compiles).

    Returns:
        The median per model, seconds.
    """
    image = np.random.default_rng(0).uniform(0, 255, (1, image_size, image_size, 3))
    image = image.astype(np.float32)
    for _ in range(warmup):
        for model in models:
            model.predict_on_batch(image)
    times: List[List[float]] = [[] for _ in models]
    for _ in range(runs):
        for index, model in enumerate(models):
            start = time.perf_counter()
            model.predict_on_batch(image)
            times[index].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def parse_heads(text: str) -> Dict[str, int]:
    """Parses `name=classes,name=classes`.

    Args:
        text: the option value.

    Returns:
        `{name: classes}`.

    Raises:
        ConfigError: malformed text.
    """
    heads = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if not name or not value.isdigit():
            raise ConfigError(f"--heads expects name=classes[,name=classes], got {text!r}")
        heads[name.strip()] = int(value)
    return heads


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Prints the table.

    Args:
        argv: command-line arguments.

    Returns:
        Exit code 0.
    """
    parser = make_parser("python -m effdet_tf.model_stats",
                         description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--heads", default=DEFAULT_HEADS,
                        help="name=classes,...")
    parser.add_argument("--runs", type=int, default=15, help="timed forward passes per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-latency", action="store_true", help="skip the timing")
    parser.add_argument("--detection-towers", choices=("per_head", "shared"),
                        default="per_head",
                        help="detection heads' towers (model.detection_towers; the "
                             "detector's own default is per_head, train.fit's shared)")
    args = parser.parse_args(argv)
    from effdet_tf.detector import build_detector  # pylint: disable=import-outside-toplevel  # keeps --help fast
    heads = parse_heads(args.heads)
    model = build_detector(heads=heads, image_size=args.image_size,
                           detection_towers=args.detection_towers)
    params = parameter_table(model)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    macs = forward_macs(model)
    print(f"backend {keras.backend.backend()}, image {args.image_size}, heads {heads}")
    print(f"{'part':<22}{'params':>14}{'GMACs':>10}{'GFLOPs (2xMAC)':>16}")
    for part, count in params.items():
        print(f"{part:<22}{count:>14,}{macs[part] / 1e9:>10.3f}{2 * macs[part] / 1e9:>16.3f}")
    if args.detection_towers == "shared":
        print("(each head row counts the shared towers; the total counts them once)")
    print(f"{'trainable params':<22}{trainable:>14,}")
    print(f"{'BiFPN + heads':<22}{params['total'] - params['backbone']:>14,}"
          f"{(macs['total'] - macs['backbone']) / 1e9:>10.3f}")
    if not args.no_latency:
        first = next(iter(heads))
        single = build_detector(heads={first: heads[first]}, image_size=args.image_size)
        multi_s, single_s = median_latencies([model, single], args.image_size, runs=args.runs,
                                             warmup=args.warmup)
        print(f"CPU forward latency (predict_on_batch), batch 1, median of {args.runs} alternating "
              f"rounds after {args.warmup} warm-up:")
        print(f"  {len(heads)}-head model: {multi_s * 1e3:9.1f} ms")
        print(f"  1-head model:  {single_s * 1e3:9.1f} ms  ({first})")
        print(f"  ratio:         {multi_s / single_s:9.3f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
