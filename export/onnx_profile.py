"""Where ONNX Runtime spends its time on an exported detector, and a lower bound for Mish.

`profile_onnx` runs a file with ONNX Runtime's profiler and sums kernel time by
operator type and by group: `conv` (convolutions, fused or NCHWc), `mish` (the nodes
`export.onnx_rewrite` names `effdet_mish_*`), `layout` (the NCHWc reorders ONNX Runtime
inserts around operations that cannot stay in its blocked layout, and transposes),
`nms` and `other`.

`relu_floor` copies a model with every rewritten Mish replaced by a `Relu`, which
ONNX Runtime fuses into the convolution before it. No formulation of Mish can be cheaper
than an activation fused into the convolution, so the copy's latency is a lower bound
for the real model in ONNX Runtime (its outputs are meaningless; it is only timed).
"""
import collections
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import helper

from export.onnx import session_options
from export.onnx_rewrite import MISH_PREFIX

GROUP_OPS = {"conv": ("Conv", "FusedConv", "NchwcConv"),
             "layout": ("ReorderInput", "ReorderOutput", "Transpose"),
             "nms": ("NonMaxSuppression", "TopK")}
GROUPS = ("conv", "mish", "layout", "nms", "other")


def group_of(node_name: str, op_type: str) -> str:
    """The group of a profiled node: conv, mish, layout, nms or other."""
    if node_name.startswith(MISH_PREFIX):
        return "mish"
    for group, ops in GROUP_OPS.items():
        if op_type in ops:
            return group
    return "other"


def kernel_times(events: Sequence[dict], skip_runs: int) -> List[dict]:
    """Node kernel events after the first `skip_runs` model runs of a profile.

    Args:
        events: ONNX Runtime's profile (a list of trace events).
        skip_runs: warm-up runs to leave out.

    Returns:
        `[{"node", "op", "us"}]`.
    """
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    begin = starts[skip_runs] if len(starts) > skip_runs else 0
    return [{"node": e["name"][:-len("_kernel_time")], "op": e["args"]["op_name"],
             "us": float(e["dur"])}
            for e in events
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
            and e["ts"] >= begin]


def profile_onnx(path: str, images: np.ndarray, *, runs: int = 3, warmup: int = 1,
                 scratch: Optional[str] = None) -> dict:
    """Profiles an ONNX file in ONNX Runtime (CPU) on one batch.

    Args:
        path: the `.onnx` file.
        images: the uint8 batch to feed.
        runs: profiled runs.
        warmup: runs before them, left out.
        scratch: folder for ONNX Runtime's trace file, deleted after reading (default:
            the folder of `path`).

    Returns:
        `{"groups": {group: ms per run}, "ops": {op type: ms per run}, "kernel_ms":
        total kernel ms per run}`, ops sorted by time.
    """
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel  # optional runtime

    options = session_options()
    options.enable_profiling = True
    folder = scratch or os.path.dirname(os.path.abspath(path))
    options.profile_file_prefix = os.path.join(folder, "effdet_ort_profile")
    session = ort.InferenceSession(path, sess_options=options,
                                   providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images}
    for _ in range(warmup + runs):
        session.run(None, feed)
    trace = session.end_profiling()
    try:
        with open(trace, encoding="utf-8") as stream:
            events = json.load(stream)
    finally:
        os.remove(trace)
    groups: Dict[str, float] = {group: 0.0 for group in GROUPS}
    ops: Dict[str, float] = collections.Counter()
    for event in kernel_times(events, warmup):
        groups[group_of(event["node"], event["op"])] += event["us"] / 1000.0 / runs
        ops[event["op"]] += event["us"] / 1000.0 / runs
    return {"groups": groups, "ops": dict(ops.most_common()),
            "kernel_ms": sum(groups.values())}


def relu_floor(model: onnx.ModelProto) -> int:
    """Replaces every rewritten Mish of `model` by a `Relu` of its input, in place.

    Args:
        model: a model written by `export.onnx` (Mish rewritten and named).

    Returns:
        How many Mish activations were replaced.
    """
    graph = model.graph
    groups: Dict[str, Dict[str, onnx.NodeProto]] = {}
    for node in graph.node:
        if node.name.startswith(MISH_PREFIX):
            prefix, step = node.name.rsplit("_", 1)
            groups.setdefault(prefix, {})[step] = node
    complete = {prefix: steps for prefix, steps in groups.items()
                if "clip" in steps and "mul" in steps}
    nodes = []
    for node in graph.node:
        if not node.name.startswith(MISH_PREFIX):
            nodes.append(node)
            continue
        prefix, step = node.name.rsplit("_", 1)
        if prefix not in complete:
            nodes.append(node)
        elif step == "mul":
            steps = complete[prefix]
            nodes.append(helper.make_node("Relu", [steps["clip"].input[0]], [node.output[0]],
                                          name=f"{prefix}_floor_relu"))
    del graph.node[:]
    graph.node.extend(nodes)
    return len(complete)


def write_relu_floor(path: str, out: str) -> int:
    """Writes the `relu_floor` copy of the ONNX file `path` to `out`.

    Args:
        path: an `.onnx` file written by `export.onnx`.
        out: the copy to write.

    Returns:
        How many Mish activations were replaced (0: nothing to bound, `out` unwritten).
    """
    model = onnx.load(path)
    count = relu_floor(model)
    if count:
        onnx.save(model, out)
    return count


def format_profile(profile: dict, batch: int) -> List[str]:
    """Text lines for one `profile_onnx` result."""
    total = max(profile["kernel_ms"], 1e-9)
    shares = ", ".join(f"{group} {100.0 * ms / total:.0f}%"
                       for group, ms in profile["groups"].items())
    top = ", ".join(f"{op} {100.0 * ms / total:.0f}%"
                    for op, ms in list(profile["ops"].items())[:6])
    return [f"onnxruntime kernel time at batch {batch} ({total:.0f} ms per run): {shares}",
            f"  by operator: {top}"]
