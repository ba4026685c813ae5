"""A fast stand-in for CSPDarknet53 shared by the tests that need many model builds."""
import os
import pathlib
from typing import Any, Dict, Mapping, Optional, Sequence

# Holds the sitecustomize module that swaps the stand-in in for subprocesses.
STAND_IN_DIR = pathlib.Path(__file__).resolve().parent / "stand_in"
# A model file with the stand-in is a few MB; with CSPDarknet53, over 100 MB.
STAND_IN_MAX_BYTES = 20 * 2 ** 20


def tiny_backbone(*, input_shape: Sequence[Any] = (None, None, 3),
                  channels: Sequence[int] = (8, 16, 16, 24, 32),
                  name: str = "tiny_backbone", activation: str = "mish") -> Any:
    """Five stride-2 convs; outputs [C3, C4, C5] at strides 8, 16 and 32.

    Args:
        input_shape: model input shape.
        channels: filters of the five convolutions.
        name: model name.
        activation: of every convolution (Mish, as in CSPDarknet53, so exports meet
            the same operations).

    Returns:
        A keras.Model with three outputs.
    """
    import keras  # pylint: disable=import-outside-toplevel  # imported where the backend is set

    inputs = keras.Input(input_shape)
    x = inputs
    features = []
    for i, width in enumerate(channels):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation=activation,
                                name=f"tiny_conv{i}")(x)
        if i >= 2:
            features.append(x)
    return keras.Model(inputs, features, name=name)


def tiny_bn_backbone(size: int = 128, name: str = "tiny") -> Any:
    """A fast stand-in with one BN layer: [C3, C4, C5] at strides 8/16/32 of a `size` input."""
    import keras  # pylint: disable=import-outside-toplevel  # imported where the backend is set

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    c3 = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="c3")(x)
    c4 = keras.layers.Conv2D(24, 3, strides=2, padding="same", name="c4")(c3)
    c5 = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="c5")(c4)
    return keras.Model(inputs, [c3, c4, c5], name=name)


def stand_in_env(base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Environment variables under which every new Python process builds `tiny_backbone`
    in place of CSPDarknet53 (tests/stand_in/sitecustomize.py), for tests whose CLIs run
    as subprocesses.

    Args:
        base: the environment to extend (None: this process's).

    Returns:
        A copy of `base` with EFFDET_TEST_STAND_IN=1 and the stand-in folder and the
        repository root first on PYTHONPATH.
    """
    env = dict(os.environ if base is None else base)
    paths = [str(STAND_IN_DIR), str(STAND_IN_DIR.parents[1])]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    env["EFFDET_TEST_STAND_IN"] = "1"
    return env


def use_stand_in(patch: Any) -> None:
    """Builds `tiny_backbone` in place of CSPDarknet53 in this process and, through the
    environment (`stand_in_env`), in every process it starts.

    Args:
        patch: a `pytest.MonkeyPatch` (its undo restores both).
    """
    import effdet_tf.backbones.cspdarknet53 as csp  # pylint: disable=import-outside-toplevel  # heavy

    patch.setattr(csp, "build_cspdarknet53", tiny_backbone)
    for key, value in stand_in_env().items():
        patch.setenv(key, value)
