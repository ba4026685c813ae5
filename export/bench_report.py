"""Tables of `export.bench`: latency per runtime, two heads vs one, ONNX Runtime profile."""
from typing import Dict, List, Sequence

from export.onnx_profile import format_profile

GOAL_ONNX_VS_SAVED_MODEL = 0.7
HEAD_RUNTIMES = ("saved_model", "onnxruntime")
RUNTIMES = ("keras", "saved_model", "onnxruntime", "onnxruntime_int8", "onnx_relu_floor")


def head_table(heads: Sequence[str], latency: Dict[str, Dict[str, Dict[str, float]]],
               batches: Sequence[int]) -> dict:
    """The two-head vs single-head part of the report.

    Args:
        heads: head names.
        latency: `{name: {batch: {"median_ms", ...}}}` with names `<runtime>` and
            `<runtime>:<head>`.
        batches: batch sizes.

    Returns:
        `{"heads": [...], "latency": {runtime: {batch: {"multi", <head>..., "sum"}}}}`.
    """
    table: dict = {"heads": list(heads), "latency": {}}
    for runtime in HEAD_RUNTIMES:
        rows = {}
        for batch in batches:
            row = {"multi": latency[runtime][str(batch)]["median_ms"]}
            row.update({head: latency[f"{runtime}:{head}"][str(batch)]["median_ms"]
                        for head in heads})
            row["sum"] = sum(row[head] for head in heads)
            rows[str(batch)] = row
        table["latency"][runtime] = rows
    return table


def _latency_lines(report: dict) -> List[str]:
    """One row per runtime and batch, with the ratio to the SavedModel."""
    lines = [f"{'runtime':<16} {'batch':>5} {'median ms':>10} {'p90 ms':>9} "
             f"{'img/s':>8} {'vs saved_model':>15}"]
    latency = report["latency"]
    for batch in report["batches"]:
        base = latency["saved_model"][str(batch)]["median_ms"]
        for runtime in (r for r in RUNTIMES if r in latency):
            value = latency[runtime][str(batch)]
            ratio = value["median_ms"] / base
            goal = (f" (goal <= {GOAL_ONNX_VS_SAVED_MODEL})" if runtime == "onnxruntime"
                    else "")
            lines.append(f"{runtime:<16} {batch:>5} {value['median_ms']:>10.1f} "
                         f"{value['p90_ms']:>9.1f} {1000.0 * batch / value['median_ms']:>8.1f} "
                         f"{ratio:>14.2f}x{goal}")
    return lines


def _int8_lines(report: dict) -> List[str]:
    """int8 vs fp32 ONNX: size and latency ratios."""
    sizes, latency = report["sizes_bytes"], report["latency"]
    median = {name: [latency[name][str(b)]["median_ms"] for b in report["batches"]]
              for name in ("onnxruntime", "onnxruntime_int8")}
    ratios = ", ".join(f"batch {b} {q / f:.2f}x" for b, f, q in zip(
        report["batches"], median["onnxruntime"], median["onnxruntime_int8"]))
    return [f"onnxruntime_int8 = the int8 QDQ file (export.onnx --int8); vs fp32 ONNX: size "
            f"{sizes['onnx_int8'] / sizes['onnx']:.2f}x, median latency {ratios}"]


def _head_lines(heads: dict) -> List[str]:
    """The two-head vs single-head table."""
    names = heads["heads"]
    lines = [f"two-head model vs {len(names)} single-head models ({' + '.join(names)}), "
             "median ms",
             f"{'runtime':<15} {'batch':>5} {'two-head':>9} "
             + " ".join(f"{n[:12]:>12}" for n in names)
             + f" {'sum':>9} {'two-head/sum':>13}"]
    for runtime, per_batch in heads["latency"].items():
        for batch, row in per_batch.items():
            lines.append(f"{runtime:<15} {batch:>5} {row['multi']:>9.1f} "
                         + " ".join(f"{row[n]:>12.1f}" for n in names)
                         + f" {row['sum']:>9.1f} {row['multi'] / row['sum']:>12.2f}x")
    return lines


def format_report(report: dict) -> str:
    """The benchmark as text tables.

    Args:
        report: the dictionary `export.bench.bench` returns.

    Returns:
        The tables, one line per row.
    """
    lines = [f"CPU latency, image {report['image_size']}x{report['image_size']} uint8, "
             f"median of {report['repeats']} runs after {report['warmup']} warm-up "
             f"({report['cpu_count']} CPUs, {report['machine']})",
             "end to end (letterbox, model, NMS); runtimes take turns; keras = nms_tf.detect "
             "called eagerly; onnxruntime = CPU provider, thread spinning off"]
    lines += _latency_lines(report)
    if "onnx_relu_floor" in report["latency"]:
        lines.append(f"onnx_relu_floor = the ONNX file with its {report['floor_replaced']} "
                     "Mish activations replaced by ReLU fused into the convolutions: a lower "
                     "bound for any Mish in ONNX Runtime (timed only)")
    lines.append("file sizes: " + ", ".join(f"{name} {size / 1e6:.1f} MB"
                                            for name, size in report["sizes_bytes"].items()))
    if "onnxruntime_int8" in report["latency"]:
        lines += _int8_lines(report)
    if report.get("single_heads"):
        lines += _head_lines(report["single_heads"])
    for batch, profile in report.get("profile", {}).items():
        lines += format_profile(profile, int(batch))
    return "\n".join(lines)
