"""Carry a checkpoint to a GPU machine at half its size, and rebuild it there.

A call carries at most 64 MiB and the data pack alone is ~55 MB, so a 15 MB `last.keras` to
fine-tune does not fit beside it; its weights as float16 (half the bytes) do:

    python scripts/f16_weights.py pack models/runs/m40-kd/last.keras .ft/m40.npz      # here
    python scripts/f16_weights.py restore vgg-m40 .ft/m40.npz /tmp/init.keras         # there

`restore` builds the zoo architecture (with its augmentation layer, as training saves it) and
loads the weights as float32; the outputs stay within ~1e-3 of the original's. Then
`train --init-model /tmp/init.keras` continues from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emotion_core.zoo import make_model  # noqa: E402  (registers FaceAugment for loading)


def pack(checkpoint: str, out: str) -> None:
    """Write every weight array of a .keras checkpoint as float16 into an .npz."""
    from emotion_core.inference import load_keras_model

    weights = load_keras_model(Path(checkpoint)).get_weights()
    np.savez(out, **{f"w{i}": w.astype(np.float16) for i, w in enumerate(weights)})
    print(f"{out}: {len(weights)} arrays, {Path(out).stat().st_size / 1e6:.1f} MB")


def restore(arch: str, packed: str, out: str) -> None:
    """Build `arch` from the zoo, load the packed weights as float32 and save it as .keras."""
    model = make_model(arch=arch, augment=True)
    with np.load(packed) as arrays:
        model.set_weights([arrays[f"w{i}"].astype(np.float32) for i in range(len(arrays.files))])
    model.save(out)
    print(f"{out}: {arch} rebuilt from {packed}")


if __name__ == "__main__":
    usage = "usage: f16_weights.py pack CHECKPOINT OUT.npz | restore ARCH IN.npz OUT.keras"
    if len(sys.argv) == 4 and sys.argv[1] == "pack":
        pack(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "restore":
        restore(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(usage)
