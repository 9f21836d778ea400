"""What every `python -m emotion_core.<module>` command does before it loads TensorFlow."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path


def quiet_native_logs() -> None:
    """Hide TensorFlow's and FFmpeg's native start-up chatter (CPU feature notes, absl
    warnings): our own messages name what went wrong. Explicit settings in the environment
    win. TFLite's one "Created XNNPACK delegate" line has no switch and stays."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def command_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of `python -m <module>`, whose help is the module's docstring
    as written (its usage examples keep their line breaks). Flags must be spelled out: an
    abbreviation (`--epoch` for `--epochs`) would pass argparse but not the checks that look
    for the flags given, such as which settings a `train --resume` changes."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a batch size, a count of epochs)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (where 0 means "none" or "all")."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (a learning rate, a weight decay, seconds)."""
    return _float_in(text, 0.0, math.inf, "a finite number >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a temperature)."""
    return _float_in(text, 0.0, math.inf, "a finite number > 0", low_open=True)


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1] (a mixing weight)."""
    return _float_in(text, 0.0, 1.0, "in [0, 1]")


def below_one_float(text: str) -> float:
    """argparse type: a number in [0, 1) (label smoothing)."""
    return _float_in(text, 0.0, 1.0, "in [0, 1)", high_open=True)


def _float_in(
    text: str,
    low: float,
    high: float,
    what: str,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """float(text) when finite and within [low, high] (an open end excludes that bound)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (math.isfinite(value) and above and below):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
    return value


class OutputError(OSError):
    """An output path a command cannot write (checked before its work starts)."""


def prepare_output_folder(folder: Path) -> bool:
    """Make sure files can be written in folder (created with its parents if missing), before
    minutes of work; returns whether it was created. Raises OutputError saying why not."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    existed = folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write there ({exc.strerror or exc})") from exc
    return not existed


def prepare_output_file(path: Path) -> None:
    """Check before the work that path can be written: not a folder, and its folder writable
    (created if missing). Raises OutputError saying why not."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file name")
    prepare_output_folder(path.parent)
