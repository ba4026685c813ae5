"""Run a Python script under KERAS_BACKEND=jax (CPU) in a child process and read its result.

Keras picks its backend once per process, so the JAX tests run their code in a child; the
child prints one line ``RESULT<json>`` that :func:`run_under_jax` parses.
"""
import json
import os
import pathlib
import subprocess
import sys
from typing import Any, Sequence

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]

# The anchor assigners' shared check: one assigner jitted on the arrays saved by
# jitted_matched_classes, printing the class each anchor was matched to.
_MATCH_SCRIPT = """
import json, sys
import jax
import numpy as np
import keras
from effdet_tf import anchors as anchor_lib
from effdet_tf.{module} import {function} as match_fn
assert keras.backend.backend() == "jax"
anchors = anchor_lib.generate_anchors({image_size})
arrays = [np.load(path) for path in sys.argv[1:]]
match = jax.jit(lambda *a: match_fn(anchors, *a, **{kwargs!r}))(*arrays)
print("RESULT" + json.dumps(np.asarray(match["matched_classes"]).tolist()))
"""


def run_under_jax(script: str, args: Sequence[str] = (), timeout: int = 300) -> Any:
    """Run `script` with `args` under the JAX backend and return its parsed RESULT line.

    Args:
        script: Python source; it must print ``"RESULT" + json.dumps(...)``.
        args: command-line arguments for the script.
        timeout: seconds before the child is killed.

    Returns:
        The JSON value the script printed after ``RESULT``.
    """
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def jitted_matched_classes(module: str, function: str, arrays: Sequence[np.ndarray],
                           tmp_path: pathlib.Path, image_size: int = 128,
                           **kwargs: Any) -> np.ndarray:
    """`effdet_tf.<module>.<function>(anchors, *arrays, **kwargs)` under `jax.jit`.

    Returns:
        Its ``matched_classes`` as a numpy array.
    """
    paths = []
    for i, array in enumerate(arrays):
        paths.append(str(tmp_path / f"array{i}.npy"))
        np.save(paths[-1], array)
    script = _MATCH_SCRIPT.format(module=module, function=function, image_size=image_size,
                                  kwargs=kwargs)
    return np.array(run_under_jax(script, paths))
