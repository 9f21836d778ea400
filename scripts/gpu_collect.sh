#!/usr/bin/env bash
# Back here after a device call of scripts/gpu_train.sh: put the registered networks back (moved
# aside for the call), unpack the returned runs into models/runs/, recalibrate the batch norm of
# every returned last.keras on clean training faces (emotion_core.soup, into RUN-bn) and list
# their validation accuracy beside the default's. Publishing stays a decision (README "GPU
# sessions: stop 21's two calls, and the next one (prepared)": only a network that beats the
# default).
#   bash scripts/gpu_collect.sh FOLDER      (FOLDER: where the call's runs.tar.NN parts lie)
# Environment: PY (.venv/bin/python), DATA (the originals, not the WebP pack:
# ../shared/data/fer2013/fer2013.csv.gz), TAR (runs: the parts' name), ASIDE (/tmp/models-aside),
# EMOTION_MODELS_DIR (models).
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: gpu_collect.sh FOLDER (the folder that holds the runs.tar.NN parts)}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/fer2013/fer2013.csv.gz}
models=${EMOTION_MODELS_DIR:-models}
aside=${ASIDE:-/tmp/models-aside}
shopt -s nullglob
parts=("$src/${TAR:-runs}.tar."*)
if [ ${#parts[@]} = 0 ]; then
    echo "error: no ${TAR:-runs}.tar.* parts in $src" >&2
    exit 2
fi
if [ -d "$aside" ]; then  # the networks moved aside for the call; never over a file there
    mv -n "$aside"/* "$models"/ 2>/dev/null || true
fi
deleted=$(git ls-files --deleted -- "$models" 2>/dev/null || true)  # tracked, moved, not back
if [ -n "$deleted" ]; then
    # shellcheck disable=SC2086  # file names of the registry: no spaces
    git checkout -- $deleted
fi
mkdir -p "$models/runs"
runs=$(cat "${parts[@]}" | tar tf - | cut -d/ -f1 | sort -u | tr "\n" " ")
for run in $runs; do
    if [ -e "$models/runs/$run" ]; then
        echo "error: $models/runs/$run exists already; unpack these parts by hand" >&2
        exit 2
    fi
done
cat "${parts[@]}" | tar xf - -C "$models/runs"
echo "unpacked into $models/runs: $runs"
for run in $runs; do
    if [ -s "$models/runs/$run/last.keras" ]; then
        "$PY" -m emotion_core.soup "$models/runs/$run/last.keras" --data "$DATA" \
            --out "$models/runs/$run-bn" 2>&1 | grep -v "^WARNING" || true
    fi
done
"$PY" - "$models" $runs <<'PYEOF'
import csv, json, sys
from pathlib import Path
from emotion_core.registry import ModelError, default_model_name, read_card
models = Path(sys.argv[1])
try:
    card = read_card(default_model_name(models), models)
    print(f"default {card.name}: {card.val_accuracy:.2%} ({card.runtime}, as the app runs it)")
except ModelError as exc:
    print(f"no default to compare with: {exc}")
def accuracy(report):
    try:
        value = json.loads(report.read_text()).get("accuracy")
        return f"{float(value):.2%}"
    except (OSError, ValueError, TypeError, AttributeError):  # missing, cut short, not a figure
        return "unreadable"
def final_epoch(metrics):
    try:
        with open(metrics, newline="") as handle:
            rows = list(csv.DictReader(handle))
        return f"{float(rows[-1]['val_accuracy']):.2%}"
    except (OSError, ValueError, TypeError, KeyError, IndexError, csv.Error):
        return "unreadable"
for run in sys.argv[2:]:
    folder = models / "runs" / run
    if (folder / "metrics.csv").exists():  # with the augmented faces' batch-norm statistics
        print(f"{folder}: {final_epoch(folder / 'metrics.csv')} at its final epoch")
    if (folder / "eval.json").exists():  # train evaluates its best.keras when it ends
        print(f"{folder}: {accuracy(folder / 'eval.json')} at its best epoch (chosen on these faces)")
    if (folder.parent / f"{run}-bn" / "eval.json").exists():
        print(f"{folder}-bn: {accuracy(folder.parent / f'{run}-bn' / 'eval.json')} "
              "(the final epoch, batch norm recalibrated here)")
print("(run figures are the Keras network in float32; int8 weights moved the published ones by")
print(" up to two tenths of a point: vgg-m40-v3 71.64% -> 71.55%, vgg-m40-v4 71.77% -> 71.69%)")
PYEOF
