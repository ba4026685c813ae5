"""Distribution strategies for `python -m train.fit` (`train.strategy` in the config).

`make_strategy(name)` returns a `Distribution`: its `scope()` is where the detector,
the trainer and the optimizer are made; `num_replicas` divides the global batch
(`train.batch_size`); `attach(detector)` gives the detector the cross-replica sum its
loss needs; `shard(dataset)` sets how tf.data is split across workers;
`seeded(augmenter)` folds the replica id into the on-device augmentation seed.

Only existing engines are used:

* `default`: TensorFlow's default strategy (one device), a no-op scope.
* `mirrored`: `tf.distribute.MirroredStrategy` over every local GPU, or over the
  logical CPU devices when there is no GPU (how the tests run it).
* `tpu`: `TPUClusterResolver` + `initialize_tpu_system` + `TPUStrategy`.
* `multiworker`: `tf.distribute.MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`.
* `jax_data_parallel` (KERAS_BACKEND=jax): `keras.distribution.DataParallel` over
  every JAX device, installed with `keras.distribution.set_distribution`.

Loss reduction: Keras' TF trainer runs the step on every replica and sums the
gradients over replicas, so each replica's loss must be its share of the global loss.
The detector normalises each head by its positives + 1 summed over replicas (the
all-reduce given by `attach`), so the shares add up to the single-device loss of the
same global batch. Under JAX, `DataParallel` compiles one global (SPMD) step: the loss
already sees the global batch and needs no hook.
"""
import contextlib
import dataclasses
import json
import os
from typing import Any, Callable, Dict, Optional

import keras
import tensorflow as tf

from effdet_tf.errors import ConfigError

TF_STRATEGIES = ("default", "mirrored", "tpu", "multiworker")
JAX_STRATEGIES = ("default", "jax_data_parallel")


def cross_replica_sum(value: Any) -> Any:
    """Sums a tensor over the replicas of the current tf.distribute step.

    Outside a replica context (or with one replica) the value is returned unchanged.

    Args:
        value: a tensor, the same shape on every replica.

    Returns:
        The sum over replicas.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


class ReplicaSeeded:
    """Wraps an augmenter `(batch, seed[2]) -> batch` to fold in the replica id.

    With one replica the seed is passed unchanged (single-device runs are unchanged);
    with several, each replica's seed is `stateless_fold_in(seed, replica_id)`, so two
    replicas never augment their halves of the batch with the same random draws.

    Args:
        augmenter: the augmenter to wrap.
    """

    def __init__(self, augmenter: Callable[[Dict[str, Any], Any], Dict[str, Any]]):
        self.augmenter = augmenter

    def __call__(self, batch: Dict[str, Any], seed: Any) -> Dict[str, Any]:
        """Augments one replica's batch with its own seed.

        Args:
            batch: raw batch of this replica.
            seed: int32 `[2]` step seed.

        Returns:
            The augmented raw batch.
        """
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
            seed = tf.random.experimental.stateless_fold_in(seed, replica)
        return self.augmenter(batch, seed)


def _logs_with_axis(step: Callable) -> Callable:
    """Wraps a Keras step so that its scalar logs have shape `[1]`."""

    def step_with_axis(*args):
        return {key: tf.reshape(value, [1]) if value.shape.rank == 0 else value
                for key, value in step(*args).items()}

    return step_with_axis


@dataclasses.dataclass
class Distribution:
    """A strategy as `run_training` uses it.

    Args:
        name: the `train.strategy` value.
        strategy: the `tf.distribute.Strategy` (None under JAX).
        num_replicas: replicas in sync (devices sharing the global batch).
        distribution: the `keras.distribution.Distribution` (JAX only).
        worker_index: index of this worker (0 unless multi-worker).
        is_chief: this worker writes the run folder.
    """

    name: str
    strategy: Optional[Any] = None
    num_replicas: int = 1
    distribution: Optional[Any] = None
    worker_index: int = 0
    is_chief: bool = True

    def scope(self):
        """Context where variables (model, optimizer) must be made."""
        if self.strategy is not None and self.name != "default":
            return self.strategy.scope()
        return contextlib.nullcontext()

    def attach(self, detector: Any) -> None:
        """Gives the detector the cross-replica sum of its loss normaliser.

        Args:
            detector: a `MultiHeadDetector`.
        """
        if self.strategy is not None and self.num_replicas > 1:
            detector.cross_replica_sum = cross_replica_sum

    def seeded(self, augmenter: Optional[Callable]) -> Optional[Callable]:
        """The augmenter with the replica id folded into its seed (None stays None)."""
        if augmenter is None or self.num_replicas == 1:
            return augmenter
        return ReplicaSeeded(augmenter)

    def check_batch(self, batch_size: int) -> None:
        """Checks that the global batch splits evenly over the replicas.

        Args:
            batch_size: `train.batch_size`, the global batch.

        Raises:
            ConfigError: not a multiple of the replica count.
        """
        if batch_size % self.num_replicas:
            raise ConfigError(
                f"train.batch_size={batch_size} is the global batch; with strategy "
                f"{self.name!r} it must be a multiple of the {self.num_replicas} replicas")

    def fit_scope(self, trainer: Any):
        """Context to run `trainer.fit` in.

        Works around two faults of Keras 3.15's TF trainer under
        `MultiWorkerMirroredStrategy` (tensorflow/tensorflow#72388); for every other
        strategy this is a no-op:

        * when a model was made under a strategy, `fit` first reduces one input batch
          over the replicas to build the model symbolically, and the multi-worker
          `reduce` rejects dict batches. The trainer is already built here, so `fit`
          runs inside the strategy's scope instead, where Keras takes the same strategy
          from the scope and skips that build;
        * the step's logs are reduced with `reduce("MEAN", value, axis=0)`, which fails
          on scalars: the train and test steps return them with a leading axis of 1,
          and that reduction gives the scalar mean over every replica.

        Args:
            trainer: the built and compiled `DetectorTrainer`.

        Returns:
            A context manager.
        """
        if self.name != "multiworker":
            return contextlib.nullcontext()
        trainer._distribute_strategy = None  # pylint: disable=protected-access
        trainer.train_step = _logs_with_axis(trainer.train_step)
        trainer.test_step = _logs_with_axis(trainer.test_step)
        return self.strategy.scope()

    @staticmethod
    def shard(dataset: tf.data.Dataset) -> tf.data.Dataset:
        """Sets auto-sharding by DATA on a dataset.

        Every worker runs the same (seeded) pipeline and keeps its replicas' slices of
        each global batch, so the global batches are those of a single-device run. (By
        FILE cannot work: the examples are mixed from several sources in one stream.)

        Args:
            dataset: a batched dataset.

        Returns:
            The dataset with the option set.
        """
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        return dataset.with_options(options)


def _tf_config() -> Dict[str, Any]:
    """Parses and checks `TF_CONFIG` for multi-worker training."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            "train.strategy=multiworker needs TF_CONFIG, e.g. TF_CONFIG='{\"cluster\": "
            "{\"worker\": [\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": "
            "\"worker\", \"index\": 0}}' (see docs/distributed.md)")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"TF_CONFIG is not a valid cluster description ({err}): "
                          f"{raw}") from err
    if not workers:
        raise ConfigError("TF_CONFIG lists no workers")
    return config


def _mirrored() -> Distribution:
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        strategy = tf.distribute.MirroredStrategy([d.name for d in gpus])
    else:
        cpus = tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy(
            [d.name for d in cpus], cross_device_ops=tf.distribute.ReductionToOneDevice())
    return Distribution("mirrored", strategy, strategy.num_replicas_in_sync)


def _tpu() -> Distribution:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", "local"))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise ConfigError(f"train.strategy=tpu: no TPU could be initialised ({err}); "
                          "set TPU_NAME for a TPU node, or run on a TPU VM") from err
    strategy = tf.distribute.TPUStrategy(resolver)
    return Distribution("tpu", strategy, strategy.num_replicas_in_sync)


def _multiworker() -> Distribution:
    config = _tf_config()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = config["task"]
    has_chief = "chief" in config["cluster"]
    is_chief = task.get("type") == "chief" or (
        not has_chief and task.get("type", "worker") == "worker" and int(task["index"]) == 0)
    return Distribution("multiworker", strategy, strategy.num_replicas_in_sync,
                        worker_index=int(task["index"]), is_chief=is_chief)


def _jax_data_parallel() -> Distribution:
    devices = keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return Distribution("jax_data_parallel", None, len(devices), distribution=distribution)


def make_strategy(name: str) -> Distribution:
    """Builds the distribution a `train.strategy` value names.

    Call it before anything else touches TensorFlow devices (multi-worker collectives
    must be set up at program start).

    Args:
        name: `default`, `mirrored`, `tpu`, `multiworker` or `jax_data_parallel`.

    Returns:
        The `Distribution`.

    Raises:
        ConfigError: unknown name, a strategy of the other backend, no TPU, or
            `TF_CONFIG` missing or malformed for `multiworker`.

    Example:
        >>> dist = make_strategy("mirrored")
        >>> with dist.scope():
        ...     model = build_detector(heads={"a": 3})
    """
    backend = keras.backend.backend()
    allowed = JAX_STRATEGIES if backend == "jax" else TF_STRATEGIES
    if name not in TF_STRATEGIES + JAX_STRATEGIES:
        raise ConfigError(f"unknown train.strategy {name!r}; expected one of "
                          f"{sorted(set(TF_STRATEGIES + JAX_STRATEGIES))}")
    if name not in allowed:
        raise ConfigError(
            f"train.strategy={name} does not run under the {backend} Keras backend; "
            f"with KERAS_BACKEND={backend} use one of {list(allowed)}"
            + (" (jax_data_parallel needs KERAS_BACKEND=jax)" if backend != "jax" else ""))
    if name == "mirrored":
        return _mirrored()
    if name == "tpu":
        return _tpu()
    if name == "multiworker":
        return _multiworker()
    if name == "jax_data_parallel":
        return _jax_data_parallel()
    return Distribution("default")
