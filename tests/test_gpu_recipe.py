"""scripts/gpu_train.sh, the lent-GPU recipe, tried here with the TensorFlow backend."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers_data import synthetic_csv, tiny_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_concurrent_runs_come_back_slim_and_a_failed_run_fails_the_script(tmp_path):
    csv = synthetic_csv(tmp_path / "fer.csv")
    spec = tmp_path / "spec.txt"
    init = tmp_path / "init.keras"  # written by BEFORE_RUNS, fine-tuned by run c
    spec.write_text(
        "# three runs at once, and one that cannot start\n"
        "\n"
        "a:last --arch tiny --batch-size 16 --no-augment\n"
        "b --arch tiny --batch-size 32 --optimizer sgd --lr 0.01 --no-augment\n"
        f"c:last --arch tiny --init-model {init} --batch-size 16 --no-augment\n"
        "broken --arch no-such-net\n"
    )
    out = tmp_path / "out"
    env = os.environ | {
        "PYTHON": sys.executable, "WHEELS": "", "KERAS_BACKEND": "tensorflow", "DATA": str(csv),
        "RUNS_DIR": str(tmp_path / "runs"), "OUT": str(out),
        "EMOTION_CACHE_DIR": str(tmp_path / "cache"), "TAR": "stage1",
        # NOTE: every run must end by its 4 s budget; the hard stop, far behind it (TensorFlow's
        # import and a first epoch of three runs at once can take a minute on a loaded VM),
        # must not be what ends one
        "HARD_STOP_S": "150",
        "AFTER_RUNS": f"{sys.executable} -m emotion_core.distill --data {csv} "
        f"--teacher {tmp_path}/runs/a/last.keras --teacher {tmp_path}/runs/b/last.keras "
        "--out $OUT/ensemble.npz",
        "BEFORE_RUNS": f"{sys.executable} -c \"from emotion_core.zoo import make_model; "
        f"make_model(arch='tiny', augment=False).save('{init}')\"",
    }  # fmt: skip
    proc = subprocess.run(
        ["bash", "scripts/gpu_train.sh", "4", str(spec)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the broken run
    assert "stopped by the hard limit" not in proc.stdout, proc.stdout  # ended by the budget
    assert (tmp_path / "cache").is_dir()  # the caller's cache, not /tmp/cache
    parts = sorted(out.glob("stage1.tar.*"))
    assert parts
    assert "ensemble of 2 agrees with the labels" in proc.stdout
    with np.load(out / "ensemble.npz") as ensemble:  # made on the machine, from the new nets
        assert ensemble["probs"].shape == (70, 7)
    joined = tmp_path / "joined.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    back = tmp_path / "back"
    with tarfile.open(joined) as archive:
        archive.extractall(back, filter="data")
    import keras

    import emotion_core.zoo  # noqa: F401  registers FaceAugment

    assert not (back / "a" / "best.keras").exists()  # a:last keeps only its last epoch
    for name in ("a", "b"):
        run = back / name
        for file in ("hparams.json", "metrics.csv", "train.log", "last.keras"):
            assert (run / file).exists(), (name, file)
        assert (run / "best.keras").exists() == (name == "b")
        model = keras.saving.load_model(run / "last.keras", safe_mode=True)
        assert getattr(model, "optimizer", None) is None  # slimmed for the trip back
    assert "unknown architecture" in (back / "broken" / "train.log").read_text()
    assert "== before the runs" in proc.stdout
    assert (back / "c" / "last.keras").exists()
    assert json.loads((back / "c" / "hparams.json").read_text())["init_model"] == str(init)


def _f16_tool(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/f16_weights.py", *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "size_ratio", "atol"), [((), 0.55, 2e-3), (("--int8",), 0.3, 2e-2)]
)
def test_a_checkpoint_travels_as_float16_or_int8_and_is_rebuilt_with_the_same_predictions(
    tmp_path, flags, size_ratio, atol
):
    import keras

    from emotion_core.inference import load_keras_model
    from emotion_core.zoo import make_model

    keras.utils.set_random_seed(3)
    original = make_model(arch="vgg-s", augment=True)
    original.save(tmp_path / "last.keras")
    # registered fer-fast networks are published folded (no batch norm, no augmentation
    # layer): the pack carries each network's own config, so no architecture is named
    folded = make_model(arch="fer-fast-folded")
    folded.save(tmp_path / "folded.keras")
    packed, rebuilt, again = tmp_path / "w.npz", tmp_path / "init.keras", tmp_path / "t" / "2.keras"
    packed_folded, rebuilt_folded = tmp_path / "f.npz", tmp_path / "t" / "folded.keras"
    for args in (
        ["pack", tmp_path / "last.keras", packed, *flags],
        ["pack", tmp_path / "folded.keras", packed_folded, *flags],
        # several in one call
        ["restore", packed, rebuilt, packed, again, packed_folded, rebuilt_folded],
    ):
        proc = _f16_tool(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert packed.stat().st_size < size_ratio * (tmp_path / "last.keras").stat().st_size
    faces = np.random.default_rng(0).random((16, 48, 48, 1), dtype=np.float32)
    for before_model, after_file in ((original, rebuilt), (folded, rebuilt_folded)):
        before = before_model.predict(faces, verbose=0)
        after_model = load_keras_model(after_file)
        assert [layer.name for layer in after_model.layers] == [
            layer.name for layer in before_model.layers
        ]
        after = after_model.predict(faces, verbose=0)
        np.testing.assert_allclose(after, before, atol=atol)
        assert (after.argmax(1) == before.argmax(1)).mean() >= 0.9
    np.testing.assert_array_equal(
        load_keras_model(again).predict(faces, verbose=0),
        load_keras_model(rebuilt).predict(faces, verbose=0),
    )


def test_a_pack_without_a_network_config_is_refused_with_a_clear_message(tmp_path):
    old = tmp_path / "old.npz"
    np.savez(old, w0=np.zeros((3, 3), np.float16))  # an older pack: weights only
    proc = _f16_tool("restore", old, tmp_path / "out.keras")
    assert proc.returncode != 0
    assert "no network config in this pack (an older format)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.keras").exists()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(b"PK\x03\x04" + bytes(40))
    for args in (  # a missing or broken file: one line, no traceback
        ["restore", tmp_path / "missing.npz", tmp_path / "out.keras"],
        ["pack", tmp_path / "missing.keras", tmp_path / "out.npz"],
        ["restore", truncated, tmp_path / "out.keras"],
    ):
        proc = _f16_tool(*args)
        assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith("error:")
        assert "Traceback" not in proc.stderr


def test_the_float16_tool_says_how_to_call_it():
    for args in (["pack"], ["restore", "vgg-m40", "in.npz", "out.keras"]):  # old triple form
        proc = _f16_tool(*args)
        assert proc.returncode != 0 and "usage: f16_weights.py pack" in proc.stderr


def test_a_failed_before_runs_command_stops_the_script_before_any_training(tmp_path):
    env = os.environ | {
        "PYTHON": sys.executable, "WHEELS": "", "KERAS_BACKEND": "tensorflow",
        "RUNS_DIR": str(tmp_path / "runs"), "OUT": str(tmp_path / "out"),
        "BEFORE_RUNS": "echo cannot rebuild the start point >&2; exit 3",
    }  # fmt: skip
    spec = tmp_path / "spec.txt"
    spec.write_text("a --arch tiny\n")
    proc = subprocess.run(
        ["bash", "scripts/gpu_train.sh", "4", str(spec)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "cannot rebuild the start point" in proc.stderr
    assert "started a" not in proc.stdout and not (tmp_path / "runs" / "a").exists()


def test_a_run_the_hard_stop_ends_mid_training_keeps_its_checkpoint_and_does_not_fail(tmp_path):
    csv = synthetic_csv(tmp_path / "fer.csv")
    spec = tmp_path / "spec.txt"
    spec.write_text("a:last --arch tiny --batch-size 16 --no-augment\n")
    # NOTE: the budget (900 s) far outlasts the hard stop (900 - 810 = 90 s after the start), so
    # the run is still training when timeout sends SIGTERM; 90 s leave a loaded 2-core VM time
    # for TensorFlow's import, the first epoch and its checkpoint (~20 s at a load of 5).
    env = os.environ | {
        "PYTHON": sys.executable, "WHEELS": "", "KERAS_BACKEND": "tensorflow", "DATA": str(csv),
        "RUNS_DIR": str(tmp_path / "runs"), "OUT": str(tmp_path / "out"),
        "EMOTION_CACHE_DIR": str(tmp_path / "cache"), "HARD_STOP_S": "-810",
    }  # fmt: skip
    proc = subprocess.run(
        ["bash", "scripts/gpu_train.sh", "900", str(spec)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "a: stopped by the hard limit (budget + -810 s); kept its checkpoints" in proc.stdout
    assert (tmp_path / "runs" / "a" / "last.keras").exists()
    assert list((tmp_path / "out").glob("runs.tar.*"))


def test_the_callers_cache_is_kept_and_the_wheels_folder_is_imported_only_once_filled(tmp_path):
    # a stand-in interpreter: "installs" the wheels, then shows the environment keras would get
    fake = tmp_path / "python3"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = -m ] && exit 0\n'
        'echo "PYTHONPATH=$PYTHONPATH"; echo "CACHE=$EMOTION_CACHE_DIR"; exit 1\n'
    )
    fake.chmod(0o755)
    spec = tmp_path / "spec.txt"
    spec.write_text("a --arch tiny\n")
    base = {"PATH": os.environ["PATH"], "PYTHON": str(fake), "OUT": str(tmp_path / "out")}

    def environment(**extra: str) -> list[str]:
        proc = subprocess.run(
            ["bash", "scripts/gpu_train.sh", "4", str(spec)],
            capture_output=True, text=True, cwd=ROOT, env=base | extra, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 1 and "started a" not in proc.stdout, proc.stdout + proc.stderr
        return [
            line for line in proc.stdout.splitlines() if line.startswith(("PYTHONPATH=", "CACHE="))
        ]

    assert environment(WHEELS="") == [f"PYTHONPATH={ROOT}", "CACHE=/tmp/cache"]
    site, cache = tmp_path / "site", tmp_path / "cache"
    assert environment(
        WHEELS="x.whl", SITE=str(site), EMOTION_CACHE_DIR=str(cache), PYTHONPATH="/elsewhere"
    ) == [f"PYTHONPATH={site}:{ROOT}:/elsewhere", f"CACHE={cache}"]


def test_collect_unpacks_the_returned_runs_recalibrates_them_and_restores_the_registry(tmp_path):
    from emotion_core.train import train

    csv = synthetic_csv(tmp_path / "fer.csv")
    trained = tmp_path / "device" / "runs"
    train(tiny_config(csv, arch="fer-fast", epochs=1), trained / "live-hi")
    call = tmp_path / "call"  # what the device call returned: the tar in 15 MB parts
    call.mkdir()
    subprocess.run(
        f"tar cf - live-hi | split -b 1M -d - {call}/runs.tar.",
        shell=True, check=True, cwd=trained,
    )  # fmt: skip
    models, aside = tmp_path / "models", tmp_path / "aside"
    models.mkdir()
    aside.mkdir()
    (aside / "kept.keras").write_bytes(b"a registered network, moved aside for the call")
    env = os.environ | {
        "PY": sys.executable, "DATA": str(csv), "EMOTION_MODELS_DIR": str(models),
        "ASIDE": str(aside), "EMOTION_CACHE_DIR": str(tmp_path / "cache"),
    }  # fmt: skip
    collect = ["bash", "scripts/gpu_collect.sh", str(call)]
    proc = subprocess.run(collect, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (models / "kept.keras").read_bytes().startswith(b"a registered network")
    assert (models / "runs" / "live-hi" / "last.keras").exists()
    recalibrated = models / "runs" / "live-hi-bn"
    assert (recalibrated / "last.keras").exists() and (recalibrated / "eval.json").exists()
    assert "no default to compare with" in proc.stdout
    assert f"{recalibrated}: " in proc.stdout and "%" in proc.stdout.split(f"{recalibrated}: ")[1]
    # the returned run's final epoch and its best one (picked on the validation faces) apart
    lines = proc.stdout.splitlines()
    run_lines = [line for line in lines if line.startswith(f"{models / 'runs' / 'live-hi'}: ")]
    assert all(line.endswith(("final epoch", "(chosen on these faces)")) for line in run_lines)
    assert len(run_lines) == 2 and "final epoch" in run_lines[0] and "best epoch" in run_lines[1]
    # run twice, it refuses to unpack over the runs, and an empty folder is an error too
    again = subprocess.run(collect, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert again.returncode == 2 and "exists already" in again.stderr
    empty = subprocess.run(
        [*collect[:2], str(tmp_path)], capture_output=True, text=True, cwd=ROOT, env=env,
        timeout=300,
    )  # fmt: skip
    assert empty.returncode == 2 and "no runs.tar.* parts" in empty.stderr


def test_the_prepared_next_call_restores_every_network_its_runs_use():
    """The next GPU session gets one call: its runs must find each network BEFORE_RUNS rebuilds,
    from the packs gpu_prepare.sh makes by default (START as start.npz, TEACHERS as t-*.npz)."""
    lines = (ROOT / "scripts" / "gpu_runs" / "next.txt").read_text().splitlines()
    command = next(line for line in lines if "BEFORE_RUNS=" in line).lstrip("# ")
    before = shlex.split(command)[0].removeprefix("BEFORE_RUNS=")
    words = before.split()
    assert words[:2] == ["python3", "scripts/f16_weights.py"] and words[2] == "restore"
    restored = dict(zip(words[4::2], words[3::2], strict=True))  # network -> pack
    assert "bash scripts/gpu_train.sh 450 scripts/gpu_runs/next.txt" in command
    runs = [line for line in lines if line.strip() and not line.startswith("#")]
    assert len(runs) >= 1
    for run in runs:
        for network in re.findall(r"/tmp/\S+?\.keras", run):
            assert network in restored, f"{network} is used but not rebuilt"
    prepare = (ROOT / "scripts" / "gpu_prepare.sh").read_text()
    teachers = re.search(r"^TEACHERS=\$\{TEACHERS:-([^}]*)\}", prepare, re.M)
    assert teachers and re.search(r"^START=\$\{START:-\$DEFAULT_START\}", prepare, re.M)
    assert re.search(r"^DEFAULT_START=[\w.-]+$", prepare, re.M)
    made = {".next/start.npz"} | {f".next/t-{name}.npz" for name in teachers.group(1).split()}
    assert set(restored.values()) <= made, set(restored.values()) - made
