"""Recording, listing, loading and deleting interview sessions (docs/CONTRACTS.md format).

A session is a folder ``<sessions_dir>/<session_id>/`` with ``frames.csv`` (one row per face per
frame; probabilities and boxes only, never images) and ``meta.json``. The recorder appends rows
and fsyncs them at least every ``flush_interval_s`` and writes ``meta.json`` atomically, so a
session whose process died is still loadable (and reported incomplete).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import math
import os
import re
import secrets
import shutil
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd

from emotion_core import __version__
from emotion_core.classes import CLASSES
from emotion_core.fileio import JsonFileError, atomic_write_json, load_json_object
from emotion_core.registry import PROJECT_ROOT, ModelCard, card_hash
from emotion_core.results import FrameResult

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SESSIONS_DIR: Path = Path(os.environ.get("EMOTION_SESSIONS_DIR", PROJECT_ROOT / "sessions"))
FORMAT_VERSION = 1
FRAMES_FILE = "frames.csv"
META_FILE = "meta.json"
PARTIAL_META_FILE = "meta.partial.json"
COLUMNS: tuple[str, ...] = ("t_s", "frame", "face_id", "x", "y", "w", "h", *CLASSES, "label")
INT_COLUMNS: tuple[str, ...] = ("frame", "face_id", "x", "y", "w", "h")
# Columns an older/hand-made file may lack; they are filled with defaults on load.
OPTIONAL_COLUMNS: tuple[str, ...] = ("frame", "face_id", "x", "y", "w", "h", "label")
PROB_SUM_TOLERANCE = 0.02
# A few invalid rows (a corrupted line, a NaN) are left out with a note, as long as they are at
# most this share of a file's rows (at least one); more and the file is refused.
MAX_SKIPPED_PERCENT = 1
# Times must span less than this (a week): t_s are seconds from the session's start, and a
# stray value (a Unix time, a typo) would otherwise make a timeline of millions of steps.
MAX_SPAN_S = 7 * 24 * 3600.0
# Whole-number columns beyond this are typos or overflow, not frames, ids or pixels.
MAX_WHOLE = 2**53
MAX_CANDIDATE_LEN = 200
BYTES_PER_MB = 1024 * 1024  # an "MB" as Streamlit's upload limits count it (maxUploadSize)
MAX_NOTES_LEN = 10_000
_SLUG_MAX = 40


class SessionError(Exception):
    """A session could not be written or read; the message names the file and the problem."""


# NOTE: recordings run on webrtc worker threads while any page may delete a session; this set
# (folders of this process's open recordings, under its lock) lets delete_session refuse one.
_RECORDING: set[Path] = set()
_RECORDING_LOCK = threading.Lock()


def _mark_recording(folder: Path, recording: bool) -> None:
    with _RECORDING_LOCK:
        (_RECORDING.add if recording else _RECORDING.discard)(folder.resolve())


def is_recording(folder: Path) -> bool:
    """Whether this process is still writing the session in folder."""
    with _RECORDING_LOCK:
        return folder.resolve() in _RECORDING


def sessions_dir_default() -> Path:
    """The sessions folder: $EMOTION_SESSIONS_DIR (read now) or PROJECT_ROOT/sessions."""
    env = os.environ.get("EMOTION_SESSIONS_DIR")
    return Path(env) if env else SESSIONS_DIR


# ---------------------------------------------------------------------------------------------
# Names and ids


def clean_candidate(name: str) -> str:
    """A candidate name fit for meta.json: NFC unicode kept, control characters removed,
    whitespace collapsed, at most MAX_CANDIDATE_LEN characters."""
    name = unicodedata.normalize("NFC", str(name))
    name = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in name)
    return " ".join(name.split())[:MAX_CANDIDATE_LEN]


def slugify(name: str) -> str:
    """An ASCII slug of a candidate name for folder names ('unnamed' when nothing is left).

    Accents are folded (``José`` -> ``jose``); separators, dots and anything else become '-',
    so the slug can never traverse paths.
    """
    folded = unicodedata.normalize("NFKD", clean_candidate(name))
    ascii_only = folded.encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_only).strip("-")[:_SLUG_MAX].strip("-")
    return slug or "unnamed"


def _now_iso() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def _create_session_dir(sessions_dir: Path, slug: str) -> tuple[str, Path]:
    """mkdir a fresh, never-before-used session folder (exclusive create, retried)."""
    try:
        sessions_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SessionError(f"{sessions_dir}: cannot create the sessions folder ({exc})") from exc
    for _ in range(20):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        session_id = f"{stamp}-{slug}-{secrets.token_hex(3)}"
        path = sessions_dir / session_id
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as exc:
            raise SessionError(f"{path}: cannot create the session folder ({exc})") from exc
        return session_id, path
    raise SessionError(f"{sessions_dir}: could not find an unused session id")


# ---------------------------------------------------------------------------------------------
# Recording


def _fmt_prob(p: float) -> str:
    return f"{float(p):.6f}"


class _SessionFile:
    """The open frames.csv and meta.json of one recording: buffer, flush, close (thread-safe).

    Kept apart from SessionRecorder so that a finalizer can close it when the recorder is
    dropped without close() (the browser tab closed, the server stopped) without keeping the
    recorder alive. The counts in ``meta`` are of rows on disk; ``pending_*`` of buffered ones.
    """

    def __init__(self, path: Path, meta: dict[str, Any], flush_interval_s: float) -> None:
        self.frames_path = path / FRAMES_FILE
        self.meta_path = path / META_FILE
        self.meta = meta
        self.flush_interval_s = flush_interval_s
        # NOTE: rows arrive on the webrtc worker thread while the page thread may flush or
        # close; every method that touches the file or the counts holds this lock.
        self.lock = threading.Lock()
        self.buffer: list[str] = []
        self.pending_frames = 0
        self.pending_faces = 0
        self.last_flush = time.monotonic()
        self.closed = False
        self.error: str | None = None
        self._fh: IO[str] | None = None
        _mark_recording(path, True)  # before its first file: from then on it is not deletable
        try:
            atomic_write_json(self.meta_path, self.meta)
            # NOTE: kept open for the recording's lifetime; close() closes it.
            self._fh = open(self.frames_path, "a", encoding="utf-8", newline="")  # noqa: SIM115
            self._fh.write(",".join(COLUMNS) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            _mark_recording(path, False)
            self._discard(path)
            raise SessionError(f"{path}: cannot start the session ({exc})") from exc

    def _discard(self, path: Path) -> None:
        """Undo a start that failed: close the file and remove the new, empty folder."""
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
        shutil.rmtree(path, ignore_errors=True)

    def add(self, rows: list[str], faces: int) -> None:
        """Buffer one frame's rows; flush when flush_interval_s has passed."""
        with self.lock:
            if self.error is not None:
                raise SessionError(self.error)
            if self.closed:
                raise SessionError(f"{self.meta_path.parent}: the recording is already stopped")
            self.buffer.extend(rows)
            self.pending_frames += 1
            self.pending_faces += faces
            if time.monotonic() - self.last_flush >= self.flush_interval_s:
                self._flush_locked()

    def counts(self) -> tuple[int, int]:
        """(frames, face rows) recorded: on disk, plus buffered unless a write failed."""
        with self.lock:
            frames, faces = int(self.meta["frames"]), int(self.meta["faces"])
            if self.error is None:
                frames, faces = frames + self.pending_frames, faces + self.pending_faces
            return frames, faces

    def flush(self, only_if_due: bool = False) -> None:
        """Append buffered rows to frames.csv and fsync them (only_if_due: if the interval
        has passed)."""
        with self.lock:
            if self.closed or self.error is not None or not self.buffer:
                return
            if only_if_due and time.monotonic() - self.last_flush < self.flush_interval_s:
                return
            self._flush_locked()

    def _flush_locked(self) -> None:
        self.last_flush = time.monotonic()
        if not self.buffer or self._fh is None:
            return
        data = "\n".join(self.buffer) + "\n"
        try:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            self.error = (
                f"{self.frames_path}: could not write session data ({exc.strerror or exc}); "
                "recording stopped, rows written before are kept"
            )
            raise SessionError(self.error) from exc
        self.buffer.clear()
        self.meta["frames"] += self.pending_frames
        self.meta["faces"] += self.pending_faces
        self.pending_frames = self.pending_faces = 0

    def close(self, complete: bool) -> None:
        """Flush, close the file and rewrite meta.json (complete, ended_at, counts of rows on
        disk) atomically. Closing twice is harmless. Raises SessionError when a write fails
        (what was written before stays on disk, marked incomplete)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._finish_locked(complete)
            finally:  # NOTE: only now may the folder be deleted: the last write is done
                _mark_recording(self.meta_path.parent, False)

    def _finish_locked(self, complete: bool) -> None:
        """close() under the lock: flush, close the file, write the final meta.json."""
        first_error = self.error
        try:
            if first_error is None:
                self._flush_locked()
        except SessionError as exc:
            first_error = str(exc)
        finally:
            try:
                if self._fh is not None:
                    self._fh.close()
            except OSError:
                pass
        if not self.frames_path.exists():
            raise SessionError(
                f"{self.frames_path}: was removed while recording; the rows recorded cannot be"
                " saved"
            )
        self.meta["ended_at"] = _now_iso()
        self.meta["complete"] = bool(complete) and first_error is None
        try:
            atomic_write_json(self.meta_path, self.meta)
        except OSError as exc:
            raise SessionError(
                f"{self.meta_path}: could not finalise the session ({exc}); the rows already"
                " written are kept and the session will be listed as incomplete"
            ) from exc
        if first_error is not None:
            raise SessionError(first_error)

    def close_if_empty(self) -> bool:
        """Close without a final meta.json if no frame was added, in one step under the lock
        (a frame arriving meanwhile is refused); False, leaving it open, if one was."""
        with self.lock:
            if self.closed or self.meta["frames"] + self.pending_frames > 0:
                return False
            self.closed = True
            try:
                if self._fh is not None:
                    self._fh.close()
            except OSError:
                pass
            finally:
                _mark_recording(self.meta_path.parent, False)
            return True

    def close_abandoned(self) -> None:
        """What the finalizer runs: keep the buffered rows, mark the session incomplete."""
        try:
            self.close(complete=False)
        except SessionError:
            pass  # NOTE: nobody is left to tell; the rows on disk stay, listed as incomplete.


class SessionRecorder:
    """Writes one session while frames arrive (thread-safe).

    Rows are buffered and appended + fsynced to frames.csv whenever ``flush_interval_s`` has
    passed (checked on each add_frame and by flush_if_due), on flush() and on close().
    Any OSError (e.g. disk full) leaves what is already on disk and raises SessionError; the
    recorder then refuses further frames. A recorder dropped without close() (its browser
    session ended, the server stopped) is closed as incomplete, its buffered rows kept.
    """

    def __init__(
        self,
        sessions_dir: Path,
        candidate: str,
        notes: str = "",
        source: str = "webcam",
        model_name: str = "",
        model_hash: str = "",
        thresholds: dict[str, Any] | None = None,
        flush_interval_s: float = 1.0,
        pipeline: dict[str, Any] | None = None,
    ) -> None:
        self.sessions_dir = Path(sessions_dir)
        self.session_id, self.path = _create_session_dir(self.sessions_dir, slugify(candidate))
        self.meta: dict[str, Any] = {
            "session_id": self.session_id,
            "candidate": clean_candidate(candidate),
            "notes": str(notes)[:MAX_NOTES_LEN],
            "started_at": _now_iso(),
            "ended_at": None,
            "source": str(source),
            "model_name": str(model_name),
            "model_hash": str(model_hash),
            "thresholds": dict(thresholds or {}),
            "pipeline": dict(pipeline or {}),
            "app_version": __version__,
            "format_version": FORMAT_VERSION,
            "complete": False,
            "frames": 0,
            "faces": 0,
        }
        self._t0: float | None = None
        self._frame0 = 0
        self._file = _SessionFile(self.path, self.meta, float(flush_interval_s))
        # NOTE: runs at garbage collection or interpreter exit, whichever comes first; close()
        # detaches it.
        self._finalizer = weakref.finalize(self, self._file.close_abandoned)

    @classmethod
    def for_model(
        cls,
        sessions_dir: Path | str,
        *,
        model: ModelCard | str,
        candidate: str,
        source: str,
        pipeline: DataclassInstance | Mapping[str, Any],
        thresholds: Mapping[str, Any] | None = None,
        notes: str = "",
    ) -> Self:
        """A recorder whose meta.json says what produced the session (the Live page and
        analyze_video set theirs up alike).

        model: the classifier's card (its name and card_hash are recorded) or, for a classifier
        without one, just its name (no hash). pipeline: the settings in force, a dataclass such
        as PipelineConfig or a dict. thresholds: the nervousness rule's to_dict(). Raises
        SessionError when the session folder cannot be created.
        """
        if isinstance(model, str):
            model_name, model_hash = model, ""
        else:
            model_name, model_hash = str(model.name), card_hash(model)
        if isinstance(pipeline, Mapping):
            settings = dict(pipeline)
        elif is_dataclass(pipeline) and not isinstance(pipeline, type):
            settings = asdict(pipeline)
        else:
            raise TypeError(f"pipeline must be a dataclass or a mapping, not {pipeline!r}")
        return cls(
            Path(sessions_dir),
            candidate,
            notes=notes,
            source=source,
            model_name=model_name,
            model_hash=model_hash,
            thresholds=None if thresholds is None else dict(thresholds),
            pipeline=settings,
        )

    @property
    def frames_path(self) -> Path:
        """The session's frames.csv."""
        return self._file.frames_path

    @property
    def meta_path(self) -> Path:
        """The session's meta.json."""
        return self._file.meta_path

    @property
    def flush_interval_s(self) -> float:
        """Seconds between flushes of buffered rows (the open file's setting)."""
        return self._file.flush_interval_s

    @flush_interval_s.setter
    def flush_interval_s(self, seconds: float) -> None:
        self._file.flush_interval_s = float(seconds)

    @property
    def frames(self) -> int:
        """Frames recorded so far (on disk, plus buffered unless a write failed)."""
        return self._file.counts()[0]

    @property
    def faces(self) -> int:
        """Face rows recorded so far (as frames)."""
        return self._file.counts()[1]

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._file.closed

    @property
    def error(self) -> str | None:
        """The write error that stopped this recorder, if any."""
        return self._file.error

    def _rows(self, result: FrameResult) -> list[str]:
        if self._t0 is None:
            self._t0 = float(result.t_s)
            self._frame0 = int(result.frame_index)
        t_s = f"{max(0.0, float(result.t_s) - self._t0):.3f}"
        frame = str(int(result.frame_index) - self._frame0)
        if not result.faces:
            return [",".join([t_s, frame, "-1", "0", "0", "0", "0", *([""] * len(CLASSES)), ""])]
        rows = []
        for face in result.faces:
            probs = np.asarray(face.probs, dtype=np.float64)
            if probs.shape != (len(CLASSES),):
                raise SessionError(f"{self.frames_path}: face with {probs.shape} probabilities")
            x, y, w, h = (str(int(v)) for v in face.box)
            rows.append(
                ",".join(
                    [
                        t_s,
                        frame,
                        str(int(face.face_id)),
                        x,
                        y,
                        w,
                        h,
                        *map(_fmt_prob, probs),
                        face.label,
                    ]
                )
            )
        return rows

    def add_frame(self, result: FrameResult) -> None:
        """Buffer one frame's rows (one per face, or one face_id=-1 row); flush when due."""
        # NOTE: one frame comes at a time (the webrtc worker, or the video job's loop), so
        # _t0 needs no lock; the file's own lock orders rows against flush and close.
        self._file.add(self._rows(result), len(result.faces))

    def flush_if_due(self) -> None:
        """Flush if flush_interval_s has passed since the last flush (cheap to call often)."""
        self._file.flush(only_if_due=True)

    def flush(self) -> None:
        """Append buffered rows to frames.csv and fsync them."""
        self._file.flush()

    def close(self, complete: bool = True) -> Path:
        """Flush, close the file and rewrite meta.json (complete, ended_at, counts) atomically.

        Returns the session folder. Closing twice is harmless. Raises SessionError when the
        final write fails (what was written before stays on disk, marked incomplete).
        """
        self._finalizer.detach()
        self._file.close(complete)
        return self.path

    def discard_if_empty(self) -> bool:
        """Delete the session if no frame reached it (e.g. Stop before the video started) and
        say so; False, changing nothing, if one did."""
        if not self._file.close_if_empty():
            return False
        self._finalizer.detach()
        shutil.rmtree(self.path, ignore_errors=True)
        return True

    def discard(self) -> None:
        """Close and delete a recording that never got a frame (e.g. it could not be attached);
        one that has frames is closed as incomplete instead, never deleted."""
        if not self.discard_if_empty():
            self.close(complete=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(complete=exc_type is None)


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class SessionInfo:
    """One line of the sessions list (error is set for a broken session instead of raising)."""

    session_id: str
    path: Path
    candidate: str = ""
    started_at: str = ""
    duration_s: float = 0.0
    frames: int = 0
    faces: int = 0
    source: str = ""
    model_name: str = ""
    complete: bool = False
    error: str | None = None


def session_table(infos: Sequence[SessionInfo]) -> pd.DataFrame:
    """The sessions list as a table: one row per session, broken ones with their problem."""
    columns = ["candidate", "date", "duration (s)", "source", "model", "complete",
               "session id", "problem"]  # fmt: skip
    rows = [
        [i.candidate, (i.started_at or "")[:19].replace("T", " "), round(i.duration_s, 1),
         i.source, i.model_name, i.complete, i.session_id, i.error or ""]
        for i in infos
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Labels made unique for charts and sentences: repeats get ' #2', ' #3', ..."""
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        n = seen.get(label, 0)
        seen[label] = n + 1
        unique.append(label if n == 0 else f"{label} #{n + 1}")
    return unique


@dataclass(frozen=True, eq=False)
class Session:
    """A loaded session: its summary, its full meta dict, its frames DataFrame and notes on
    what was left out while loading it (a cut-off last line, a few invalid rows), each naming
    the file, for the reader to see; the files themselves are never changed."""

    info: SessionInfo
    meta: dict[str, Any] = field(default_factory=dict)
    frames: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: tuple[str, ...] = ()


def _meta_defaults(session_id: str) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "candidate": "",
        "notes": "",
        "started_at": "",
        "ended_at": None,
        "source": "",
        "model_name": "",
        "model_hash": "",
        "thresholds": {},
        "pipeline": {},
        "app_version": "",
        "format_version": FORMAT_VERSION,
        "complete": False,
        "frames": 0,
        "faces": 0,
    }


def _read_meta(folder: Path) -> dict[str, Any]:
    """meta.json (or meta.partial.json) merged over defaults; SessionError when unusable."""
    path, data = _load_meta_file(folder)
    meta = _meta_defaults(folder.name)
    meta.update(data)
    try:
        version = int(meta["format_version"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise SessionError(
            f"{path}: format_version {meta['format_version']!r} is not a number"
        ) from exc
    if version > FORMAT_VERSION:
        raise SessionError(
            f"{path}: format_version {version} is newer than this app understands "
            f"({FORMAT_VERSION}); update the app"
        )
    if path.name == PARTIAL_META_FILE or not meta.get("ended_at"):
        meta["complete"] = False
    meta["complete"] = meta["complete"] is True  # "false" (a string) is not complete either
    return meta


def _load_meta_file(folder: Path) -> tuple[Path, dict[str, Any]]:
    """(the file read, its JSON object): meta.json, else meta.partial.json when there is no
    meta.json; SessionError naming the file when neither exists or it is unusable."""
    for name in (META_FILE, PARTIAL_META_FILE):
        path = folder / name
        try:
            return path, load_json_object(path)
        except JsonFileError as err:
            if err.reason == "missing":
                continue
            if err.reason == "not_object":
                raise SessionError(f"{path}: must be a JSON object") from err
            raise SessionError(f"{path}: unreadable or not valid JSON ({err.detail})") from err
    raise SessionError(f"{folder / META_FILE}: missing (not a session folder?)")


def _bad(name: str, msg: str) -> SessionError:
    return SessionError(f"{name}: {msg}")


def _check_frames_are_unique(
    name: str, lines: list[int], out: pd.DataFrame, is_face: np.ndarray
) -> None:
    """One time per frame number, and one row per face per frame: a counter that restarts
    (two recordings pasted together) or a repeated row would be merged or counted twice."""
    first_t = out.groupby("frame")["t_s"].transform("first").to_numpy()
    moved = np.flatnonzero(first_t != out["t_s"].to_numpy())
    if len(moved):
        i = int(moved[0])
        raise _bad(
            name,
            f"line {lines[i]}: frame {int(out['frame'].iloc[i])} appears again at another time "
            f"({out['t_s'].iloc[i]:g} s); each frame number must have one time",
        )
    repeated = np.flatnonzero(is_face & out.duplicated(["frame", "face_id"]).to_numpy())
    if len(repeated):
        i = int(repeated[0])
        raise _bad(
            name,
            f"line {lines[i]}: face {int(out['face_id'].iloc[i])} of frame "
            f"{int(out['frame'].iloc[i])} appears twice",
        )


def _line_list(lines: Sequence[int], limit: int = 5) -> str:
    """'line 6', 'lines 6, 9 and 40' or 'lines 6, 9, 40, 41, 42 and 7 more'."""
    if len(lines) == 1:
        return f"line {lines[0]}"
    shown = ", ".join(str(n) for n in lines[:limit])
    rest = len(lines) - limit
    if rest > 0:
        return f"lines {shown} and {rest} more"
    head, _, last = shown.rpartition(", ")
    return f"lines {head} and {last}"


def _read_records(text: str, name: str) -> tuple[list[list[str]], list[int]]:
    """The CSV's records (blank lines left out) and the line number each one ends on."""
    records: list[list[str]] = []
    line_numbers: list[int] = []
    reader = csv.reader(io.StringIO(text))
    try:
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            records.append(record)
            line_numbers.append(reader.line_num)
    except csv.Error as exc:
        raise _bad(name, f"not a valid CSV (line {reader.line_num}: {exc})") from exc
    return records, line_numbers


def _parse_frames(
    text: str, name: str, drop_partial_last_line: bool
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Validate and type frames.csv text: (the DataFrame in COLUMNS order, notes on rows
    skipped). Never changes the file.

    A last line cut off mid-write (no line end) is skipped with a note when it has fewer fields
    than the header, or always when drop_partial_last_line (an incomplete session); a last line
    without a line end that has all its fields is an ordinary row. Invalid rows (wrong number of
    fields, a value that is not a finite number, probabilities out of range or not summing to 1,
    ...) are skipped with a note while they are at most MAX_SKIPPED_PERCENT % of the rows (so
    none under 100 rows); more, or every row, raise SessionError with the first problem. A bad
    header, a repeated face or a frame number with two times always
    raise.
    """
    notes: list[str] = []
    tail = text[max(text.rfind("\n"), text.rfind("\r")) + 1 :]
    cut_off = bool(tail.strip())  # the file ends mid-line
    if drop_partial_last_line and cut_off and len(tail) == len(text):
        text = ""  # only part of the header was written
    if not text.strip():
        raise _bad(name, "the file is empty (no header, no rows)")
    records, line_numbers = _read_records(text, name)
    if not records:
        raise _bad(name, "the file is empty (no header, no rows)")
    cols = [c.strip() for c in records[0]]
    if len(set(cols)) != len(cols):
        dupes = sorted({c for c in cols if cols.count(c) > 1})
        raise _bad(name, f"duplicate columns: {', '.join(dupes)}")
    required = [c for c in COLUMNS if c not in OPTIONAL_COLUMNS]
    missing = [c for c in required if c not in cols]
    if missing:
        raise _bad(
            name, f"missing required columns: {', '.join(missing)} (expected {','.join(COLUMNS)})"
        )
    extra = [c for c in cols if c not in COLUMNS]
    if extra:
        raise _bad(name, f"unexpected columns: {', '.join(extra)} (expected {','.join(COLUMNS)})")
    width = len(cols)
    data = records[1:]
    lines = np.asarray(line_numbers[1:], dtype=np.int64)
    n = len(data)

    # Each invalid row is flagged once, with its first problem (kept for the first few of each
    # check: the earliest invalid row's is always among them).
    bad = np.zeros(n, dtype=bool)
    problems: dict[int, str] = {}

    def flag(mask: np.ndarray, describe: Callable[[int], str]) -> None:
        new = np.flatnonzero(mask & ~bad)
        for i in new[:5]:
            problems[int(i)] = describe(int(i))
        bad[new] = True

    sizes = np.array([len(r) for r in data], dtype=np.int64)
    flag(
        sizes != width,
        lambda i: f"not a valid CSV: line {lines[i]} has {sizes[i]} fields, the header has {width}",
    )
    raw = pd.DataFrame(
        [r if len(r) == width else (r + [""] * width)[:width] for r in data],
        columns=cols,
        dtype=object,
    )

    def numeric(col: str, allow_empty: bool) -> np.ndarray:
        """The column as floats, NaN where empty or invalid (those rows flagged)."""
        s = raw[col].astype(str).str.strip()
        empty = (s == "").to_numpy(dtype=bool)
        parsed = pd.to_numeric(s.where(~empty, None), errors="coerce")
        values = np.array(parsed.to_numpy(dtype=np.float64, na_value=np.nan), np.float64)
        flag(
            np.isnan(values) & ~empty,
            lambda i: f"line {lines[i]}, column {col!r}: {s.iloc[i]!r} is not a number",
        )
        flag(
            np.isinf(values),
            lambda i: f"line {lines[i]}, column {col!r}: {s.iloc[i]!r} is not finite",
        )
        if not allow_empty:
            flag(empty, lambda i: f"line {lines[i]}, column {col!r}: empty value")
        values[np.isinf(values)] = np.nan
        return values

    t_s = numeric("t_s", allow_empty=False)
    probs = np.column_stack([numeric(c, allow_empty=True) for c in CLASSES]).reshape(
        n, len(CLASSES)
    )
    has_probs = ~np.isnan(probs).any(axis=1)
    partial = ~has_probs & ~np.isnan(probs).all(axis=1)
    if "face_id" in cols:
        face_id = numeric("face_id", allow_empty=False)
    else:  # older single-face format: a row with probabilities is face 0
        face_id = np.where(has_probs, 0.0, -1.0)
    whole: dict[str, np.ndarray] = {}
    for col in INT_COLUMNS:
        if col == "face_id":
            values = face_id
        elif col in cols:
            values = numeric(col, allow_empty=False)
        elif col == "frame":
            values = pd.factorize(t_s)[0].astype(np.float64)
        else:
            values = np.zeros(n)
        known = ~np.isnan(values)
        huge = known & (np.abs(np.where(known, values, 0.0)) > MAX_WHOLE)

        def too_large(i: int, c: str = col, v: np.ndarray = values) -> str:
            return f"line {lines[i]}, column {c!r}: {v[i]:g} is too large"

        def not_whole(i: int, c: str = col, v: np.ndarray = values) -> str:
            return f"line {lines[i]}, column {c!r}: {float(v[i])!r} is not a whole number"

        flag(huge, too_large)
        flag(known & ~huge & (values != np.round(values)), not_whole)
        whole[col] = values
    flag(face_id < -1, lambda i: f"line {lines[i]}: face_id must be -1 (no face) or >= 0")
    is_face = face_id >= 0
    flag(
        is_face & (~has_probs | partial),
        lambda i: f"line {lines[i]}: a face row (face_id >= 0) needs all 7 probabilities",
    )
    out_of_range = is_face & ((probs < -1e-6) | (probs > 1 + 1e-6)).any(axis=1)
    flag(out_of_range, lambda i: f"line {lines[i]}: probabilities must lie in [0, 1]")
    sums = probs.sum(axis=1)
    flag(
        is_face & has_probs & (np.abs(sums - 1.0) > PROB_SUM_TOLERANCE),
        lambda i: (
            f"line {lines[i]}: probabilities sum to {sums[i]:.4f}, not 1 "
            f"(tolerance {PROB_SUM_TOLERANCE})"
        ),
    )
    labels = (
        raw["label"].astype(str).str.strip().to_numpy(dtype=object)
        if "label" in cols
        else np.full(n, "", dtype=object)
    )
    flag(
        is_face & (labels != "") & ~np.isin(labels, CLASSES),
        lambda i: (
            f"line {lines[i]}, column 'label': {labels[i]!r} is not one of {', '.join(CLASSES)}"
        ),
    )

    keep = np.ones(n, dtype=bool)
    if cut_off and n and (drop_partial_last_line or (bad[-1] and sizes[-1] < width)):
        keep[-1] = False
        bad[-1] = False
        notes.append(
            f"line {lines[-1]} is cut off (the file ends in the middle of it, as when a "
            "recording is interrupted); that row is skipped"
        )
    rows = int(keep.sum())
    invalid = np.flatnonzero(bad)
    if len(invalid):
        allowed = rows * MAX_SKIPPED_PERCENT // 100
        first = problems[int(invalid[0])]
        if len(invalid) > allowed or len(invalid) == rows:
            more = (
                f" ({len(invalid)} of the {rows} rows are invalid; at most {allowed} may be "
                f"skipped, {MAX_SKIPPED_PERCENT}%)"
                if rows > 1
                else ""
            )
            raise _bad(name, first + more)
        notes.append(
            f"1 invalid row of {rows} skipped ({first})"
            if len(invalid) == 1
            else f"{len(invalid)} invalid rows of {rows} skipped "
            f"({_line_list(lines[invalid].tolist())}; the first: {first})"
        )
        keep &= ~bad

    lines = lines[keep]
    t_s, probs, is_face, labels = t_s[keep], probs[keep], is_face[keep], labels[keep]
    n = len(lines)
    out = pd.DataFrame(index=range(n))
    out["t_s"] = t_s
    if n:
        i, j = int(t_s.argmin()), int(t_s.argmax())
        if t_s[j] - t_s[i] >= MAX_SPAN_S:
            raise _bad(
                name,
                f"column 't_s' spans {t_s[j] - t_s[i]:g} s (line {lines[i]} to line "
                f"{lines[j]}), more than a week: times must be seconds from the session's start",
            )
    for col in INT_COLUMNS:
        out[col] = whole[col][keep].astype(np.int64)
    _check_frames_are_unique(name, lines.tolist(), out, is_face)
    probs[~is_face] = np.nan
    for k, cls in enumerate(CLASSES):
        out[cls] = probs[:, k]
    top = np.argmax(np.where(is_face[:, None], probs, 0.0), axis=1) if n else np.zeros(0, int)
    argmax = np.array([CLASSES[int(k)] for k in top], dtype=object)
    labels = np.where(is_face & (labels == ""), argmax, labels)
    out["label"] = np.where(is_face, labels, "").astype(object)
    return out[list(COLUMNS)], tuple(f"{name}: {note}" for note in notes)


def _summarise(frames: pd.DataFrame) -> tuple[float, int, int]:
    """duration_s (last t_s - first t_s), distinct frames, face rows."""
    if frames.empty:
        return 0.0, 0, 0
    t = frames["t_s"].to_numpy()
    duration = float(t.max() - t.min())
    return duration, int(frames["frame"].nunique()), int((frames["face_id"] >= 0).sum())


def _count(value: Any) -> int:
    """A count from meta.json; 0 for anything that is not a whole number (the CSV decides)."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def _info_from(meta: dict[str, Any], folder: Path, frames: pd.DataFrame | None) -> SessionInfo:
    if frames is not None:
        duration, n_frames, n_faces = _summarise(frames)
    else:
        duration = 0.0
        n_frames, n_faces = _count(meta.get("frames")), _count(meta.get("faces"))
    return SessionInfo(
        # NOTE: the folder name, not meta's session_id: a copied folder keeps the original's
        # meta, and loading and deleting go by folder.
        session_id=folder.name,
        path=folder,
        candidate=str(meta.get("candidate") or ""),
        started_at=str(meta.get("started_at") or ""),
        duration_s=duration if math.isfinite(duration) else 0.0,
        frames=n_frames,
        faces=n_faces,
        source=str(meta.get("source") or ""),
        model_name=str(meta.get("model_name") or ""),
        complete=bool(meta.get("complete")),
    )


def _resolve_session(path_or_id: str | Path, sessions_dir: Path | None) -> Path:
    """A Path (or a str with a separator) is a folder; a plain str is an id in sessions_dir."""
    text = str(path_or_id)
    if isinstance(path_or_id, Path) or "/" in text or os.sep in text:
        folder = Path(path_or_id)
        if not folder.is_dir():
            raise SessionError(f"{folder}: no such session folder")
        return folder
    return _safe_child(sessions_dir or sessions_dir_default(), text)


def _safe_child(sessions_dir: Path, session_id: str) -> Path:
    """sessions_dir/session_id resolved, refusing anything that could leave sessions_dir.

    Any folder name list_sessions lists is accepted (spaces, accents, dots included: the name
    of a direct child cannot climb out); '', '.', '..' and names with a path separator or a NUL
    are refused, and so is a name whose resolved path is not a direct child of sessions_dir.
    """
    separators = {"/", "\0", os.sep, os.altsep or "/"}
    if session_id in ("", ".", "..") or any(c in separators for c in session_id):
        raise SessionError(f"{session_id!r}: not a valid session id")
    root = Path(sessions_dir).resolve()
    target = (root / session_id).resolve()
    if target.parent != root:
        raise SessionError(f"{session_id!r}: refers outside {root}")
    return target


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise SessionError(f"{path}: missing") from exc
    except UnicodeDecodeError as exc:
        raise SessionError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise SessionError(f"{path}: unreadable ({exc})") from exc


def load_session(path_or_id: str | Path, sessions_dir: Path | None = None) -> Session:
    """Load and validate a recorded session by folder path or id (raises SessionError)."""
    folder = _resolve_session(path_or_id, sessions_dir)
    meta = _read_meta(folder)
    frames_path = folder / FRAMES_FILE
    frames, notes = _parse_frames(
        _read_text(frames_path), str(frames_path), drop_partial_last_line=not meta["complete"]
    )
    return Session(info=_info_from(meta, folder, frames), meta=meta, frames=frames, warnings=notes)


def load_session_csv(file_like_or_path: str | Path | IO[bytes] | IO[str], name: str) -> Session:
    """Load an uploaded/external frames CSV (same columns as frames.csv) as a Session.

    name is shown in messages and used as the session id / source.
    """
    try:
        if isinstance(file_like_or_path, (str, Path)):
            data: bytes | str = Path(file_like_or_path).read_bytes()
        else:
            data = file_like_or_path.read()
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise SessionError(f"{name}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise SessionError(f"{name}: unreadable ({exc})") from exc
    frames, notes = _parse_frames(text, name, drop_partial_last_line=False)
    if frames.empty:
        why = f" ({'; '.join(notes)})" if notes else ""
        raise SessionError(f"{name}: the file has a header but no rows{why}")
    meta = _meta_defaults(name)
    meta.update({"source": name, "candidate": Path(name).stem, "complete": True})
    folder = Path(name)
    return Session(info=_info_from(meta, folder, frames), meta=meta, frames=frames, warnings=notes)


def load_session_upload(name: str, data: bytes, max_bytes: int) -> Session:
    """An uploaded frames CSV as a Session (see load_session_csv); SessionError naming the file
    when it is over `max_bytes`, with both sizes in MB as Streamlit counts them (BYTES_PER_MB)."""
    if len(data) > max_bytes:
        raise SessionError(
            f"{name}: file is {len(data) / BYTES_PER_MB:.2f} MB ({len(data):,} bytes), over the "
            f"{max_bytes / BYTES_PER_MB:.2f} MB ({max_bytes:,} bytes) upload limit"
        )
    return load_session_csv(io.BytesIO(data), name)


@functools.lru_cache(maxsize=512)
def _summary_cached(
    frames_path: Path, mtime_ns: int, size: int, drop_partial: bool
) -> tuple[float, int, int]:
    """Validate frames.csv and summarise it; cached on (path, mtime, size) for fast listing."""
    text = _read_text(frames_path)
    frames, _notes = _parse_frames(text, str(frames_path), drop_partial_last_line=drop_partial)
    return _summarise(frames)


def list_sessions(sessions_dir: Path | None = None) -> list[SessionInfo]:
    """Every session folder, newest first; a broken one is listed with its error.

    Each frames.csv is fully validated (results cached on path, mtime and size). A sessions
    folder that does not exist yet has no sessions; one that is not a folder (a file) or
    cannot be read raises SessionError naming it.
    """
    root = Path(sessions_dir or sessions_dir_default())
    if not root.exists() and not root.is_symlink():
        return []  # nothing recorded yet: the first recording creates it
    if not root.is_dir():
        raise SessionError(
            f"{root}: the sessions folder is not a folder (it is a file or a broken link); "
            "point EMOTION_SESSIONS_DIR at a folder"
        )
    try:
        folders = sorted(root.iterdir())
    except OSError as exc:
        raise SessionError(f"{root}: cannot read the sessions folder ({exc})") from exc
    infos: list[SessionInfo] = []
    for folder in folders:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            meta = _read_meta(folder)
            frames_path = folder / FRAMES_FILE
            if not frames_path.exists():
                raise SessionError(f"{frames_path}: missing")
            st = frames_path.stat()
            duration, n_frames, n_faces = _summary_cached(
                frames_path, st.st_mtime_ns, st.st_size, not meta["complete"]
            )
            info = replace(
                _info_from(meta, folder, None), duration_s=duration, frames=n_frames, faces=n_faces
            )
        except (SessionError, OSError) as exc:
            info = SessionInfo(session_id=folder.name, path=folder, error=str(exc))
        infos.append(info)
    infos.sort(key=lambda i: (i.started_at or "", i.session_id), reverse=True)
    return infos


def delete_session(session_id: str, sessions_dir: Path | None = None) -> None:
    """Delete one session folder; refuses ids that leave sessions_dir or non-session folders."""
    root = Path(sessions_dir or sessions_dir_default())
    target = _safe_child(root, session_id)
    raw = root / session_id
    if raw.is_symlink():
        raise SessionError(f"{raw}: is a symbolic link, not deleting")
    if not target.is_dir():
        raise SessionError(f"{target}: no such session")
    if not any((target / f).exists() for f in (META_FILE, PARTIAL_META_FILE, FRAMES_FILE)):
        raise SessionError(f"{target}: does not look like a session folder, not deleting")
    if is_recording(target):
        raise SessionError(f"{session_id}: is being recorded now; stop the recording first")
    try:
        shutil.rmtree(target)
    except OSError as exc:
        raise SessionError(f"{target}: could not delete ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# Collecting sessions for analysis


@dataclass(frozen=True)
class LoadedSession:
    """A session ready for analysis: a cache key (it changes when the session's files or the
    upload's bytes do), a display name unique among those collected, the session itself."""

    key: str
    name: str
    session: Session


def file_stamp(folder: Path) -> tuple[float, float]:
    """Modification times of a session folder's frames.csv and meta.json (0.0 if unreadable)."""
    out = []
    for name in (FRAMES_FILE, META_FILE):
        try:
            out.append((folder / name).stat().st_mtime)
        except OSError:
            out.append(0.0)
    return out[0], out[1]


def collect(
    infos: Sequence[SessionInfo],
    uploads: Sequence[tuple[str, bytes]],
    load: Callable[[Path], Session],
    max_bytes: int,
) -> tuple[list[LoadedSession], list[str]]:
    """The chosen recorded sessions, then the uploaded frames CSVs, as LoadedSessions, and an
    error message for each one that could not be used (in the same order).

    infos: list entries of recorded sessions; load(folder) loads one (a caller may cache it on
    file_stamp(folder)); uploads: (file name, bytes), each over `max_bytes` refused. An empty
    recording is refused; names (candidate or session id, "<file> (upload)") are made unique.
    """
    loaded: list[LoadedSession] = []
    errors: list[str] = []
    for info in infos:
        try:
            session = load(info.path)
        except SessionError as exc:
            errors.append(f"Cannot load session {info.session_id}: {exc}")
            continue
        if session.frames.empty:
            errors.append(
                f"{info.path / FRAMES_FILE}: the session has no frames (empty recording)."
            )
            continue
        key = f"dir:{info.path}:{file_stamp(info.path)}"
        loaded.append(LoadedSession(key, info.candidate or info.session_id, session))
    for name, data in uploads:
        try:
            session = load_session_upload(name, data, max_bytes)
        except SessionError as exc:
            errors.append(f"Upload rejected - {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()[:12]
        loaded.append(LoadedSession(f"upload:{name}:{digest}", f"{name} (upload)", session))
    names = unique_labels([item.name for item in loaded])  # they label charts and sentences
    return [replace(item, name=name) for item, name in zip(loaded, names)], errors
