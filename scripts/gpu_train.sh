#!/usr/bin/env bash
# Run ON the lent GPU machine, from the repo root, after scripts/gpu_prepare.sh here and with
# `.gpu` and `.whl` carried:   bash scripts/gpu_train.sh NAME BUDGET_S [train args...]
# e.g.  bash scripts/gpu_train.sh vgg-m 480 --arch vgg-m --optimizer sgd --lr 0.01
# Trains with the JAX backend for BUDGET_S seconds (wall-time cosine), then puts the run folder
# (best.keras, last.keras, metrics, hparams, eval, log) under $OUT as NAME.tar.NN parts of
# <= 15 MB. Join them here: cat NAME.tar.* | tar xf - -C models/runs/NAME
set -uo pipefail
name=$1 budget=$2
shift 2
PY=${PYTHON:-python3}
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site ${WHEELS:-.whl/*.whl} || exit 1
export PYTHONPATH="/tmp/site:$PWD" KERAS_BACKEND=${KERAS_BACKEND:-jax} XLA_PYTHON_CLIENT_PREALLOCATE=false \
    PYTHONUNBUFFERED=1 EMOTION_CACHE_DIR=/tmp/cache
nvidia-smi -L || echo "no NVIDIA GPU visible"
"$PY" -c "import keras; print('keras', keras.__version__, 'backend', keras.backend.backend())" \
    || exit 1
run=/tmp/runs/$name
mkdir -p "$run"
"$PY" -m emotion_core.train --data .gpu/fer.npz --epochs 100000 --patience 0 \
    --time-budget "$budget" --out "$run" "$@" 2>&1 | tee "$run/train.log"
status=${PIPESTATUS[0]}
(cd "$run" && tar cf - ./*.json ./*.csv ./*.keras train.log) | split -b 15M -d - "${OUT:-/tmp/out}/$name.tar."
ls -l "${OUT:-/tmp/out}"
exit "$status"
