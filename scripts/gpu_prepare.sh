#!/usr/bin/env bash
# Prepare a training run on a lent GPU machine (JAX, no TensorFlow, no internet, <= 64 MiB per
# call): the Keras wheel and its small pure-Python needs for the machine's Python 3.12 in .whl/,
# and FER-2013 train + validation as a compact WebP pack in .gpu/fer.npz: the Training faces
# lossy at TRAINING_QUALITY (default 95: ~39 MB in all, 45 dB PSNR, which leaves room for frozen
# teachers in the same call; 101: lossless, ~55 MB), the validation faces lossless; and the
# next call's start point and frozen teachers (scripts/gpu_runs/next.txt) in .next/, packed from
# the registered networks: START as float16, TEACHERS with int8 kernels (f16_weights.py).
# The folders are git-ignored; carry them with the device call, then run scripts/gpu_train.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2  # no TensorFlow start-up lines
DATA=${DATA:-../shared/data/fer2013/fer2013.csv.gz}
mkdir -p .whl .gpu
# The versions installed here, pinned: two versions of one wheel in .whl would make the
# machine's `pip install .whl/*.whl` fail, so the folder is refilled from scratch.
pins=$("$PY" -c "from importlib.metadata import version as v; \
print(' '.join(f'{p}=={v(p)}' for p in ('keras', 'namex', 'optree')))")
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$PY" -m pip download --quiet --dest "$fresh" --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 $pins
rm -f .whl/*.whl  # only once the new ones are here: an unreachable index keeps the old ones
mv "$fresh"/*.whl .whl/
# Each pack is rebuilt when what it was made from changes: a .from file beside it says what
# (a pack from before these files is taken to be of the defaults).
data_from="$DATA quality ${TRAINING_QUALITY:-95}"
default_data_from="../shared/data/fer2013/fer2013.csv.gz quality 95"
if [ ! -s .gpu/fer.npz ] || [ "$(cat .gpu/fer.npz.from 2>/dev/null || echo "$default_data_from")" != "$data_from" ]; then
    "$PY" -c "import sys; from emotion_core.data import pack_npz; \
pack_npz(sys.argv[1], '.gpu/fer.npz', splits=('Training', 'PublicTest'), compact=True, \
training_quality=int(sys.argv[2]))" "$DATA" "${TRAINING_QUALITY:-95}"
    echo "$data_from" > .gpu/fer.npz.from
fi
DEFAULT_START=vgg-m40-v4
START=${START:-$DEFAULT_START}
TEACHERS=${TEACHERS:-vgg-m40-v3 vgg-m40-v2 vgg-s3-v1 vgg-m-v1 fer-fast-v4}
mkdir -p .next
pack() {  # network, pack file, what an unmarked pack is of, [--int8]: (re)packed when missing,
          # older than the network or of another one
    if [ ! -s "$2" ] || [ "models/$1.keras" -nt "$2" ] \
        || [ "$(cat "$2.from" 2>/dev/null || echo "$3")" != "$1" ]; then
        "$PY" scripts/f16_weights.py pack "models/$1.keras" "$2" "${@:4}"
        echo "$1" > "$2.from"
    fi
}
pack "$START" .next/start.npz "$DEFAULT_START"
for teacher in $TEACHERS; do
    pack "$teacher" ".next/t-$teacher.npz" "$teacher" --int8
done
shopt -s nullglob
for old in .next/t-*.npz; do  # teachers of an earlier list would travel (and count) too
    name=${old#.next/t-}
    case " $TEACHERS " in *" ${name%.npz} "*) ;; *) rm -f "$old" "$old.from"; echo "removed $old" ;; esac
done
shopt -u nullglob
ls -l .whl .gpu .next
# A device call takes the working tree (tracked and untracked-not-ignored files) plus the carried
# folders, 64 MiB in all: say how close this is.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
limit=$((64 * 1024 * 1024))
# The registered networks are tracked, so they travel too; a training call does not need them.
models=$(du -cb models/*.keras models/*.tflite 2>/dev/null | tail -1 | cut -f1)
report() {  # label, bytes
    echo "a call carrying $1 takes $(($2 / 1000)) kB of the $((limit / 1000)) kB allowed"
    if [ "$2" -gt "$limit" ]; then
        echo "  over the limit; without the registered networks ($((models / 1000)) kB) it is" \
            "$((($2 - models) / 1000)) kB: before the call run" >&2
        echo "  mkdir -p /tmp/models-aside && mv models/*.keras models/*.tflite /tmp/models-aside/" >&2
        echo "  and after it: git checkout -- models/" >&2
    fi
}
base=$((tree + $(du -cb .gpu .whl | tail -1 | cut -f1)))
report ".gpu and .whl (tree $((tree / 1000)) kB)" "$base"
if [ -d .next ]; then
    report ".gpu, .whl and .next" $((base + $(du -sb .next | cut -f1)))
fi
