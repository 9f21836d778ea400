"""Model checks on real data: the shipped default model (regression guard) and its card."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_data import SHARED_DATA, write_fer_csv

from emotion_core.calibration import apply_temperature, expected_calibration_error
from emotion_core.data import load_dataset
from emotion_core.evaluate import predict_all, report_from_probs
from emotion_core.inference import load_classifier
from emotion_core.preprocess import preprocess_batch
from emotion_core.registry import MODELS_DIR, default_model_name, list_models, read_card

# Regression guard: the shipped default scored GUARD_MEASURED on the full PublicTest split when
# it was published (see its card); below GUARD this test fails.
GUARD_MEASURED = 0.7169  # vgg-m40-v4 (int8 weights); vgg-m40-v3 had 0.7155, fer-fast-v3 0.6854
# The flagship issue asks for 0.71. The guard is that, 0.69 points (25 of 3,589 images) under
# the measured figure: room for int8 rounding on another CPU.
GUARD = 0.71

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not (SHARED_DATA / "fer2013" / "fer2013.csv.gz").exists(),
        reason="../shared/data/fer2013 is not present",
    ),
]


@pytest.fixture(scope="module")
def public_test():
    data = load_dataset(SHARED_DATA / "fer2013" / "fer2013.csv.gz", "PublicTest")
    return preprocess_batch(data.images), data.labels


@pytest.fixture(scope="module")
def uncalibrated_probs(public_test):
    classifier = load_classifier(calibrated=False)
    return predict_all(classifier, public_test[0])


def test_card_matches_registry_and_file():
    card = read_card(default_model_name())
    assert (MODELS_DIR / f"{card.name}.keras").exists()
    assert card.val_accuracy is not None and card.cpu_ms_per_face is not None
    assert card.temperature > 0 and card.ece_after is not None


def test_shipped_default_accuracy_on_full_public_test(public_test, uncalibrated_probs):
    report = report_from_probs(uncalibrated_probs, public_test[1])
    assert report.n == 3589
    assert report.accuracy >= GUARD, report.accuracy
    card = read_card(default_model_name())
    assert report.accuracy == pytest.approx(card.val_accuracy, abs=0.002)


def test_temperature_makes_calibration_no_worse(public_test, uncalibrated_probs):
    card = read_card(default_model_name())
    before = expected_calibration_error(uncalibrated_probs, public_test[1])
    after = expected_calibration_error(
        apply_temperature(uncalibrated_probs, card.temperature), public_test[1]
    )
    assert after <= before + 1e-9


def test_calibrated_probabilities_are_valid(public_test):
    probs = load_classifier().predict(public_test[0][:64])
    assert probs.shape == (64, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_default_runs_on_its_cards_runtime_with_the_keras_outputs(public_test):
    card = read_card(default_model_name())
    fast = load_classifier(calibrated=False)
    assert fast.runtime == card.runtime and not fast.runtime_problem
    reference = load_classifier(calibrated=False, keras_only=True)
    faces = public_test[0][:512]
    if card.runtime == "tflite":  # float32 export: the Keras network's own outputs
        np.testing.assert_allclose(fast.predict(faces), reference.predict(faces), atol=1e-4)
    else:  # int8 weights: close, and nearly always the same label
        labels, keras_labels = fast.predict(faces).argmax(1), reference.predict(faces).argmax(1)
        assert (labels == keras_labels).mean() >= 0.98


@pytest.mark.parametrize("card", list_models(), ids=lambda card: card.name)
def test_every_registered_model_scores_what_its_card_says(card, public_test):
    classifier = load_classifier(card.name, calibrated=False)
    assert classifier.runtime == card.runtime and not classifier.runtime_problem
    report = report_from_probs(predict_all(classifier, public_test[0]), public_test[1])
    assert report.accuracy == pytest.approx(card.val_accuracy, abs=0.002)


def test_the_official_test_split_command_measures_the_shipped_default(tmp_path, public_test):
    """#3 is measured outside with `python -m emotion_core.evaluate --data <FER-2013 CSV> --split
    PrivateTest`: on a full-format CSV (all three usages; here PublicTest faces stand in for the
    PrivateTest rows we do not have) it scores the default model, without TTA."""
    data = load_dataset(SHARED_DATA / "fer2013" / "fer2013.csv.gz", "PublicTest")
    rows = [(int(label), image, "Training") for image, label in zip(data.images[:5], data.labels)]
    rows += [(int(label), image, usage) for usage in ("PublicTest", "PrivateTest")
             for image, label in zip(data.images[:300], data.labels[:300])]  # fmt: skip
    csv = write_fer_csv(tmp_path / "fer2013.csv", rows)
    proc = subprocess.run(
        [sys.executable, "-m", "emotion_core.evaluate", "--data", csv, "--split", "PrivateTest"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1],
        env=os.environ | {"EMOTION_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    expected = predict_all(load_classifier(), public_test[0][:300]).argmax(1) == data.labels[:300]
    assert last.startswith(f"accuracy={expected.mean():.4f} ") and last.endswith(" n=300"), last
    assert default_model_name() in proc.stdout
