"""Speed benchmarks of the live pipeline and of a model.

Usage::

    python -m emotion_core.bench VIDEO [--json OUT] [--model NAME] [--max-frames N]
    python -m emotion_core.bench model [--model NAME]
    python -m emotion_core.bench models [--rounds R] [--update-cards]

The video benchmark decodes every frame first (not timed), loads the model (timed apart), warms
up, then times detection + classification + tracking + smoothing + annotation per frame and
ends with ``fps=F p50_ms=X p95_ms=Y frames=N faces=M``. The model benchmark ends with
``model=NAME runtime=R p50_ms_per_face=X p95_ms=Y batch8_ms=Z`` (R: the card's runtime, e.g.
tflite; ``--keras`` times the Keras call instead). ``models`` times every registered model
in interleaved rounds on this machine, so their figures compare fairly (a card's own figure
comes from whichever machine published it, and these VMs drift by tens of percent between
hours); ``--update-cards`` writes the results into the cards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emotion_core.cli import (
    command_parser,
    non_negative_int,
    positive_int,
    prepare_output_file,
    quiet_native_logs,
)
from emotion_core.detect import DetectorError
from emotion_core.inference import Classifier, EmotionClassifier
from emotion_core.pipeline import EmotionPipeline, PipelineConfig
from emotion_core.registry import ModelError
from emotion_core.runtime import call_times_ms, median_ms_per_face, speed_note
from emotion_core.video import DecodedFrame, VideoError, read_frames


@dataclass(frozen=True)
class PipelineBench:
    """Per-frame timings of the full pipeline over a clip (milliseconds).

    cpu_ms_per_frame: process CPU time (all threads) per frame; unlike wall times it hardly
    changes when other programs compete for the cores.
    """

    frames: int
    faces: int
    fps: float
    p50_ms: float
    p95_ms: float
    mean_ms: float
    max_ms: float
    cpu_ms_per_frame: float


@dataclass(frozen=True)
class ModelBench:
    """CPU time of the classifier's compiled call: one face (p50, p95) and a batch of 8."""

    name: str
    p50_ms_per_face: float
    p95_ms: float
    batch8_ms: float


@dataclass(frozen=True)
class ModelSpeed:
    """One model's single-face time over interleaved rounds (milliseconds): the median of the
    rounds' medians, their lowest and highest, and the card's figure before (None: none)."""

    name: str
    runtime: str
    p50_ms: float
    low_ms: float
    high_ms: float
    card_ms: float | None


def bench_pipeline(
    frames: Sequence[DecodedFrame],
    classifier: Classifier,
    config: PipelineConfig | None = None,
    warmup: int = 10,
) -> PipelineBench:
    """Time process + annotate on every frame (after `warmup` untimed frames and a reset)."""
    if not frames:
        raise ValueError("no frames to benchmark")
    pipeline = EmotionPipeline.from_config(classifier, config)
    for i in range(warmup):
        frame = frames[i % len(frames)]
        pipeline.annotate(frame.frame_bgr, pipeline.process(frame.frame_bgr, frame.t_s, i))
    pipeline.reset()
    times = np.empty(len(frames))
    faces = 0
    cpu_start = time.process_time()
    for i, frame in enumerate(frames):
        start = time.perf_counter()
        result = pipeline.process(frame.frame_bgr, frame.t_s, frame.frame_index)
        pipeline.annotate(frame.frame_bgr, result)
        times[i] = time.perf_counter() - start
        faces += len(result.faces)
    cpu_s = time.process_time() - cpu_start
    ms = times * 1000.0
    return PipelineBench(
        frames=len(frames),
        faces=faces,
        fps=len(frames) / float(times.sum()),
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        mean_ms=float(ms.mean()),
        max_ms=float(ms.max()),
        cpu_ms_per_frame=cpu_s * 1000.0 / len(frames),
    )


def bench_model(classifier: Classifier, repeats: int = 200, size: int = 48) -> ModelBench:
    """Median/p95 ms of classifier.predict on one face and median ms on a batch of 8."""
    rng = np.random.default_rng(0)
    one = rng.random((1, size, size, 1), dtype=np.float32)
    eight = rng.random((8, size, size, 1), dtype=np.float32)
    for _ in range(20):
        classifier.predict(one)
        classifier.predict(eight)

    single = call_times_ms(classifier.predict, one, repeats)
    batch = call_times_ms(classifier.predict, eight, max(20, repeats // 4))
    return ModelBench(
        name=str(getattr(classifier, "name", type(classifier).__name__)),
        p50_ms_per_face=float(np.percentile(single, 50)),
        p95_ms=float(np.percentile(single, 95)),
        batch8_ms=float(np.percentile(batch, 50)),
    )


def bench_models(
    classifiers: Sequence[EmotionClassifier],
    rounds: int = 5,
    repeats: int = 200,
    progress: Callable[[str], None] | None = None,
) -> list[ModelSpeed]:
    """Time one face through each classifier.predict, `repeats` calls a round; each round
    visits the models in a rotated order, so a slow spell of the machine does not fall on one
    model. Returns the models in the order given."""
    if rounds < 1 or repeats < 1:
        raise ValueError("--rounds and --repeats must be >= 1")
    medians: list[list[float]] = [[] for _ in classifiers]
    for r in range(rounds):
        for k in range(len(classifiers)):
            i = (k + r) % len(classifiers)
            c = classifiers[i]
            medians[i].append(median_ms_per_face(c.predict, c.card.input_size, repeats))
        if progress is not None:
            progress(f"round {r + 1}/{rounds} done")
    return [
        ModelSpeed(
            name=c.name,
            runtime=c.runtime,
            p50_ms=float(np.median(m)),
            low_ms=min(m),
            high_ms=max(m),
            card_ms=c.card.cpu_ms_per_face,
        )
        for c, m in zip(classifiers, medians, strict=True)
    ]


class ModelSpeeds(list[ModelSpeed]):
    """The timed models (a list of ModelSpeed), and in .skipped each registered model that
    could not be loaded to be timed: its name -> why (a card it disagrees with, a broken file)."""

    def __init__(self, speeds: Sequence[ModelSpeed] = (), skipped: dict[str, str] | None = None):
        super().__init__(speeds)
        self.skipped: dict[str, str] = dict(skipped or {})


def retime_registered(
    models_dir: Path,
    rounds: int = 5,
    repeats: int = 200,
    update_cards: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[ModelSpeeds, str]:
    """Time every model registered in models_dir together (bench_models, on each card's
    runtime) -> (results, a note of when, where and how). A model that does not load (its
    network disagrees with its card, a broken file) is skipped: named in results.skipped with
    the reason, and as "skipped NAME: reason" to progress; the others are timed. update_cards
    writes each timed median and the note into its card. Raises ModelError when there is no
    model or none loads, or, before timing anything, when update_cards is asked and a model
    would not run on its card's runtime."""
    from emotion_core.inference import load_classifier
    from emotion_core.registry import list_models, update_card

    cards = list_models(models_dir)
    if not cards:
        raise ModelError(f"{models_dir}: no registered models")
    classifiers, skipped = [], {}
    for card in cards:
        try:
            classifiers.append(load_classifier(card.name, models_dir))
        except ModelError as exc:
            skipped[card.name] = str(exc)
            if progress is not None:
                progress(f"skipped {card.name}: {exc}")
    if not classifiers:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise ModelError(f"no registered model could be timed ({why})")
    # NOTE: a card's figure is for its own runtime; a Keras fallback (a broken .tflite file, or
    # EMOTION_RUNTIME=keras) is timed and shown, but never written into the card.
    elsewhere = [c for c in classifiers if c.runtime != c.card.runtime]
    if elsewhere and update_cards:
        why = "; ".join(
            f"{c.name}: {c.runtime_problem or 'EMOTION_RUNTIME=keras'}" for c in elsewhere
        )
        raise ModelError(
            f"not writing timings into cards: some models would run on Keras instead of their "
            f"card's runtime ({why})"
        )
    results = ModelSpeeds(bench_models(classifiers, rounds, repeats, progress), skipped)
    note = speed_note(f"`bench models`, {rounds} interleaved rounds of {repeats} single-face calls")
    if update_cards:
        for res in results:
            update_card(
                res.name,
                {"cpu_ms_per_face": round(res.p50_ms, 2), "cpu_ms_measured": note},
                models_dir,
            )
    return results, note


def load_model(
    name: str | None, model_file: Path | None, keras_only: bool = False
) -> EmotionClassifier:
    """The registered model `name` (default model when None) on its card's runtime (or on the
    Keras call), or any .keras file."""
    from emotion_core.inference import load_classifier, load_classifier_from_file

    if model_file is not None:
        return load_classifier_from_file(model_file)
    return load_classifier(name, keras_only=keras_only)


MODES = ("model", "models")


def _parser(mode: str) -> argparse.ArgumentParser:
    descriptions = {
        "video": "Benchmark the full live pipeline on a video file.",
        "model": "Benchmark the model's compiled call.",
        "models": "Time every registered model together on this machine (fair comparison).",
    }
    others = (
        "Other modes: `python -m emotion_core.bench model --help` (one model's call) and "
        "`python -m emotion_core.bench models --help` (all registered models together)."
    )
    # NOTE: flags spelled out, as in every other command (see cli.command_parser)
    parser = command_parser(
        "emotion_core.bench" + ("" if mode == "video" else f" {mode}"), descriptions[mode]
    )
    parser.epilog = others if mode == "video" else None
    if mode == "models":
        # (counts below 1 are refused by bench_models, with the message the CLI prints)
        parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
        parser.add_argument("--repeats", type=int, default=200, help="faces a round per model")
        parser.add_argument(
            "--update-cards",
            action="store_true",
            help="write each median into its model card (cpu_ms_per_face, cpu_ms_measured)",
        )
        return parser
    if mode == "video":
        parser.add_argument("video", type=Path, help="video file (e.g. a 640x480 clip)")
        parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
        parser.add_argument("--max-frames", type=positive_int, help="use only the first N frames")
        parser.add_argument(
            "--warmup", type=non_negative_int, default=10, help="untimed warm-up frames"
        )
        parser.add_argument(
            "--detect-width",
            type=non_negative_int,
            default=PipelineConfig.detect_width,
            help="shrink frames to this width for face detection (0: full size; default "
            f"{PipelineConfig.detect_width})",
        )
    parser.add_argument("--model", help="registered model name (default: the registry default)")
    parser.add_argument("--model-file", type=Path, help="benchmark this .keras file instead")
    parser.add_argument(
        "--keras", action="store_true", help="run the Keras call even where a TFLite file ships"
    )
    return parser


def _run_models(args: argparse.Namespace) -> int:
    from emotion_core.inference import MODELS_DIR

    results, note = retime_registered(
        MODELS_DIR,
        args.rounds,
        args.repeats,
        update_cards=args.update_cards,
        progress=lambda line: print(line, file=sys.stderr),
    )
    for res in sorted(results, key=lambda r: r.p50_ms):
        card = "-" if res.card_ms is None else f"{res.card_ms:.2f}"
        print(
            f"model={res.name} runtime={res.runtime} p50_ms_per_face={res.p50_ms:.2f} "
            f"rounds={res.low_ms:.2f}-{res.high_ms:.2f} card={card}"
        )
    print(f"measured: {note}")
    if args.update_cards:
        print(f"updated {len(results)} card(s) in {MODELS_DIR}")
    if results.skipped:  # each named on stderr as it was skipped, above
        print(f"skipped {len(results.skipped)} model(s): {', '.join(results.skipped)}")
    return 0


def _run_model(args: argparse.Namespace) -> int:
    classifier = load_model(args.model, args.model_file, args.keras)
    res = bench_model(classifier)
    print(
        f"model={res.name} runtime={classifier.runtime} p50_ms_per_face={res.p50_ms_per_face:.2f} "
        f"p95_ms={res.p95_ms:.2f} batch8_ms={res.batch8_ms:.2f}"
    )
    return 0


def _run_video(args: argparse.Namespace) -> int:
    if args.json is not None:
        prepare_output_file(args.json)  # before the work, not after it
    start = time.perf_counter()
    info, frames = read_frames(args.video, max_frames=args.max_frames)
    decode_s = time.perf_counter() - start
    print(
        f"decoded {len(frames)} frames {info.width}x{info.height} in {decode_s:.2f} s",
        file=sys.stderr,
    )
    start = time.perf_counter()
    classifier = load_model(args.model, args.model_file, args.keras)
    model_load_s = time.perf_counter() - start
    print(f"model_load_s={model_load_s:.2f}")
    config = PipelineConfig(detect_width=args.detect_width)
    res = bench_pipeline(frames, classifier, config, warmup=args.warmup)
    print(f"cpu_ms_per_frame={res.cpu_ms_per_frame:.2f} mean_ms={res.mean_ms:.2f}", file=sys.stderr)
    if args.json is not None:
        report = {
            "video": str(args.video),
            "width": info.width,
            "height": info.height,
            **asdict(res),
            "model": classifier.name,
            "runtime": classifier.runtime,
            "model_load_s": model_load_s,
            "decode_s": decode_s,
            "config": asdict(config),
            "cpu_count": os.cpu_count(),
            "machine": platform.platform(),
            "python": platform.python_version(),
        }
    print(
        f"fps={res.fps:.1f} p50_ms={res.p50_ms:.2f} p95_ms={res.p95_ms:.2f} "
        f"frames={res.frames} faces={res.faces}",
        flush=True,
    )
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:  # the figures are printed above
            raise OSError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 with `error: ...` on bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_native_logs()
    mode = argv[0] if argv and argv[0] in MODES and not Path(argv[0]).is_file() else "video"
    args = _parser(mode).parse_args(argv if mode == "video" else argv[1:])
    runs = {"video": _run_video, "model": _run_model, "models": _run_models}
    try:
        return runs[mode](args)
    except (ModelError, VideoError, DetectorError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
