"""emotion_core.train's learning-rate schedule: a linear warm-up ramp over the first epochs, then
a cosine from the base rate down to a 1% floor (or a constant rate), driven by the fraction of
the run done: epochs done / epochs, or, with a time budget, elapsed seconds / budget."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from emotion_core.train import TrainConfig, _make_callbacks, lr_at

LR = 0.01


def config(**overrides: Any) -> TrainConfig:
    return TrainConfig(data="unused.csv", learning_rate=LR, **overrides)


def test_warm_up_ramps_linearly_below_the_base_rate_whatever_the_progress() -> None:
    cfg = config(warmup_epochs=3)
    ramp = [lr_at(cfg, epoch, progress=0.0) for epoch in range(3)]
    assert ramp == pytest.approx([LR / 4, 2 * LR / 4, 3 * LR / 4])
    # the ramp is by epoch only: a time budget half spent does not shorten or lower it
    assert [lr_at(cfg, epoch, progress=0.5) for epoch in range(3)] == pytest.approx(ramp)
    assert all(rate < LR for rate in ramp)


def test_no_warm_up_starts_at_the_base_rate() -> None:
    assert lr_at(config(warmup_epochs=0), 0, 0.0) == pytest.approx(LR)


def test_cosine_runs_from_the_base_rate_to_a_one_percent_floor() -> None:
    cfg = config(warmup_epochs=2)
    assert lr_at(cfg, 2, 0.0) == pytest.approx(LR)  # the first epoch after the warm-up
    assert lr_at(cfg, 10, 0.5) == pytest.approx(LR * (0.01 + 0.99 * 0.5))
    assert lr_at(cfg, 10, 0.25) == pytest.approx(
        LR * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 4)))
    )
    assert lr_at(cfg, 99, 1.0) == pytest.approx(LR * 0.01)
    # past the end (a budget overrun, a resumed run given fewer epochs): the floor, not a rise
    assert lr_at(cfg, 99, 1.7) == pytest.approx(LR * 0.01)
    rates = [lr_at(cfg, 5, p / 100) for p in range(0, 151)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))  # never rises
    assert min(rates) == pytest.approx(LR * 0.01) and min(rates) > 0


def test_a_constant_schedule_keeps_the_base_rate_after_the_warm_up() -> None:
    cfg = config(schedule="constant", warmup_epochs=1)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(LR / 2)
    assert [lr_at(cfg, 5, p) for p in (0.0, 0.5, 1.0, 2.0)] == pytest.approx([LR] * 4)


class _Rate:
    def __init__(self) -> None:
        self.value: float | None = None

    def assign(self, value: float) -> None:
        self.value = float(value)


class _Optimizer:
    def __init__(self) -> None:
        self.learning_rate = _Rate()


class _Model:
    """What the schedule callback touches at an epoch's start: the optimizer's rate."""

    def __init__(self) -> None:
        self.optimizer = _Optimizer()
        self.stop_training = False


def _rate_at_epoch_start(
    tmp_path: Path, cfg: TrainConfig, epoch: int, prior_elapsed: float
) -> float:
    (callback,) = _make_callbacks(
        cfg,
        tmp_path,
        [],
        steps=10,
        initial_epoch=epoch,
        prior_elapsed=prior_elapsed,
        best_so_far=-1.0,
        stop_flag={"stop": False},
    )
    model = _Model()
    callback.set_model(model)
    callback.on_epoch_begin(epoch)
    assert model.optimizer.learning_rate.value is not None
    return model.optimizer.learning_rate.value


def test_with_a_time_budget_the_cosine_follows_the_time_spent_not_the_epochs(
    tmp_path: Path,
) -> None:
    timed = config(warmup_epochs=2, epochs=100000, time_budget_s=100.0)
    # half the budget spent (as a resumed run's elapsed time says), epoch 3 of 100000
    half = _rate_at_epoch_start(tmp_path, timed, epoch=3, prior_elapsed=50.0)
    assert half == pytest.approx(LR * (0.01 + 0.99 * 0.5), rel=1e-2)
    # the budget spent: the floor
    over = _rate_at_epoch_start(tmp_path, timed, epoch=3, prior_elapsed=150.0)
    assert over == pytest.approx(LR * 0.01)
    # still in the warm-up: the ramp, whatever the time
    assert _rate_at_epoch_start(tmp_path, timed, epoch=1, prior_elapsed=50.0) == pytest.approx(
        2 * LR / 3
    )
    # without a budget, the epochs: epoch 50 of 100 is half way
    by_epoch = config(warmup_epochs=2, epochs=100)
    assert _rate_at_epoch_start(tmp_path, by_epoch, epoch=50, prior_elapsed=0.0) == pytest.approx(
        LR * (0.01 + 0.99 * 0.5)
    )
    assert _rate_at_epoch_start(tmp_path, by_epoch, epoch=3, prior_elapsed=80.0) > 0.99 * LR
