#!/usr/bin/env bash
# Run ON the lent GPU machine, from the repo root, after scripts/gpu_prepare.sh here and with
# `.gpu` and `.whl` carried:   bash scripts/gpu_train.sh BUDGET_S SPEC_FILE
# SPEC_FILE has one run per line, `NAME[:KEEP] [train args...]` ('#' starts a comment), e.g.
#   ff-adamw --arch fer-fast --optimizer adamw --lr 0.002 --weight-decay 0.01
#   vgg-l:none --arch vgg-l      (KEEP: the checkpoints that come back: best,last (default),
#                                 last, best or none; metrics, hparams and logs always do)
# All runs train AT THE SAME TIME on the one GPU (small nets leave most of it idle) with the JAX
# backend, each for BUDGET_S seconds of wall time (its cosine anneals to it; a hard stop sends
# SIGTERM 60 s later, which train handles by stopping and keeping its checkpoints). Then every
# run folder (metrics, hparams, eval, log, and best.keras/last.keras without optimizer state, to
# fit the 64 MB that comes back) is packed into runs.tar.NN parts of <= 15 MB under $OUT.
# Join them here:
#   cat runs.tar.* | tar xf - -C models/runs
# Environment: PYTHON (python3), OUT, WHEELS ("" when keras is installed), SITE (/tmp/site: the
# wheels go there, and it goes first on PYTHONPATH only when they are installed; then the repo,
# then the caller's PYTHONPATH), EMOTION_CACHE_DIR (/tmp/cache), DATA (.gpu/fer.npz),
# RUNS_DIR (/tmp/runs), HARD_STOP_S (60: the hard stop's delay after the budget; a run it stops
# that kept a checkpoint does not fail the script), KERAS_BACKEND (jax), TAR (runs: the parts'
# name, so that two scripts in one call do not collide), AFTER_RUNS (a command run once the
# runs end, in the same Python environment, before packing; e.g. an ensemble teacher from the
# new nets, written under $OUT:
#   AFTER_RUNS='python3 -m emotion_core.distill --teacher /tmp/runs/a/last.keras
#               --teacher /tmp/runs/b/last.keras --data .gpu/fer.npz --out $OUT/ensemble.npz'),
# BEFORE_RUNS (a command run first, in that environment; if it fails nothing trains; e.g. the
# start point of a fine-tune, carried as float16 weights:
#   BEFORE_RUNS='python3 scripts/f16_weights.py restore .next/start.npz /tmp/init.keras').
set -uo pipefail
budget=$1 spec=$2
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/out}
wheels=${WHEELS-.whl/*.whl}  # WHEELS="" where keras is installed already (a local try-out)
site=${SITE:-/tmp/site}     # where the wheels go; on the import path only when installed here
pythonpath=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -n "$wheels" ]; then
    # shellcheck disable=SC2086  # a glob on purpose
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" $wheels || exit 1
    pythonpath=$site:$pythonpath
fi
export PYTHONPATH="$pythonpath" KERAS_BACKEND=${KERAS_BACKEND:-jax} \
    XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 \
    EMOTION_CACHE_DIR=${EMOTION_CACHE_DIR:-/tmp/cache}
nvidia-smi -L || echo "no NVIDIA GPU visible"
"$PY" -c "import keras; print('keras', keras.__version__, 'backend', keras.backend.backend())" \
    || exit 1
runs=${RUNS_DIR:-/tmp/runs}
hard_stop=${HARD_STOP_S:-60}
mkdir -p "$runs" "$OUT"
if [ -n "${BEFORE_RUNS:-}" ]; then
    echo "== before the runs: $BEFORE_RUNS"
    OUT="$OUT" bash -c "$BEFORE_RUNS" || exit 1
fi
names=() pids=() keeps=()
while read -r name args; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    keep=best,last
    if [[ "$name" == *:* ]]; then keep=${name#*:} name=${name%%:*}; fi
    keeps+=("$keep")
    mkdir -p "$runs/$name"
    # shellcheck disable=SC2086  # the spec line's arguments are split on purpose
    timeout -s TERM -k 30 $((budget + hard_stop)) "$PY" -m emotion_core.train \
        --data "${DATA:-.gpu/fer.npz}" --epochs 100000 --patience 0 --time-budget "$budget" \
        --out "$runs/$name" $args \
        >"$runs/$name/train.log" 2>&1 &
    pids+=($!)
    names+=("$name")
    echo "started $name: $args"
done <"$spec"
status=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    rc=$?
    if [ "$rc" = 124 ] && [ -s "$runs/${names[$i]}/last.keras" ]; then
        # timeout's code: the hard stop came mid-epoch; train stopped and kept its checkpoints
        echo "${names[$i]}: stopped by the hard limit (budget + $hard_stop s); kept its checkpoints"
    elif [ "$rc" != 0 ]; then
        status=1  # a failed run fails the script; the others still come back
    fi
done
for name in "${names[@]}"; do
    echo "== $name"
    tail -n 3 "$runs/$name/train.log"
    tail -n 2 "$runs/$name/metrics.csv" 2>/dev/null
done
if [ -n "${AFTER_RUNS:-}" ]; then
    echo "== after the runs: $AFTER_RUNS"
    OUT="$OUT" bash -c "$AFTER_RUNS" || status=1
fi
# Only the checkpoints each run keeps, without optimizer state (a third of the size; a live-
# distillation run's optimizer.npz stays there too); --init-model or --resume continue them.
for i in "${!names[@]}"; do
    for checkpoint in best last; do
        [[ ",${keeps[$i]}," == *",$checkpoint,"* ]] || rm -f "$runs/${names[$i]}/$checkpoint.keras"
    done
done
"$PY" - "$runs" <<'PYEOF'
import pathlib, sys
from emotion_core.inference import load_keras_model
for path in sorted(pathlib.Path(sys.argv[1]).glob("*/*.keras")):
    load_keras_model(path).save(path)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
PYEOF
(cd "$runs" && tar cf - --exclude=CANCEL --exclude=optimizer.npz "${names[@]}") | split -b 15M -d - "$OUT/${TAR:-runs}.tar."
ls -l "$OUT"
exit "$status"
