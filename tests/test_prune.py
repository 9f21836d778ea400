"""Model checks of channel pruning (emotion_core.prune) on small random VGG-BN networks."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_data import synthetic_csv

from emotion_core.inference import compile_call
from emotion_core.prune import main, prune_vgg, vgg_layout
from emotion_core.registry import ModelError
from emotion_core.zoo import make_model, make_vgg_model

FACES = np.random.default_rng(5).random((6, 48, 48, 1), dtype=np.float32)


def small_vgg(augment: bool = False):
    import keras

    keras.utils.set_random_seed(1)
    return make_vgg_model(augment=augment, width=8, convs_per_stage=(2, 1, 1, 1), name="vgg-t")


def silence_half_the_channels(model):
    """Zero gamma and beta of every odd channel: those channels output relu(0) = 0."""
    from keras import layers

    for bn in [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)][
        :-1
    ]:
        gamma, beta, mean, var = bn.get_weights()
        gamma[1::2], beta[1::2] = 0.0, 0.0
        gamma[0::2] += 1.0  # clearly more important than the silenced ones
        bn.set_weights([gamma, beta, mean, var])


def test_layout_and_keeping_everything_changes_nothing():
    model = small_vgg()
    assert vgg_layout(model) == (8, (2, 1, 1, 1))
    same = prune_vgg(model, 1.0)
    np.testing.assert_allclose(compile_call(same)(FACES), compile_call(model)(FACES), atol=1e-6)
    with pytest.raises(ModelError, match="VGG-BN network"):
        vgg_layout(make_model(arch="fer-fast-folded"))  # batch norm folded away
    with pytest.raises(ModelError, match="keep must be"):
        prune_vgg(model, 0.0)


def test_pruning_drops_the_least_important_channels():
    model = small_vgg(augment=True)
    silence_half_the_channels(model)
    pruned = prune_vgg(model, 0.5)
    assert vgg_layout(pruned) == (4, (2, 1, 1, 1)) and pruned.name == "vgg-t-p4"
    assert any(layer.name == "augment" for layer in pruned.layers)
    assert pruned.count_params() < model.count_params() / 2
    # the silenced channels carried nothing, so the narrower net computes the same function
    np.testing.assert_allclose(compile_call(pruned)(FACES), compile_call(model)(FACES), atol=1e-5)


def test_cli_writes_the_pruned_network_and_says_how_it_scores(tmp_path, capsys):
    csv = synthetic_csv(tmp_path / "fer.csv")
    small_vgg().save(tmp_path / "src.keras")
    out = tmp_path / "pruned.keras"
    args = ["--keep", "0.5", "--data", str(csv), "--out", str(out)]
    assert main([str(tmp_path / "src.keras"), *args]) == 0
    assert out.exists() and "PublicTest accuracy" in capsys.readouterr().out
    # batch norm recalibrated on the clean training faces: the statistics differ from the source's
    from keras import layers

    from emotion_core.inference import load_keras_model

    means = [
        [np.asarray(bn.moving_mean) for bn in m.layers if isinstance(bn, layers.BatchNormalization)]
        for m in (load_keras_model(tmp_path / "src.keras"), load_keras_model(out))
    ]
    assert not np.allclose(means[0][-1], means[1][-1])  # the dense head's layer keeps its width
    assert main([str(tmp_path / "missing.keras"), *args]) == 2
    assert "missing.keras: model file not found" in capsys.readouterr().err
