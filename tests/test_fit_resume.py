"""Training resumes after kill -9: the same command continues from the backup."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from effdet_tf.config import dump_config
from tests.backbones import STAND_IN_MAX_BYTES, stand_in_env
from tests.conftest import REPO_ROOT
from tests.tiny_run import sample_data, tiny_config


@pytest.fixture(name="sample", scope="module")
def fixture_sample(tmp_path_factory):
    """Small sample datasets (16 train, 8 val, 8 test images per dataset)."""
    return sample_data(tmp_path_factory)


@pytest.mark.slow
def test_resume_after_kill(sample, tmp_path):
    """kill -9 after the first epoch; the same command continues from the backup."""
    cfg_file = tmp_path / "tiny.yaml"
    # Backup every epoch (the default interval would not write one before the end).
    cfg = tiny_config(sample["root"], tmp_path / "run",
                      ["train.epochs=3", "train.save_interval_s=0"])
    cfg_file.write_text(dump_config(cfg), encoding="utf-8")
    command = [sys.executable, "-m", "train.fit", "--config", str(cfg_file), "--quiet"]
    meta = tmp_path / "run" / "backup" / "training_metadata.json"
    env = stand_in_env()  # resuming does not depend on the backbone; tiny backups
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, env=env,
                          stderr=subprocess.DEVNULL, start_new_session=True) as proc:
        deadline = time.time() + 900
        while time.time() < deadline and proc.poll() is None:
            if meta.is_file() and json.loads(meta.read_text(encoding="utf-8"))["epoch"] >= 1:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "training ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "run" / "model.keras").exists()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=1200, check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(resuming)" in done.stdout
    with open(tmp_path / "run" / "log.csv", encoding="utf-8") as stream:
        epochs = [int(row["epoch"]) for row in csv.DictReader(stream)]
    assert epochs == [0, 1, 2]  # each epoch logged once: rows after the backup went
    assert 0 < (tmp_path / "run" / "model.keras").stat().st_size < STAND_IN_MAX_BYTES
