"""`python -m effdet_tf.darknet convert|inspect|download`: Darknet files to Keras weights.

convert: builds the hand-written CSPDarknet53 (`--upto 105` on a yolov4-style cfg) or the
generic cfg model, loads the `.weights` by cfg index and writes `model.save_weights` output
atomically (a temporary file in the same folder, then `os.replace`).
inspect: prints the header, one row per layer (type, filters/size/stride, output shape,
values, file offset) and the byte accounting.
download: fetches the official yolov4.weights (or any URL) only when asked, and keeps it
only if its size and byte accounting against the cfg check out.
"""
import argparse
import os
import time
from typing import List, Optional, Sequence

import keras

from effdet_tf.backbones import cspdarknet53
from effdet_tf.cli import make_parser
from effdet_tf.darknet.builder import build_darknet_model
from effdet_tf.darknet.cfg import parse_cfg
from effdet_tf.darknet.download import YOLOV4_BYTES, YOLOV4_URL, download_weights
from effdet_tf.darknet.layout import LayerPlan, maxpool_params, plan_layers, total_floats
from effdet_tf.darknet.loader import load_darknet_weights, model_layers
from effdet_tf.darknet.weights import read_header
from effdet_tf.errors import DarknetError


def backbone_matches(plans: List[LayerPlan], model: keras.Model) -> bool:
    """Tells whether planned cfg layers are exactly the hand-written CSPDarknet53's.

    Compares the set of convolutions (filters, kernel size, stride, Mish), shortcuts and
    multi-input routes by index.

    Args:
        plans: `plan_layers(cfg, upto=105)`.
        model: `build_cspdarknet53()`.

    Returns:
        True when every convolution, shortcut and merge route sits at the same index.
    """
    if len(plans) != cspdarknet53.NUM_LAYERS:
        return False
    layers = model_layers(model)
    for plan in plans:
        index = f"{plan.index:03d}"
        if plan.conv is not None:
            conv = layers.get(f"conv_{index}")
            spec = plan.conv
            if conv is None or (conv.filters, conv.kernel_size[0], conv.strides[0]) != (
                    spec.filters, spec.size, spec.stride) or spec.activation != "mish" or (
                        not spec.batch_normalize or spec.groups != 1):
                return False
        elif plan.type == "shortcut" and f"shortcut_{index}" not in layers:
            return False
        elif plan.type == "route" and len(plan.inputs) > 1 and f"route_{index}" not in layers:
            return False
    convs = sum(1 for name in layers if name.startswith("conv_"))
    return convs == sum(1 for plan in plans if plan.conv is not None)


def _build_model(cfg_path: str, upto: Optional[int], kind: str):
    """Returns `(model, description)` for `convert`."""
    cfg = parse_cfg(cfg_path)
    if kind in ("auto", "cspdarknet53") and upto == cspdarknet53.NUM_LAYERS:
        backbone = cspdarknet53.build_cspdarknet53()
        if backbone_matches(plan_layers(cfg, upto=upto), backbone):
            return backbone, "hand-written CSPDarknet53 (effdet_tf.backbones.cspdarknet53)"
    if kind == "cspdarknet53":
        raise DarknetError(f"{cfg_path}: layers 0..{(upto or 0) - 1} are not CSPDarknet53 "
                           f"(use --upto {cspdarknet53.NUM_LAYERS} with a yolov4-style cfg)")
    return build_darknet_model(cfg, upto=upto), "generic cfg model"


def convert(args: argparse.Namespace) -> int:
    """Runs `convert`.

    Args:
        args: parsed arguments.

    Returns:
        0 on success.

    Raises:
        DarknetError: bad arguments or files (nothing is written then).
    """
    start = time.perf_counter()
    out = os.path.abspath(args.out)
    if not out.endswith(".weights.h5"):
        raise DarknetError(f"--out {args.out} must end with .weights.h5 (Keras weights)")
    if os.path.exists(out) and not args.overwrite:
        raise DarknetError(f"--out {args.out} exists; pass --overwrite to replace it")
    if not os.path.isdir(os.path.dirname(out)):
        raise DarknetError(f"--out {args.out}: folder {os.path.dirname(out)} does not exist")
    model, description = _build_model(args.cfg, args.upto, args.model)
    print(f"model: {description}, {model.count_params():,} values")
    report = load_darknet_weights(model, args.cfg, args.weights, upto=args.upto, progress=True)
    temp = os.path.join(os.path.dirname(out), f".tmp-{os.getpid()}-{os.path.basename(out)}")
    try:
        model.save_weights(temp)
        os.replace(temp, out)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    print(f"header: {report.header}")
    print(f"layers 0..{report.layers - 1}: {report.convolutions} convolutions")
    print(f"bytes: read {report.bytes_read:,} of {report.file_size:,}, "
          f"left unread {report.bytes_left:,}")
    print(f"wrote {out} ({os.path.getsize(out):,} bytes) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


def _describe(plan: LayerPlan) -> str:
    section = plan.section
    if plan.conv is not None:
        spec = plan.conv
        text = f"{spec.filters} {spec.size}x{spec.size}/{spec.stride}"
        if spec.groups > 1:
            text += f" g{spec.groups}"
        return text + (" bn " if spec.batch_normalize else " ") + spec.activation
    if plan.type == "maxpool":
        size, stride, padding = maxpool_params(section)
        return f"{size}x{size}/{stride} pad {padding}"
    if plan.type in ("route", "shortcut"):
        text = ",".join(str(i) for i in plan.inputs)
        groups = section.get_int("groups", 1)
        return text + (f" group {section.get_int('group_id', 0)}/{groups}" if groups > 1 else "")
    if plan.type == "upsample":
        return f"x{section.get_int('stride', 2)}"
    return ""


def _shape(plan: LayerPlan) -> str:
    return "x".join("?" if n is None else str(n) for n in plan.shape)


def inspect(args: argparse.Namespace) -> int:
    """Runs `inspect`: header, layer table, byte accounting.

    Args:
        args: parsed arguments.

    Returns:
        0 when the file size matches the cfg (or `--upto`), 1 when it does not.

    Raises:
        DarknetError: unreadable or malformed files.
    """
    cfg = parse_cfg(args.cfg)
    plans = plan_layers(cfg, upto=args.upto)
    header = read_header(args.weights) if args.weights else None
    header_size = header.size if header else 20
    if header:
        print(f"header: {header}")
    print(f"{'idx':>4} {'type':<14} {'filters/size/stride':<24} {'output':<16} "
          f"{'values':>10} {'offset':>12}")
    for plan in plans:
        offset = f"{header_size + 4 * plan.offset:,}" if plan.conv else ""
        values = f"{plan.num_floats:,}" if plan.conv else ""
        print(f"{plan.index:>4} {plan.type:<14} {_describe(plan):<24} {_shape(plan):<16} "
              f"{values:>10} {offset:>12}")
    expected = header_size + 4 * total_floats(plans)
    print(f"cfg layers 0..{len(plans) - 1}: {total_floats(plans):,} float32 values, "
          f"{expected:,} bytes with the header")
    if not header:
        return 0
    actual = os.path.getsize(args.weights)
    print(f"file: {actual:,} bytes, {actual - expected:+,} against the cfg")
    exact = args.upto is None
    return 0 if actual == expected or (not exact and actual > expected) else 1


def download(args: argparse.Namespace) -> int:
    """Runs `download`: fetch, check size and byte accounting, rename into place.

    Args:
        args: parsed arguments.

    Returns:
        0 once the checked file is in place.

    Raises:
        DarknetError: the download or a check failed (nothing is left behind).
    """
    expected = args.size or None
    start = time.perf_counter()
    size = download_weights(args.url, args.out, args.cfg, expected_size=expected,
                            overwrite=args.overwrite)
    print(f"wrote {os.path.abspath(args.out)} ({size:,} bytes) in "
          f"{time.perf_counter() - start:.0f} s; size and byte accounting against "
          f"{args.cfg} check out")
    print(f"next: python -m effdet_tf.darknet convert --cfg {args.cfg} --weights {args.out} "
          "--out cspdarknet53.weights.h5 --upto 105")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses the command line and runs `convert` or `inspect`.

    Args:
        argv: arguments (`sys.argv[1:]` when None).

    Returns:
        The exit code.
    """
    parser = make_parser("python -m effdet_tf.darknet",
                         description=__doc__.split("\n", maxsplit=1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="Darknet .weights -> Keras .weights.h5")
    conv.add_argument("--cfg", required=True, help="Darknet cfg (e.g. yolov4.cfg)")
    conv.add_argument("--weights", required=True, help="Darknet .weights file")
    conv.add_argument("--out", required=True, help="output Keras weights, *.weights.h5")
    conv.add_argument("--upto", type=int, default=None,
                      help="convert layers 0..N-1 only (105: the CSPDarknet53 backbone)")
    conv.add_argument("--model", choices=("auto", "cspdarknet53", "generic"), default="auto",
                      help="auto: the hand-written backbone for --upto 105 on a yolov4 cfg")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    insp = commands.add_parser("inspect", help="header, layer table, byte accounting")
    insp.add_argument("--cfg", required=True, help="Darknet cfg")
    insp.add_argument("--weights", default=None, help="Darknet .weights file (optional)")
    insp.add_argument("--upto", type=int, default=None, help="layers 0..N-1 only")
    get = commands.add_parser("download", help="fetch yolov4.weights, checked (only when run)")
    get.add_argument("--cfg", required=True, help="the cfg of the weights (e.g. yolov4.cfg)")
    get.add_argument("--out", required=True, help="where the .weights file goes")
    get.add_argument("--url", default=YOLOV4_URL, help="source (https:// or file://)")
    get.add_argument("--size", type=int, default=YOLOV4_BYTES,
                     help="required size in bytes (0: check the byte accounting only)")
    get.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    return {"convert": convert, "inspect": inspect, "download": download}[args.command](args)
