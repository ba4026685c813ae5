"""Learning-rate schedules (backend-neutral, keras.ops)."""
import math

import keras
from keras import ops


def capped_warmup_steps(warmup_epochs: float, max_fraction: float, steps_per_epoch: int,
                        total_steps: int) -> int:
    """Steps of linear warm-up: `warmup_epochs` epochs, but at most `max_fraction` of the run.

    Args:
        warmup_epochs: warm-up length in epochs (`train.warmup_epochs`).
        max_fraction: the cap, a fraction of `total_steps` (`train.warmup_max_fraction`);
            a long warm-up in a short run would leave too few steps at the full rate.
        steps_per_epoch: training steps per epoch.
        total_steps: training steps of the whole run.

    Returns:
        The warm-up length in steps.

    Example:
        >>> capped_warmup_steps(3, 0.1, steps_per_epoch=70, total_steps=700)
        70
    """
    return max(min(int(warmup_epochs * steps_per_epoch), int(max_fraction * total_steps)), 0)


@keras.saving.register_keras_serializable(package="effdet_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `warmup_factor * base` to `base`, then cosine decay to `final`.

    This is the EfficientDet recipe (1 epoch of warm-up, cosine to zero).

    Args:
        base_lr: learning rate reached at the end of warm-up.
        total_steps: steps of the whole run.
        warmup_steps: steps of linear warm-up.
        warmup_factor: fraction of `base_lr` at step 0.
        final_lr: learning rate at the last step.

    Example:
        >>> schedule = WarmupCosine(base_lr=0.02, total_steps=1000, warmup_steps=100)
    """

    def __init__(self, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
                 warmup_factor: float = 0.1, final_lr: float = 0.0):
        super().__init__()
        self.base_lr = float(base_lr)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.warmup_factor = float(warmup_factor)
        self.final_lr = float(final_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        warm_lr = self.base_lr * (self.warmup_factor + (1.0 - self.warmup_factor) * step / warm)
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.final_lr + 0.5 * (self.base_lr - self.final_lr) * (
            1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps == 0:
            return cosine
        return ops.where(step < self.warmup_steps, warm_lr, cosine)

    def get_config(self) -> dict:
        """Returns the constructor arguments."""
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "warmup_factor": self.warmup_factor,
                "final_lr": self.final_lr}
