"""Carry a checkpoint to a GPU machine at half its size (or a quarter), and rebuild it there.

A call carries at most 64 MiB and the data pack alone is ~40-55 MB, so a 15 MB `last.keras` to
fine-tune does not fit beside it; its weights as float16 (half the bytes) do:

    python scripts/f16_weights.py pack models/vgg-m40-v4.keras .next/start.npz      # here
    python scripts/f16_weights.py restore .next/start.npz /tmp/init.keras           # there

(`restore` takes several IN OUT pairs at once.)

A pack holds the network's own Keras config beside its weights, so `restore` rebuilds exactly
that network (a zoo architecture, with or without its augmentation layer, or a folded
inference form such as the registered fer-fast models) and loads the weights as float32; the
outputs stay within ~1e-3 of the original's. Then `train --init-model /tmp/init.keras`
continues from it (adding the augmentation layer if it has none).

`pack --int8` stores every kernel (conv, dense) as int8 with one float32 scale per output
channel (symmetric, max-abs), the rest as float16: a quarter of the bytes, for frozen teachers
that are only run (live distillation), not trained further.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import emotion_core.zoo  # noqa: E402, F401  (registers FaceAugment for loading)


def quantize(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 values (same shape) and float32 scales (out_channels,) of a kernel (..., out)."""
    flat = kernel.reshape(-1, kernel.shape[-1]).astype(np.float32)
    scales = np.abs(flat).max(axis=0) / 127.0
    scales[scales == 0] = 1.0
    return np.round(kernel / scales).clip(-127, 127).astype(np.int8), scales.astype(np.float32)


def pack(checkpoint: str, out: str, int8: bool = False) -> None:
    """Write every weight array of a .keras checkpoint as float16 (kernels as int8 with
    per-channel scales when int8) into an .npz."""
    from emotion_core.inference import load_keras_model

    model = load_keras_model(Path(checkpoint))
    weights = model.get_weights()
    arrays: dict[str, np.ndarray] = {"config": np.array(model.to_json())}
    for i, w in enumerate(weights):
        if int8 and w.ndim >= 2:
            arrays[f"q{i}"], arrays[f"s{i}"] = quantize(w)
        else:
            arrays[f"w{i}"] = w.astype(np.float16)
    np.savez_compressed(out, **arrays)
    print(f"{out}: {len(weights)} arrays, {Path(out).stat().st_size / 1e6:.1f} MB")


def unpack(arrays: np.lib.npyio.NpzFile) -> list[np.ndarray]:
    """The float32 weights of a packed .npz, in order."""
    count = sum(1 for name in arrays.files if name[0] in "wq")
    return [
        arrays[f"w{i}"].astype(np.float32)
        if f"w{i}" in arrays.files
        else arrays[f"q{i}"].astype(np.float32) * arrays[f"s{i}"]
        for i in range(count)
    ]


def restore(packed: str, out: str) -> None:
    """Rebuild the packed network from its config, load its weights as float32, save .keras."""
    import keras

    with np.load(packed) as arrays:
        if "config" not in arrays.files:
            sys.exit(f"{packed}: no network config in this pack (an older format); pack it again")
        model = keras.models.model_from_json(str(arrays["config"]))
        model.set_weights(unpack(arrays))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    print(f"{out}: {model.name} ({model.count_params():,} parameters) rebuilt from {packed}")


if __name__ == "__main__":
    usage = (
        "usage: f16_weights.py pack CHECKPOINT OUT.npz [--int8] | "
        "restore IN.npz OUT.keras [IN.npz OUT.keras ...]"
    )
    args = sys.argv[1:]
    from emotion_core.registry import ModelError

    try:
        if args[:1] == ["pack"] and (len(args) == 3 or (len(args) == 4 and args[3] == "--int8")):
            pack(args[1], args[2], int8=len(args) == 4)
        elif args[:1] == ["restore"] and len(args) >= 3 and len(args) % 2 == 1:
            for k in range(1, len(args), 2):  # several in one process: one Keras start-up
                restore(args[k], args[k + 1])
        else:
            sys.exit(usage)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, ModelError) as exc:  # bad file
        sys.exit(f"error: {exc}")
