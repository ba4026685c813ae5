#!/usr/bin/env bash
# The assignment's experiment (issue #19) on a GPU box under JAX: `train.compare` of the
# two-head model against one single-head model per dataset, fruits and household, 512 px,
# 30 epochs, bfloat16, with the project's defaults (configs/fruits_household.yaml).
#
# Usage, from the repository root, TensorFlow (CPU build, for tf.data) and Keras installed:
#     bash train/gpu_compare.sh SECONDS [more train.compare arguments, e.g. --set ...]
# It stops after SECONDS (kill -9: a run's resume backup is written twice and survives
# it), so a time-limited call leaves a consistent state; running the same command again
# reuses the finished runs and resumes the interrupted one from its backup (written at
# most `train.save_interval_s`, 60 s, before the kill). XLA's compiled programs are kept
# in a persistent cache for the later processes (a resumed step compiled in 76 s instead
# of 179 s on an H200; docs/results.md).
#
# Settings (environment): DATA_ROOT (folder holding fruits/ and household/, default
# /root/data), CMP_DIR (the comparison folder, default /root/cmp), OUT (where the log
# and a tarball of the small result files go, default $CMP_DIR/out),
# JAX_COMPILATION_CACHE_DIR (default /root/jax_cache).
set -uo pipefail
limit=${1:?usage: bash train/gpu_compare.sh SECONDS [train.compare arguments]}
shift
data=${DATA_ROOT:-/root/data}
cmp=${CMP_DIR:-/root/cmp}
out=${OUT:-$cmp/out}
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/root/jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
mkdir -p "$cmp" "$out" "$JAX_COMPILATION_CACHE_DIR"
start=$(date +%s)
timeout -s KILL "$limit" python3 -m train.compare --config configs/fruits_household.yaml \
    --set "data.datasets.0.root=$data/fruits" --set "data.datasets.1.root=$data/household" \
    --set train.mixed_precision=true --out "$cmp" "$@" 2>&1 | tee -a "$out/compare.log"
rc=${PIPESTATUS[0]}
echo "train.compare exit status $rc after $(( $(date +%s) - start )) s" | tee -a "$out/compare.log"
# The small files of every run (summaries, logs, configs, plots), one tarball.
(cd "$cmp" && find . -path ./out -prune -o -type f \( -name summary.json -o -name log.csv \
    -o -name config.yaml -o -name 'comparison.*' -o -name '*.png' \) -print \
    | tar czf "$out/results.tgz" -T -)
du -sh "$JAX_COMPILATION_CACHE_DIR" | sed 's/^/compilation cache: /'
exit "$rc"
