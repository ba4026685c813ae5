"""tf.distribute without GPUs: mirrored over 2 logical CPUs, and 2 local workers.

Each check runs in a subprocess (`python -m tests.test_distribute MODE ...`): the CPU
must be split into logical devices before TensorFlow initialises them, and a
multi-worker strategy must be made at program start.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from effdet_tf.errors import ConfigError
from tests.backbones import tiny_backbone
from tests.conftest import REPO_ROOT

SIZE = 128
STEPS = 3
# Global batch of 4 split 2 + 2: replica 0 sees both datasets, replica 1 only dataset 0,
# so a per-replica normaliser would differ from the global one.
DATASET_IDS = ((1, 0, 0, 0), (0, 1, 0, 0), (1, 1, 0, 0))
TINY_MODEL = ["model.fpn_channels=16", "model.fpn_cells=1", "model.head_layers=1"]


def _tiny_backbone(size=SIZE):
    """A fast stand-in backbone: [C3, C4, C5] at strides 8/16/32."""
    return tiny_backbone(input_shape=(size, size, 3), channels=(8, 8, 16, 16, 32), name="tiny")


def _split_cpu(count=2):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def _batches():
    """STEPS raw batches of 4 with boxes, both datasets, fixed numbers."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    out = []
    for ids in DATASET_IDS:
        boxes = np.full((4, 4, 4), -1.0, np.float32)
        classes = np.full((4, 4), -1, np.int32)
        for b, dataset in enumerate(ids):
            for m in range(1 + b % 3):
                x1, y1 = rng.uniform(0, 80, 2)
                w, h = rng.uniform(16, 48, 2)
                boxes[b, m] = (x1, y1, x1 + w, y1 + h)
                classes[b, m] = rng.integers(0, 2 if dataset == 0 else 3)
        out.append({"images": rng.integers(0, 255, (4, SIZE, SIZE, 3)).astype(np.uint8),
                    "boxes": boxes, "classes": classes,
                    "dataset_id": np.asarray(ids, np.int32)})
    return out


def _train(dist, initial, steps=STEPS, normalizer="per_head"):
    """Trains the tiny detector `steps` steps of SGD under `dist`; returns the results."""
    # pylint: disable=import-outside-toplevel
    import keras
    import numpy as np
    import tensorflow as tf

    from effdet_tf.detector import build_detector
    from train.trainer import DetectorTrainer

    batches = _batches()
    data = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([b[k] for b in batches]) for k in batches[0]})
    with dist.scope():
        keras.utils.set_random_seed(0)
        detector = build_detector(heads={"a": 2, "b": 3}, image_size=SIZE,
                                  backbone=_tiny_backbone(), fpn_channels=16, fpn_cells=1,
                                  head_layers=1)
        for layer in detector._flatten_layers():  # pylint: disable=protected-access
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False  # BN statistics are per replica by design
        detector.loss_normalizer = normalizer
        dist.attach(detector)
        trainer = DetectorTrainer(detector)
        trainer.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        trainer(keras.ops.zeros((1, SIZE, SIZE, 3)))
        trainer.optimizer.build(trainer.trainable_variables)
    if initial is not None:
        detector.set_weights(initial)
    start = [w.copy() for w in detector.get_weights()]
    if not steps:
        return detector, start, {}
    history = trainer.fit(dist.shard(data), epochs=1, steps_per_epoch=steps, verbose=0)
    logs = {k: float(v[-1]) for k, v in history.history.items()}
    return detector, start, logs


def _equivalence_main(out_dir):
    """Mirrored (2 logical CPUs) vs one device; checkpoints both ways; detect."""
    # pylint: disable=import-outside-toplevel,too-many-locals
    _split_cpu(2)
    import numpy as np
    import tensorflow as tf

    from effdet_tf import nms_tf
    from train.strategy import make_strategy

    single_dist = make_strategy("default")
    single, start, single_logs = _train(single_dist, None)
    mirrored_dist = make_strategy("mirrored")
    mirrored, _, mirrored_logs = _train(mirrored_dist, start)
    weights_a, weights_b = single.get_weights(), mirrored.get_weights()
    result = {
        "replicas": mirrored_dist.num_replicas,
        "max_weight_diff": max(float(np.max(np.abs(a - b)))
                               for a, b in zip(weights_a, weights_b)),
        "max_weight_change": max(float(np.max(np.abs(a - b)))
                                 for a, b in zip(weights_a, start)),
        "single_logs": single_logs, "mirrored_logs": mirrored_logs}

    # One normaliser shared by the heads, summed over the replicas like the per-head ones.
    shared_single, _, _ = _train(single_dist, start, normalizer="shared")
    shared_mirrored, _, _ = _train(mirrored_dist, start, normalizer="shared")
    shared_a, shared_b = shared_single.get_weights(), shared_mirrored.get_weights()
    result["shared_max_weight_diff"] = max(float(np.max(np.abs(a - b)))
                                           for a, b in zip(shared_a, shared_b))
    result["shared_vs_per_head"] = max(float(np.max(np.abs(a - b)))
                                       for a, b in zip(shared_a, weights_a))

    # Checkpoints: mirrored -> single device, and single device -> mirrored.
    path = os.path.join(out_dir, "mirrored.weights.h5")
    mirrored.save_weights(path)
    fresh, _, _ = _train(single_dist, None, steps=0)
    fresh.load_weights(path)
    result["ckpt_to_single"] = max(float(np.max(np.abs(a - b)))
                                   for a, b in zip(fresh.get_weights(), weights_b))
    single_path = os.path.join(out_dir, "single.weights.h5")
    single.save_weights(single_path)
    with mirrored_dist.scope():
        mirrored.load_weights(single_path)
    result["ckpt_to_mirrored"] = max(float(np.max(np.abs(a - b)))
                                     for a, b in zip(mirrored.get_weights(), weights_a))
    images = tf.constant(_batches()[0]["images"][:2])
    detections = nms_tf.detect(fresh, images, score_threshold=0.0, iou_threshold=0.5,
                               max_detections=10)
    result["detect_heads"] = sorted(detections)
    result["detect_boxes_shape"] = list(detections["a"]["boxes"].shape)

    # Per-replica augmentation seeds: the same examples on both replicas, other draws.
    from data_pipelines.augment import YoloV4Augment
    from train.strategy import ReplicaSeeded
    strategy = mirrored_dist.strategy
    batch = _batches()[0]
    same = {k: np.concatenate([v[:2], v[:2]]) for k, v in batch.items()}
    augment = ReplicaSeeded(YoloV4Augment(SIZE, jit_compile=False))
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(same))
    step = tf.function(lambda b: strategy.run(  # as in the train step: a graph per replica
        lambda r: augment(r, tf.constant([7, 1], tf.int32))["images"], args=(b,)))
    per_replica = step(next(iter(dataset)))
    first, second = (t.numpy() for t in strategy.experimental_local_results(per_replica))
    result["augment_replicas_differ"] = bool(np.any(first != second))
    with open(os.path.join(out_dir, "result.json"), "w", encoding="utf-8") as stream:
        json.dump(result, stream)


def _patch_tiny_backbone():
    """Makes `run_training` build the detector on the tiny stand-in backbone."""
    import effdet_tf.detector as detector_lib  # pylint: disable=import-outside-toplevel

    original = detector_lib.build_detector

    def build(**kwargs):
        kwargs["backbone"] = _tiny_backbone(kwargs["image_size"])
        return original(**kwargs)

    detector_lib.build_detector = build


def _fit_main(config_file, logical_cpus):
    """`run_training` on a config (tiny backbone), as `python -m train.fit` would."""
    # pylint: disable=import-outside-toplevel
    if int(logical_cpus) > 1:
        _split_cpu(int(logical_cpus))
    from effdet_tf.config import load_config
    from train.fit import run_training

    import keras
    keras.config.disable_traceback_filtering()
    _patch_tiny_backbone()
    run_training(load_config(config_file), evaluate=False, verbose=2)


def _config_file(sample, run_dir, tmp_path, extra):
    from effdet_tf.config import config_from_dict, dump_config  # pylint: disable=import-outside-toplevel

    datasets = [{"name": n, "root": os.path.join(sample["root"], n)}
                for n in ("shapes", "signs")]
    cfg = config_from_dict(
        {"name": "dist", "data": {"datasets": datasets, "max_boxes": 16},
         "train": {"run_dir": str(run_dir)}},
        [f"data.image_size={SIZE}", "train.batch_size=4", "train.steps_per_epoch=2",
         "train.epochs=1", "eval.batch_size=8", "train.optimizer=sgd",
         "train.learning_rate=0.01", "train.precise_bn_steps=1"] + TINY_MODEL + list(extra))
    path = tmp_path / "dist.yaml"
    path.write_text(dump_config(cfg), encoding="utf-8")
    return str(path)


def _env(**extra):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               KERAS_BACKEND="tensorflow", OMP_NUM_THREADS="1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _log_rows(run):
    import csv  # pylint: disable=import-outside-toplevel

    with open(os.path.join(run, "log.csv"), encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(name="sample", scope="module")
def fixture_sample(tmp_path_factory):
    """Small sample datasets."""
    from data_pipelines.sample_data import ensure_sample_data  # pylint: disable=import-outside-toplevel

    out = tmp_path_factory.mktemp("sample")
    return ensure_sample_data(str(out), seed=0, num_train=8, num_val=4, num_test=4)


def test_mirrored_equals_single_device(tmp_path):
    """Mirrored over 2 replicas = one device with the same global batch; checkpoints cross."""
    proc = subprocess.run([sys.executable, "-m", "tests.test_distribute", "equivalence",
                           str(tmp_path)], cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    print(json.dumps(result, indent=1))
    assert result["replicas"] == 2
    assert result["max_weight_change"] > 1e-4  # the runs did train
    assert result["max_weight_diff"] < 1e-5
    assert result["shared_max_weight_diff"] < 1e-5
    assert result["shared_vs_per_head"] > 1e-4  # the shared normaliser changes training
    single, mirrored = result["single_logs"], result["mirrored_logs"]
    assert set(single) == set(mirrored) and {"a_loss", "b_loss", "loss"} <= set(single)
    for key, value in single.items():
        assert mirrored[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert result["ckpt_to_single"] == 0.0 and result["ckpt_to_mirrored"] == 0.0
    assert result["detect_heads"] == ["a", "b"] and result["detect_boxes_shape"] == [2, 10, 4]
    assert result["augment_replicas_differ"]


def test_run_training_mirrored(sample, tmp_path):
    """The real run_training path under `mirrored` (augmentation: see the test above)."""
    cfg_file = _config_file(sample, tmp_path / "run", tmp_path,
                            ["train.strategy=mirrored", "train.augment=false"])
    proc = subprocess.run([sys.executable, "-m", "tests.test_distribute", "fit", cfg_file, "2"],
                          cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "strategy: mirrored, 2 replica(s), global batch 4 = 2 per replica" in proc.stdout
    assert (tmp_path / "run" / "checkpoints" / "last.weights.h5").is_file()
    assert (tmp_path / "run" / "model.keras").is_file()
    row = _log_rows(tmp_path / "run")[-1]
    assert float(row["loss"]) > 0 and float(row["val_loss"]) > 0


def _free_ports(count):
    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def test_multiworker_two_processes(sample, tmp_path):
    """Two workers on localhost (TF_CONFIG) train together and stop by themselves."""
    cfg_file = _config_file(sample, tmp_path / "run", tmp_path,
                            ["train.strategy=multiworker", "train.augment=false"])
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs, logs = [], [tmp_path / f"worker{index}.log" for index in range(2)]
    start = time.perf_counter()
    try:
        for index, log in enumerate(logs):
            tf_config = json.dumps({"cluster": {"worker": workers},
                                    "task": {"type": "worker", "index": index}})
            with open(log, "w", encoding="utf-8") as stream:
                procs.append(subprocess.Popen(  # pylint: disable=consider-using-with
                    [sys.executable, "-m", "tests.test_distribute", "fit", cfg_file, "1"],
                    cwd=REPO_ROOT, env=_env(TF_CONFIG=tf_config), stdout=stream,
                    stderr=subprocess.STDOUT, start_new_session=True))
        # Until both stop, one fails (the other would wait for it forever) or time is up.
        while time.perf_counter() - start < 240 and any(p.poll() is None for p in procs) \
                and not any(p.poll() for p in procs):
            time.sleep(0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    seconds = time.perf_counter() - start
    print(f"2-worker run: {seconds:.1f} s")
    for proc, log in zip(procs, logs):
        output = log.read_text(encoding="utf-8")
        assert proc.returncode == 0, output[-5000:]
        assert "strategy: multiworker, 2 replica(s), global batch 4 = 2 per replica" in output
    chief, other = tmp_path / "run", tmp_path / "run.worker1"
    assert (chief / "checkpoints" / "last.weights.h5").is_file()
    assert (other / "checkpoints" / "last.weights.h5").is_file()
    # Both workers report the same global loss.
    assert float(_log_rows(chief)[-1]["loss"]) == pytest.approx(
        float(_log_rows(other)[-1]["loss"]), rel=1e-5)


def test_strategy_errors(monkeypatch):
    """Clear errors: a strategy of the other backend, TF_CONFIG missing, uneven batch."""
    from train import strategy as strategy_lib  # pylint: disable=import-outside-toplevel

    with pytest.raises(ConfigError, match="needs KERAS_BACKEND=jax"):
        strategy_lib.make_strategy("jax_data_parallel")
    with pytest.raises(ConfigError, match="unknown train.strategy"):
        strategy_lib.make_strategy("horovod")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="needs TF_CONFIG"):
        strategy_lib.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="not a valid cluster"):
        strategy_lib.make_strategy("multiworker")
    monkeypatch.setattr(strategy_lib.keras.backend, "backend", lambda: "jax")
    with pytest.raises(ConfigError, match="does not run under the jax"):
        strategy_lib.make_strategy("mirrored")
    with pytest.raises(ConfigError, match="multiple of the 2 replicas"):
        strategy_lib.Distribution("mirrored", None, 2).check_batch(5)
    assert strategy_lib.make_strategy("default").num_replicas == 1


def test_jax_data_parallel():
    """Under KERAS_BACKEND=jax: DataParallel over every device; TF strategies refused."""
    code = ("from train.strategy import make_strategy\n"
            "from effdet_tf.errors import ConfigError\n"
            "import keras\n"
            "dist = make_strategy('jax_data_parallel')\n"
            "assert keras.distribution.distribution() is dist.distribution\n"
            "print('replicas', dist.num_replicas)\n"
            "try:\n"
            "    make_strategy('mirrored')\n"
            "except ConfigError as err:\n"
            "    print('refused:', err)\n")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120, check=False,
        env=_env(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas 2" in proc.stdout
    assert "refused: train.strategy=mirrored does not run under the jax" in proc.stdout


if __name__ == "__main__":
    if sys.argv[1] == "equivalence":
        _equivalence_main(sys.argv[2])
    else:
        _fit_main(sys.argv[2], sys.argv[3])
