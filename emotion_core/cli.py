"""What every `python -m emotion_core.<module>` command does before it loads TensorFlow."""

from __future__ import annotations

import argparse
import os


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
