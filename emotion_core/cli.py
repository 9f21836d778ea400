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
    as written (its usage examples keep their line breaks)."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
