"""Export of trained runs: SavedModel and ONNX with letterboxing, every head and NMS inside;
verification across runtimes and a CPU latency benchmark.

Modules (each a CLI, `python -m export.<name> --help`):
    saved_model: `serving_default` (uint8 any-size images -> detections per head in input
        pixels) and `raw` (letterboxed float32 frames -> raw head outputs) signatures.
    onnx: the same detection graph through tf2onnx, checked in ONNX Runtime; `--int8`
        quantises it (static QDQ, calibrated on the run's training images: `quantize`).
    verify: Keras vs SavedModel vs ONNX Runtime on the same images; `--int8` (or
        `verify_int8`): int8 vs fp32 ONNX agreement rates.
    bench: CPU latency of the runtimes (int8 with `--int8`), file sizes, two heads vs
        single heads.
    serve: a REST service over an export (`serve_model`, `serve_page`).
    loadtest: latency, throughput and errors of a local `serve` service.

Helpers: `graph` (the exported computation), `io` (atomic outputs), `onnx_rewrite`
(Mish made fast in ONNX Runtime), `cli_args`.
"""
from effdet_tf.cli import quiet_if_cli

quiet_if_cli()  # before anything imports TensorFlow: its start-up lines stay off
