"""A fast stand-in for CSPDarknet53 shared by the tests that need many model builds."""


from typing import Any, Sequence


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
